"""Tunnels through a relay between real transports on 127.0.0.1.

N registers with relay R and accepts tunnels from it only. X is told to reach N through R (N
has no address in X's book, as for a peer behind NAT): requests and bulk data then go through
R, end to end encrypted, and R counts the bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from network.messages import Envelope, encode
from network.peer_errors import PeerUnreachable
from network.relay import RelayService
from network.tunnels import RELAY_INCOMING
from tests.support.transports import relayed, transports


async def test_requests_and_bulk_go_through_the_relay(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        relay, nat, x, service = await relayed(net)
        seen: list[tuple[str, object]] = []
        x.on_connected.append(lambda peer, address: seen.append((peer, address)))
        blob = bytes(range(256)) * 4096  # 1 MiB
        digest = hashlib.sha256(blob).hexdigest()
        (tmp_path / "blob").write_bytes(blob)
        nat.blob_source = lambda sha: tmp_path / "blob" if sha == digest else None

        assert (await x.request(nat.peer_id, "ping"))["peer_id"] == nat.peer_id
        conn = await x.connect(nat.peer_id)
        assert conn.relayed_via == relay.peer_id
        assert await x.fetch_bulk(nat.peer_id, digest, tmp_path / "got") == len(blob)
        assert (tmp_path / "got").read_bytes() == blob
        [session] = service.list()
        assert session["client_peer_id"] == nat.peer_id
        assert session["ingress_bytes"] > len(blob)  # the blob came from N, through R
        assert session["egress_bytes"] > 0
        # N sees X's own peer id on the tunnelled connection (identity checked end to end).
        assert x.peer_id in nat.connected_peers()
        # A tunnel has no address of the peer's: none is reported or kept.
        assert conn.peer_address is None
        assert (await nat.connect(x.peer_id)).peer_address is None
        assert (nat.peer_id, None) in seen


async def test_no_session_no_tunnel(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        relay = await net.add(name="relay")
        RelayService(relay, capacity=10, price_per_gb=0.01)
        nat = await net.add(name="nat")
        x = await net.add(name="x")
        del net.addresses[nat.peer_id]
        x.relay_for = lambda peer: relay.peer_id
        with pytest.raises(PeerUnreachable, match="has no session on this relay"):
            await x.request(nat.peer_id, "ping")


async def test_a_tunnel_from_a_peer_that_is_not_our_relay_is_refused(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        _, nat, x, _ = await relayed(net)
        other = await net.add(name="other")
        net.addresses[nat.peer_id] = [("127.0.0.1", nat.port)]
        conn = await other.connect(nat.peer_id)
        reader, writer = await conn.create_stream()
        writer.write(encode(Envelope.new(RELAY_INCOMING, {"source": x.peer_id},
                                         source_peer_id=other.peer_id)))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing served
        assert other.peer_id in nat.connected_peers()  # the plain connection is unharmed
        assert x.peer_id not in nat.connected_peers()
