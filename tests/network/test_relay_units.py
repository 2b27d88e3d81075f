"""The relay's pure parts: datagram framing on a stream, and session bookkeeping."""

from __future__ import annotations

import pytest

from network.relay import RelayFull, RelaySessions
from network.relay_tunnel import MAX_DATAGRAM, DatagramDecoder, TunnelError, encode_datagram


def test_datagrams_survive_any_split_of_the_stream() -> None:
    datagrams = [b"", b"x", bytes(range(256)) * 5, b"\x00" * MAX_DATAGRAM]
    stream = b"".join(encode_datagram(d) for d in datagrams)
    for step in (1, 2, 3, 700, len(stream)):
        decoder = DatagramDecoder()
        out = []
        for i in range(0, len(stream), step):
            out += decoder.feed(stream[i:i + step])
        assert out == datagrams, step
        assert decoder.pending == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    decoder = DatagramDecoder()
    frame = encode_datagram(b"hello")
    assert decoder.feed(frame[:4]) == []
    assert decoder.pending == 4
    assert decoder.feed(frame[4:] + frame[:1]) == [b"hello"]
    assert decoder.pending == 1


def test_an_oversized_datagram_is_refused() -> None:
    with pytest.raises(TunnelError, match="over 65535"):
        encode_datagram(b"\x00" * (MAX_DATAGRAM + 1))


def test_sessions_one_per_client_until_full() -> None:
    sessions = RelaySessions(capacity=2)
    a = sessions.register("a" * 40, "node-a", now=100.0)
    again = sessions.register("a" * 40, "", now=130.0)
    assert again is a and a.last_keepalive == 130.0 and a.client_node_id == "node-a"
    b = sessions.register("b" * 40, "node-b", now=140.0)
    assert a.session_id != b.session_id and len(sessions) == 2
    with pytest.raises(RelayFull, match="2 sessions"):
        sessions.register("c" * 40, "node-c", now=150.0)
    assert sessions.get(b.session_id) is b and sessions.get("session-none") is None
    assert sessions.remove("a" * 40) is a and sessions.of_peer("a" * 40) is None
    assert sessions.register("c" * 40, "node-c", now=160.0).client_peer_id == "c" * 40


def test_session_view_counts_bytes_and_earnings() -> None:
    sessions = RelaySessions(capacity=1)
    s = sessions.register("a" * 40, "node-a", now=1000.0)
    s.ingress_bytes, s.egress_bytes = 1_000_000_000, 500_000_000
    view = s.to_api(now=1060.9, price_per_gb=0.02)
    assert view == {
        "session_id": s.session_id, "client_node_id": "node-a", "client_peer_id": "a" * 40,
        "session_type": "QUIC", "start_time": 1000, "duration_seconds": 60,
        "ingress_bytes": 1_000_000_000, "egress_bytes": 500_000_000,
        "total_bytes": 1_500_000_000, "earnings": 0.03, "last_keepalive": 1000}
