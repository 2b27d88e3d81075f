"""A stranger with a fresh key attacks a real node's QUIC port and bulk channel.

Each attack is shown to do no harm: the node's memory stays bounded, and afterwards it still
answers its API and an honest peer's ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from network import quic
from network.identity import Identity
from network.transport import PeerTransport, TransportConfig
from tests.support.node_process import NodeProcess

MIB = 1024 * 1024
NO_PREFECT = {"RN_PREFECT_WARMUP": "false"}
# How much the node's resident memory may grow under one attack; the attacks offer 10x this.
GROWTH_BOUND = 100 * MIB


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("target"), env=NO_PREFECT).start()
    try:
        yield proc
    finally:
        proc.stop()


def status_ok(node: NodeProcess) -> bool:
    client = node.client()
    try:
        return client.get("/api/node/status").status_code == 200
    finally:
        client.close()


async def stranger(root: Path, name: str) -> PeerTransport:
    t = PeerTransport(Identity.generate(), TransportConfig(
        host="127.0.0.1", port=0, tls_dir=root / name, request_timeout=20,
        connect_timeout=10, handshake_timeout=10, bulk_tcp=False))
    await t.start()
    return t


async def honest_ping(root: Path, node: NodeProcess) -> float:
    t = await stranger(root, "honest")
    try:
        peer_id = await t.connect_address("127.0.0.1", node.quic_port)
        return await t.ping(peer_id, timeout=20)
    finally:
        await t.stop()


async def test_unread_streams_and_a_huge_request_stay_within_the_windows(
        node: NodeProcess, tmp_path: Path) -> None:
    """Streams of requests never finished, each offering megabytes: the node takes a bounded
    window and request budget per connection, however much is offered."""
    before = node.rss()
    attackers = [await stranger(tmp_path, f"a{i}") for i in range(4)]
    offered = 0
    try:
        conns: list[quic.PeerConnection] = []
        for t in attackers:
            peer_id = await t.connect_address("127.0.0.1", node.quic_port)
            conns.append(await t.connect(peer_id))
        streams = []
        for conn in conns:
            for _ in range(64):
                _, writer = await conn.create_stream()
                # A request frame announced at the frame limit, never completed.
                writer.write(struct.pack(">I", 4 * MIB - 1))
                streams.append((conn, writer))
        # The offer: every stream's request filled at once, ten times what the node may grow.
        body = b"x" * (4 * MIB - 4)
        for _, writer in streams:
            writer.write(body)
            offered += len(body) + 4
        assert offered >= 10 * GROWTH_BOUND
        # Let the node take what it will: until the attackers' queues stop moving.
        last = -1
        for _ in range(60):
            await asyncio.sleep(0.5)
            queued = sum(c.stream_buffered(w.get_extra_info("stream_id")) for c, w in streams)
            if queued == last:
                break
            last = queued
        growth = node.rss() - before
        assert growth < GROWTH_BOUND, f"node grew {growth / MIB:.0f} MiB"
    finally:
        for t in attackers:
            await t.stop()
    assert status_ok(node)
    assert await honest_ping(tmp_path, node) >= 0


async def test_connections_over_the_caps_are_refused_with_a_reason(
        node: NodeProcess, tmp_path: Path) -> None:
    """One key opening many connections gets four; the fifth is refused, by name."""
    identity = Identity.generate()
    ts = []
    try:
        for i in range(6):
            t = PeerTransport(identity, TransportConfig(
                host="127.0.0.1", port=0, tls_dir=tmp_path / f"c{i}", connect_timeout=10,
                handshake_timeout=10, bulk_tcp=False))
            await t.start()
            ts.append(t)
        results = []
        for t in ts:
            try:
                results.append(await t.connect_address("127.0.0.1", node.quic_port))
            except Exception as exc:  # the refusal, as a PeerError
                results.append(str(exc))
        accepted = [r for r in results if len(r) == 40]  # a peer id: verified
        refused = [r for r in results if len(r) != 40]
        assert len(accepted) == 4
        assert refused and all("limit is 4" in r for r in refused), refused
    finally:
        for t in ts:
            await t.stop()
    assert status_ok(node)
    assert await honest_ping(tmp_path, node) >= 0


async def test_a_handshake_never_finished_is_closed(node: NodeProcess, tmp_path: Path) -> None:
    """QUIC connections that complete TLS and then never send the identity exchange are closed
    by the node (its handshake timeout), and do not crowd out an honest peer."""
    t = await stranger(tmp_path, "silent")
    conns = []
    try:
        for _ in range(20):
            conns.append(await quic.dial("127.0.0.1", node.quic_port, t._client_config,
                                         owner=t, handshake_timeout=60))
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.wait_closed() for c in conns))
        assert all("identity exchange" in c.close_reason or c.close_reason for c in conns)
    finally:
        for c in conns:
            c.close()
        await t.stop()
    assert status_ok(node)
    assert await honest_ping(tmp_path, node) >= 0


def bulk_port(node: NodeProcess) -> int:
    """The node's TLS-over-TCP bulk port: its listening TCP port other than the API's."""
    proc = psutil.Process(node.pid)
    ports = {c.laddr.port for c in proc.net_connections(kind="tcp")
             if c.status == psutil.CONN_LISTEN}
    ports -= {node.api_port, node.http_port}
    assert len(ports) == 1, ports
    return ports.pop()


async def test_bulk_channel_connections_without_tls_are_bounded(
        node: NodeProcess, tmp_path: Path) -> None:
    """Hundreds of TCP connections to the bulk port that never start TLS: the node serves a
    bounded number at once, closes the rest at once, and closes the silent ones on time."""
    port = bulk_port(node)
    before = node.rss()
    threads_before = psutil.Process(node.pid).num_threads()
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
        threads = psutil.Process(node.pid).num_threads()
        assert threads - threads_before <= 40
        # Each one is closed by the node: at once when over the cap, else at the deadline.
        for s in socks:
            s.settimeout(30)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(1) == b""
        assert node.rss() - before < GROWTH_BOUND
    finally:
        for s in socks:
            s.close()
    assert status_ok(node)
    assert await honest_ping(tmp_path, node) >= 0
