"""PeerTransport over real QUIC on 127.0.0.1: three transports in one process."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from network.identity import Identity
from network.peer_errors import (
    BulkError,
    PeerClosed,
    PeerTimeout,
    PeerUnreachable,
    RemoteError,
    RequestRejected,
)
from network.streams import IncomingRequest
from tests.support.node_process import free_udp_port
from tests.support.transports import Net, transports

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    async with transports(tmp_path) as n:
        yield n


async def echo(req: IncomingRequest) -> dict[str, Any]:
    return {"echo": req.data, "from": req.peer_id}


async def test_request_response_both_ways_on_one_connection(net: Net) -> None:
    a, b = await net.add(), await net.add()
    a.register("echo", echo)
    b.register("echo", echo)
    assert await a.request(b.peer_id, "echo", {"x": 1}) == {"echo": {"x": 1}, "from": a.peer_id}
    # b answers back over the connection a opened (b has no need to dial).
    net.addresses.pop(a.peer_id)
    assert await b.request(a.peer_id, "echo", {"y": 2}) == {"echo": {"y": 2}, "from": b.peer_id}
    assert a.active_connections == 1 and b.active_connections == 1
    assert a.connected_peers() == [b.peer_id]


async def test_connection_is_reused_and_concurrent_requests_share_it(net: Net) -> None:
    a, b = await net.add(), await net.add()
    b.register("echo", echo)
    first = await a.connect(b.peer_id)
    results = await asyncio.gather(*(a.request(b.peer_id, "echo", {"i": i}) for i in range(20)))
    assert [r["echo"]["i"] for r in results] == list(range(20))
    assert await a.connect(b.peer_id) is first
    assert a.active_connections == 1


async def test_ping_measures_a_round_trip(net: Net) -> None:
    a, b = await net.add(), await net.add()
    rtt = await a.ping(b.peer_id)
    assert 0 < rtt < 5


async def test_events_stream_before_the_response(net: Net) -> None:
    a, b = await net.add(), await net.add()

    async def job(req: IncomingRequest) -> dict[str, Any]:
        for i in range(3):
            await req.emit({"log": f"line {i}"})
        return {"exit_code": 0}

    b.register("job", job)
    seen: list[dict[str, Any]] = []
    result = await a.request(b.peer_id, "job", {}, on_event=seen.append)
    assert seen == [{"log": "line 0"}, {"log": "line 1"}, {"log": "line 2"}]
    assert result == {"exit_code": 0}


async def test_handler_errors_come_back_named(net: Net) -> None:
    a, b = await net.add(), await net.add()

    async def refuse(req: IncomingRequest) -> dict[str, Any]:
        raise RequestRejected("service 7 is not ACTIVE")

    async def crash(req: IncomingRequest) -> dict[str, Any]:
        raise RuntimeError("secret detail")

    b.register("refuse", refuse)
    b.register("crash", crash)
    with pytest.raises(RemoteError) as info:
        await a.request(b.peer_id, "refuse")
    assert str(info.value) == f"peer {b.peer_id}: service 7 is not ACTIVE"
    with pytest.raises(RemoteError, match="internal error handling 'crash'") as info:
        await a.request(b.peer_id, "crash")
    assert "secret" not in str(info.value)
    with pytest.raises(RemoteError, match="unknown message type 'nope'"):
        await a.request(b.peer_id, "nope")


async def test_timeout_against_a_peer_that_never_answers(net: Net) -> None:
    a, b = await net.add(), await net.add()
    b.register("hang", lambda req: asyncio.Event().wait())  # type: ignore[arg-type,return-value]
    with pytest.raises(PeerTimeout) as info:
        await a.request(b.peer_id, "hang", {}, timeout=0.5)
    assert str(info.value) == f"peer {b.peer_id}: no answer to 'hang' within 0.5s"
    # The connection survives a timed-out request.
    assert (await a.request(b.peer_id, "ping"))["peer_id"] == b.peer_id


async def test_unreachable_and_unknown_peers_fail_clearly(net: Net) -> None:
    a = await net.add()
    ghost = Identity.generate().peer_id
    with pytest.raises(PeerUnreachable, match=f"peer {ghost}: no known address"):
        await a.request(ghost, "ping")
    net.addresses[ghost] = [("127.0.0.1", free_udp_port())]  # nothing listens there
    with pytest.raises((PeerUnreachable, PeerTimeout)) as info:
        await a.request(ghost, "ping", timeout=3)
    assert ghost in str(info.value)


async def test_a_peer_claiming_another_peer_id_is_refused(net: Net) -> None:
    a, b, c = await net.add(), await net.add(), await net.add()
    # The directory says c lives at b's address: b answers with its own identity.
    net.addresses[c.peer_id] = [("127.0.0.1", b.port)]
    with pytest.raises(PeerUnreachable) as info:
        await a.request(c.peer_id, "ping")
    assert f"expected peer {c.peer_id} but {b.peer_id} answered" in str(info.value)
    assert a.active_connections == 0


async def test_blacklisted_peer_is_refused_at_the_handshake(net: Net) -> None:
    a, b = await net.add(), await net.add()
    net.blacklist(b, a.peer_id)
    with pytest.raises(PeerUnreachable) as info:
        await a.request(b.peer_id, "ping")
    assert "peer is blacklisted" in str(info.value)
    await asyncio.sleep(0.2)
    assert b.active_connections == 0 and a.active_connections == 0
    # And b will not dial a either.
    with pytest.raises(PeerUnreachable, match="peer is blacklisted"):
        await b.request(a.peer_id, "ping")


async def test_peer_blacklisted_later_is_dropped(net: Net) -> None:
    a, b = await net.add(), await net.add()
    assert (await a.request(b.peer_id, "ping"))["peer_id"] == b.peer_id
    assert b.active_connections == 1
    net.blacklist(b, a.peer_id)
    for _ in range(100):
        if a.active_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert a.active_connections == 0 and b.active_connections == 0
    with pytest.raises((PeerUnreachable, PeerClosed)) as info:
        await a.request(b.peer_id, "ping")
    assert "blacklisted" in str(info.value)


def _blob(root: Path, size: int) -> tuple[Path, str]:
    path = root / "blob.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("prefer_tcp", [True, False], ids=["tls-tcp", "quic-stream"])
async def test_bulk_transfer_is_hash_checked(net: Net, tmp_path: Path, prefer_tcp: bool) -> None:
    a, b = await net.add(), await net.add()
    # aioquic is slow on a busy loopback: a few MiB on the fast path, less on the fallback.
    path, sha = _blob(tmp_path, (3 * 1024 * 1024 if prefer_tcp else 512 * 1024) + 7)
    b.blob_source = lambda s: path if s == sha else None
    dest = tmp_path / "got" / sha
    assert await a.fetch_bulk(b.peer_id, sha, dest, prefer_tcp=prefer_tcp) == path.stat().st_size
    assert dest.read_bytes() == path.read_bytes()
    missing = "0" * 64
    with pytest.raises(RemoteError, match=f"blob {missing} not found"):
        await a.fetch_bulk(b.peer_id, missing, tmp_path / "x", prefer_tcp=prefer_tcp)


@pytest.mark.parametrize("prefer_tcp", [True, False], ids=["tls-tcp", "quic-stream"])
async def test_corrupted_bulk_transfer_is_rejected(net: Net, tmp_path: Path,
                                                   prefer_tcp: bool) -> None:
    a, b = await net.add(), await net.add()
    path, sha = _blob(tmp_path, 600_000)
    # b serves different bytes (same size) under the hash a asks for.
    bad = tmp_path / "bad.bin"
    raw = bytearray(path.read_bytes())
    raw[500_000] ^= 0xFF
    bad.write_bytes(bytes(raw))
    b.blob_source = lambda s: bad if s == sha else None
    dest = tmp_path / "got" / sha
    with pytest.raises(BulkError, match="hash mismatch"):
        await a.fetch_bulk(b.peer_id, sha, dest, prefer_tcp=prefer_tcp)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no partial file left behind


async def test_bulk_fast_path_works_on_a_connection_the_holder_dialled(
        net: Net, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = await net.add(), await net.add()
    await b.ping(a.peer_id)  # b dials: on a's side this connection is the server end
    path, sha = _blob(tmp_path, 300_000)
    b.blob_source = lambda s: path if s == sha else None
    dest = tmp_path / "got.bin"
    with caplog.at_level("INFO", logger="remote_network.transport"):
        assert await a.fetch_bulk(b.peer_id, sha, dest) == 300_000
    assert "falling back to QUIC" not in caplog.text
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha


async def test_bulk_without_tcp_channel_falls_back_to_quic(net: Net, tmp_path: Path) -> None:
    a, b = await net.add(), await net.add(bulk_tcp=False)
    path, sha = _blob(tmp_path, 200_000)
    b.blob_source = lambda s: path if s == sha else None
    dest = tmp_path / "got.bin"
    assert await a.fetch_bulk(b.peer_id, sha, dest) == 200_000
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha


async def test_connect_address_learns_the_peer_id(net: Net) -> None:
    a, b = await net.add(), await net.add()
    net.addresses.pop(b.peer_id)
    assert await a.connect_address("127.0.0.1", b.port) == b.peer_id
    assert (await a.request(b.peer_id, "ping"))["peer_id"] == b.peer_id


async def test_a_connection_without_identity_exchange_is_closed(net: Net, tmp_path: Path) -> None:
    from network import quic

    b = await net.add(handshake_timeout=0.5)
    a = await net.add()
    config = quic.configuration(is_client=True, cert_path=tmp_path, key_path=tmp_path,
                                idle_timeout=60)
    conn = await quic.dial("127.0.0.1", b.port, config, owner=a, handshake_timeout=5)
    try:
        async with asyncio.timeout(10):
            await conn.wait_closed()
        assert "no identity exchange within 0.5s" in conn.close_reason
        assert b.active_connections == 0
    finally:
        conn.close()


async def test_keepalive_holds_a_quiet_connection_past_the_idle_timeout(net: Net) -> None:
    a, b = await net.add(idle_timeout=0.6), await net.add(idle_timeout=0.6)
    b.register("slow", lambda req: asyncio.sleep(1.5, result={"done": True}))  # type: ignore
    first = await a.connect(b.peer_id)
    assert await a.request(b.peer_id, "slow") == {"done": True}
    assert await a.connect(b.peer_id) is first and first.is_open


async def test_a_peer_killed_mid_request_fails_it_naming_the_peer(net: Net,
                                                                    tmp_path: Path) -> None:
    import multiprocessing

    from tests.support.transports import serve_hanging

    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=serve_hanging, args=(str(tmp_path / "child"), ready, 1.0))
    proc.start()
    try:
        peer_id, port = await asyncio.to_thread(ready.get, True, 60)
        a = await net.add(idle_timeout=1.0)
        net.addresses[peer_id] = [("127.0.0.1", port)]
        pending = asyncio.ensure_future(a.request(peer_id, "hang", {}, timeout=60))
        await a.connect(peer_id)
        await asyncio.sleep(0.2)
        proc.kill()  # kill -9: no CONNECTION_CLOSE, the peer just stops answering
        with pytest.raises(PeerClosed) as info:
            await pending
        assert str(info.value).startswith(f"peer {peer_id}: 'hang' closed before an answer")
        assert a.active_connections == 0
    finally:
        proc.kill()
        proc.join(10)
