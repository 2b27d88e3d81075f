"""Hole punching between real transports on 127.0.0.1 (no NAT in the way, so every punch
works): who tries, what moves to the direct path, and what carries on on the relayed one.
Real NATs are in ``test_nat_traversal.py``."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from network.hole_punch import PUNCH, HolePuncher, may_punch
from network.nat_type import NatType
from network.transport import PeerTransport
from tests.support.transports import relayed, transports


@pytest.mark.parametrize(("own", "peer", "tries"), [
    (NatType.CONE, NatType.CONE, True), (NatType.PUBLIC, NatType.CONE, True),
    (NatType.CONE, NatType.SYMMETRIC, True), (NatType.UNKNOWN, NatType.PUBLIC, True),
    (NatType.SYMMETRIC, NatType.SYMMETRIC, False), (NatType.UNKNOWN, NatType.UNKNOWN, False),
    (NatType.SYMMETRIC, NatType.UNKNOWN, False),
])
def test_a_punch_is_tried_when_one_side_is_public_or_cone(own: NatType, peer: NatType,
                                                          tries: bool) -> None:
    assert may_punch(own, peer) is tries


def punching(t: PeerTransport, nat_type: NatType) -> HolePuncher:
    puncher = HolePuncher(t, own_nat=lambda: (nat_type, ("127.0.0.1", t.port)),
                          peer_nat=lambda _p: NatType.CONE)
    t.register(PUNCH, puncher.on_punch)
    t.on_relayed.append(puncher.relayed)
    return puncher



async def wait_direct(t: PeerTransport, peer_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            conn = t.current_connection(peer_id)
            if conn is not None and conn.relayed_via is None:
                return
            await asyncio.sleep(0.02)


async def test_a_relayed_peer_moves_to_the_direct_path(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        relay, nat, x, _ = await relayed(net)
        # X reaches N through the relay, though N's address would work: as behind a cone NAT.
        punching(nat, NatType.CONE)
        puncher = punching(x, NatType.PUBLIC)
        first = await x.connect(nat.peer_id)
        assert first.relayed_via == relay.peer_id
        await wait_direct(x, nat.peer_id)
        assert puncher.attempts == 1 and puncher.successes == 1
        assert len(puncher.upgrade_seconds) == 1
        # New requests take the direct connection, on both sides.
        assert (await x.request(nat.peer_id, "ping"))["peer_id"] == nat.peer_id
        await wait_direct(nat, x.peer_id)
        counts = x.path_counts()
        assert counts["connections_direct"] >= 2  # the relay, then N punched
        assert counts["connections_relayed_now"] == 0
        await puncher.stop()


async def test_what_started_relayed_carries_on(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        _, nat, x, _ = await relayed(net)
        blob = os.urandom(4 * 1024 * 1024)
        digest = hashlib.sha256(blob).hexdigest()
        (tmp_path / "blob").write_bytes(blob)
        nat.blob_source = lambda sha: tmp_path / "blob" if sha == digest else None
        punching(nat, NatType.CONE)
        # The punch waits until the transfer is under way on the relayed connection.
        puncher = HolePuncher(x, own_nat=lambda: (NatType.PUBLIC, ("127.0.0.1", x.port)),
                              peer_nat=lambda _p: NatType.CONE)
        first = await x.connect(nat.peer_id)
        assert first.relayed_via is not None
        fetch = asyncio.ensure_future(
            x.fetch_bulk(nat.peer_id, digest, tmp_path / "got", prefer_tcp=False, timeout=60))
        await asyncio.sleep(0.1)
        assert await puncher.upgrade(nat.peer_id) is True
        assert await fetch == len(blob)
        assert (tmp_path / "got").read_bytes() == blob
        assert first.is_open  # the relayed connection was left to finish, not cut
        assert x.current_connection(nat.peer_id) is not first


async def test_no_punch_without_an_external_address(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        _, nat, x, _ = await relayed(net)
        puncher = HolePuncher(x, own_nat=lambda: (NatType.UNKNOWN, None),
                              peer_nat=lambda _p: NatType.CONE)
        x.on_relayed.append(puncher.relayed)
        await x.connect(nat.peer_id)
        assert await puncher.upgrade(nat.peer_id) is False
        assert puncher.attempts == 0
        conn = x.current_connection(nat.peer_id)
        assert conn is not None and conn.relayed_via is not None
