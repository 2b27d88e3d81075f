"""What a stranger can do with the NAT traversal messages: ``punch`` (which makes the node send
datagrams to an address the stranger names), ``observe_address``, and bulk splices through a
relay. Real transports on 127.0.0.1; the harm is measured (datagrams that arrive, connections
the relay's splice port sees), not only the error."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from network.bulk import BULK_OFFER
from network.hole_punch import PUNCH, PUNCH_PACKETS, PUNCH_PAYLOAD, HolePuncher
from network.nat_type import NatType
from network.peer_errors import RemoteError
from network.relay_splice import RELAY_SPLICE, RELAY_SPLICE_ACCEPT
from network.transport import PeerTransport
from tests.support.transports import relayed, transports


@pytest.fixture
def victim() -> Iterator[socket.socket]:
    """A UDP socket standing for the address a stranger wants datagrams sent to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out



def puncher_on(t: PeerTransport) -> HolePuncher:
    puncher = HolePuncher(t, own_nat=lambda: (NatType.CONE, ("127.0.0.1", t.port)),
                          peer_nat=lambda _p: NatType.UNKNOWN, cooldown=30)
    t.register(PUNCH, puncher.on_punch)
    return puncher


async def test_a_punch_sends_a_handful_of_tiny_datagrams_once_per_cooldown(
        tmp_path: Path, victim: socket.socket) -> None:
    async with transports(tmp_path) as net:
        _, nat, x, _ = await relayed(net)
        puncher = puncher_on(nat)
        target = ["127.0.0.1", victim.getsockname()[1]]
        answer = await x.request(nat.peer_id, PUNCH, {"address": target})
        assert answer == {"address": ["127.0.0.1", nat.port]}
        # Asked again at once, or by the same peer in many ways: refused, nothing more sent.
        for _ in range(5):
            with pytest.raises(RemoteError, match="too often"):
                await x.request(nat.peer_id, PUNCH, {"address": target})
        await asyncio.sleep(1.5)
        got = received(victim)
        assert 1 <= len(got) <= PUNCH_PACKETS
        assert all(d == PUNCH_PAYLOAD for d in got)  # 9 bytes each, no amplification
        await puncher.stop()


async def test_a_punch_over_a_direct_connection_or_without_an_address_is_refused(
        tmp_path: Path, victim: socket.socket) -> None:
    async with transports(tmp_path) as net:
        _, nat, x, _ = await relayed(net)
        other = await net.add(name="other")
        puncher_on(nat)
        target = ["127.0.0.1", victim.getsockname()[1]]
        net.addresses[nat.peer_id] = [("127.0.0.1", nat.port)]
        with pytest.raises(RemoteError, match="only over a relayed connection"):
            await other.request(nat.peer_id, PUNCH, {"address": target})
        for bad in (None, "127.0.0.1:9", ["127.0.0.1"], ["127.0.0.1", 0], ["x" * 500, 9],
                    ["127.0.0.1", True], {"ip": "127.0.0.1"}):
            with pytest.raises(RemoteError, match="needs an address"):
                await x.request(nat.peer_id, PUNCH, {"address": bad})
        await asyncio.sleep(0.3)
        assert received(victim) == []


async def test_a_splice_offer_over_a_direct_connection_dials_nothing(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        _relay, nat, _x, service = await relayed(net)
        blob = b"secret blob" * 1000
        digest = hashlib.sha256(blob).hexdigest()
        (tmp_path / "blob").write_bytes(blob)
        nat.blob_source = lambda sha: tmp_path / "blob" if sha == digest else None
        other = await net.add(name="other")
        net.addresses[nat.peer_id] = [("127.0.0.1", nat.port)]
        with pytest.raises(RemoteError, match="only through a relay"):
            await other.request(nat.peer_id, BULK_OFFER, {"sha256": digest, "splice": "00" * 32})
        assert service._splices is None  # the relay's splice port was never even opened


async def test_splice_tickets_are_only_for_the_ends_they_name(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        relay, nat, x, service = await relayed(net)
        stranger = await net.add(name="stranger")
        # A splice to a peer with no session here, and to nobody, is refused.
        with pytest.raises(RemoteError, match="no splice"):
            await x.request(relay.peer_id, RELAY_SPLICE, {"target": stranger.peer_id})
        with pytest.raises(RemoteError, match="no splice"):
            await x.request(relay.peer_id, RELAY_SPLICE, {"target": "x" * 10_000})
        grant = await x.request(relay.peer_id, RELAY_SPLICE, {"target": nat.peer_id})
        # Only the target may accept it: the requester or a stranger cannot get its ticket.
        for asker in (x, stranger):
            with pytest.raises(RemoteError, match="no such splice"):
                await asker.request(relay.peer_id, RELAY_SPLICE_ACCEPT,
                                    {"ticket": grant["offer_ticket"]})
        for junk in (None, "zz" * 32, "00" * 31, 5):
            with pytest.raises(RemoteError, match="no such splice"):
                await nat.request(relay.peer_id, RELAY_SPLICE_ACCEPT, {"ticket": junk})
        accepted = await nat.request(relay.peer_id, RELAY_SPLICE_ACCEPT,
                                     {"ticket": grant["offer_ticket"]})
        assert accepted["requester"] == x.peer_id
        assert accepted["ticket"] not in (grant["ticket"], grant["offer_ticket"])
        # Once only.
        with pytest.raises(RemoteError, match="no such splice"):
            await nat.request(relay.peer_id, RELAY_SPLICE_ACCEPT,
                              {"ticket": grant["offer_ticket"]})
        # A requester cannot keep more than a few splices waiting.
        for _ in range(3):
            await x.request(relay.peer_id, RELAY_SPLICE, {"target": nat.peer_id})
        with pytest.raises(RemoteError, match="per peer"):
            await x.request(relay.peer_id, RELAY_SPLICE, {"target": nat.peer_id})
        [session] = service.list()
        assert session["ingress_bytes"] == session["egress_bytes"] == 0

