"""The identity exchange, two state machines wired together in memory."""

from __future__ import annotations

import pytest

from network.handshake import (
    PROOF,
    WELCOME,
    Handshake,
    HandshakeFailed,
    HandshakeUsageError,
    PeerVerified,
    State,
)
from network.identity import Identity
from network.messages import Envelope, FrameDecoder, encode

BINDING = b"connection-binding"


def pump(client: Handshake, server: Handshake) -> tuple[list[object], list[object]]:
    """Move bytes both ways until neither side has anything to send (bounded)."""
    c_events: list[object] = []
    s_events: list[object] = []
    for _ in range(10):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        if to_server:
            s_events += server.receive(to_server)
        if to_client:
            c_events += client.receive(to_client)
    return c_events, s_events


def pair(**server_kwargs: object) -> tuple[Identity, Identity, Handshake, Handshake]:
    a, b = Identity.generate(), Identity.generate()
    client = Handshake(a, is_client=True, binding=BINDING, expected_peer_id=b.peer_id)
    server = Handshake(b, is_client=False, binding=BINDING, **server_kwargs)  # type: ignore[arg-type]
    client.initiate()
    return a, b, client, server


def test_both_sides_verify_each_other() -> None:
    a, b, client, server = pair()
    c_events, s_events = pump(client, server)
    assert c_events == [PeerVerified(b.peer_id, b.public_key)]
    assert s_events == [PeerVerified(a.peer_id, a.public_key)]
    assert client.state is State.VERIFIED and server.state is State.VERIFIED


def test_server_refuses_a_blacklisted_client_and_tells_it() -> None:
    a = Identity.generate()
    b = Identity.generate()
    client = Handshake(a, is_client=True, binding=BINDING)
    server = Handshake(b, is_client=False, binding=BINDING,
                       is_blacklisted=lambda peer: peer == a.peer_id)
    client.initiate()
    c_events, s_events = pump(client, server)
    assert s_events == [HandshakeFailed("peer is blacklisted")]
    assert len(c_events) == 1 and isinstance(c_events[0], HandshakeFailed)
    assert "blacklisted" in c_events[0].reason
    assert client.state is State.FAILED and server.state is State.FAILED


def test_client_refuses_a_blacklisted_server() -> None:
    a, b = Identity.generate(), Identity.generate()
    client = Handshake(a, is_client=True, binding=BINDING, is_blacklisted={b.peer_id}.__contains__)
    server = Handshake(b, is_client=False, binding=BINDING)
    client.initiate()
    c_events, s_events = pump(client, server)
    assert c_events == [HandshakeFailed("peer is blacklisted")]
    assert isinstance(s_events[0], HandshakeFailed)


def test_a_server_that_is_not_the_dialled_peer_is_refused() -> None:
    a, b, other = Identity.generate(), Identity.generate(), Identity.generate()
    client = Handshake(a, is_client=True, binding=BINDING, expected_peer_id=other.peer_id)
    server = Handshake(b, is_client=False, binding=BINDING)
    client.initiate()
    c_events, _ = pump(client, server)
    assert isinstance(c_events[0], HandshakeFailed)
    assert f"expected peer {other.peer_id} but {b.peer_id} answered" == c_events[0].reason


def test_claiming_another_peer_id_is_refused() -> None:
    a, b, victim = Identity.generate(), Identity.generate(), Identity.generate()
    server = Handshake(b, is_client=False, binding=BINDING)
    hello = Envelope.new("hs_hello", {"public_key": a.public_key_hex, "peer_id": victim.peer_id,
                                      "nonce": "00" * 32})
    [event] = server.receive(encode(hello))
    assert isinstance(event, HandshakeFailed)
    assert "does not match its public key" in event.reason
    assert b"hs_reject" in server.data_to_send()


def test_a_key_the_peer_does_not_hold_fails_the_signature() -> None:
    """The server presents the victim's public key but can only sign with its own."""
    a, b, victim = Identity.generate(), Identity.generate(), Identity.generate()
    client = Handshake(a, is_client=True, binding=BINDING, expected_peer_id=victim.peer_id)
    client.initiate()
    FrameDecoder().feed(client.data_to_send())
    forged = Envelope.new(WELCOME, {"public_key": victim.public_key_hex,
                                    "peer_id": victim.peer_id, "nonce": "11" * 32,
                                    "signature": b.sign(b"anything").hex()})
    [event] = client.receive(encode(forged))
    assert event == HandshakeFailed(f"bad handshake signature from {victim.peer_id}")


def test_signatures_are_bound_to_the_connection() -> None:
    """A proof made for one connection binding does not verify on another."""
    a, b = Identity.generate(), Identity.generate()
    client = Handshake(a, is_client=True, binding=b"conn-1")
    server = Handshake(b, is_client=False, binding=b"conn-2")
    client.initiate()
    c_events, s_events = pump(client, server)
    assert isinstance(c_events[0], HandshakeFailed)
    assert "bad handshake signature" in c_events[0].reason
    assert isinstance(s_events[0], HandshakeFailed)


def test_replayed_proof_from_another_session_is_rejected() -> None:
    a, b, client, server = pair()
    pump(client, server)
    # A second server (fresh nonce) gets the hello and the old proof replayed.
    server2 = Handshake(b, is_client=False, binding=BINDING)
    replay = Handshake(a, is_client=True, binding=BINDING, nonce=client.nonce)
    replay.initiate()
    server2.receive(replay.data_to_send())
    server2.data_to_send()
    old_proof = Envelope.new(PROOF, {"signature": a.sign(b"old transcript").hex()})
    [event] = server2.receive(encode(old_proof))
    assert isinstance(event, HandshakeFailed) and "bad handshake signature" in event.reason


@pytest.mark.parametrize("raw", [b"\x00\x00\x00\x03abc", b"\x00\x01\x00\x00"])
def test_junk_fails_cleanly(raw: bytes) -> None:
    server = Handshake(Identity.generate(), is_client=False, binding=BINDING)
    [event] = server.receive(raw)
    assert isinstance(event, HandshakeFailed) and "malformed" in event.reason
    assert server.state is State.FAILED
    assert server.receive(b"more") == []


def test_out_of_order_message_fails() -> None:
    server = Handshake(Identity.generate(), is_client=False, binding=BINDING)
    [event] = server.receive(encode(Envelope.new(PROOF, {"signature": "00" * 64})))
    assert isinstance(event, HandshakeFailed) and "unexpected handshake message" in event.reason


def test_misuse_raises() -> None:
    server = Handshake(Identity.generate(), is_client=False, binding=BINDING)
    with pytest.raises(HandshakeUsageError):
        server.initiate()
    client = Handshake(Identity.generate(), is_client=True, binding=BINDING)
    with pytest.raises(HandshakeUsageError):
        client.receive(b"")
    with pytest.raises(HandshakeUsageError):
        Handshake(Identity.generate(), is_client=True, binding=BINDING, nonce=b"short")


def test_a_peer_over_its_connection_cap_is_refused_by_name() -> None:
    a, _b, client, server = pair(refusal=lambda peer: "peer has 4 connections, its limit is 4")
    c_events, s_events = pump(client, server)
    assert s_events == [HandshakeFailed("peer has 4 connections, its limit is 4")]
    assert len(c_events) == 1 and isinstance(c_events[0], HandshakeFailed)
    assert "its limit is 4" in c_events[0].reason
    assert server.peer_id is None and a.peer_id
