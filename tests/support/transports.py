"""Peer transports in one process on 127.0.0.1, with an address book and blacklists."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from network.identity import Identity
from network.relay import RELAY_REGISTER, RelayService
from network.transport import PeerTransport, TransportConfig


class Net:
    """A tiny address book standing in for the peer directory, and a blacklist per transport."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.addresses: dict[str, list[tuple[str, int]]] = {}
        self.transports: list[PeerTransport] = []
        self.blacklists: dict[str, set[str]] = {}

    async def add(self, *, identity: Identity | None = None, name: str = "",
                  host: str = "127.0.0.1", **config: Any) -> PeerTransport:
        identity = identity or Identity.generate()
        blocked: set[str] = set()
        name = name or f"t{len(self.transports)}"
        options: dict[str, Any] = {"request_timeout": 5, "connect_timeout": 2,
                                   "handshake_timeout": 2, **config}
        cfg = TransportConfig(host=host, port=0, tls_dir=self.root / name, **options)
        t = PeerTransport(identity, cfg, resolver=lambda p: self.addresses.get(p, []),
                          is_blacklisted=blocked.__contains__)
        await t.start()
        self.blacklists[t.peer_id] = blocked
        self.addresses[t.peer_id] = [(host, t.port)]
        self.transports.append(t)
        return t

    def blacklist(self, t: PeerTransport, peer_id: str) -> None:
        self.blacklists[t.peer_id].add(peer_id)
        t.drop_blacklisted(peer_id)


async def relayed(net: Net, *, capacity: int = 10,
                  price_per_gb: float = 0.01) -> tuple[PeerTransport, PeerTransport,
                                                        PeerTransport, RelayService]:
    """A relay R, a peer N registered with it and accepting only its tunnels, and a peer X
    told to reach N through R (N has no address in the book, as for a peer behind NAT)."""
    relay = await net.add(name="relay")
    service = RelayService(relay, capacity=capacity, price_per_gb=price_per_gb)
    nat = await net.add(name="nat")
    x = await net.add(name="x")
    nat.accepts_tunnels_from = lambda peer: peer == relay.peer_id
    await nat.request(relay.peer_id, RELAY_REGISTER, {"dht_node_id": "n"})
    del net.addresses[nat.peer_id]  # nobody can dial it: only through the relay
    x.relay_for = lambda peer: relay.peer_id if peer == nat.peer_id else None
    return relay, nat, x, service


@contextlib.asynccontextmanager
async def transports(root: Path) -> AsyncIterator[Net]:
    """A Net whose transports are all stopped on the way out."""
    n = Net(root)
    try:
        yield n
    finally:
        for t in n.transports:
            await t.stop()


def serve_hanging(tls_dir: str, ready: Any, idle_timeout: float) -> None:
    """Child-process entry: a transport whose ``hang`` requests never finish (it gets killed)."""
    import asyncio

    async def main() -> None:
        t = PeerTransport(Identity.generate(), TransportConfig(
            host="127.0.0.1", port=0, tls_dir=Path(tls_dir), idle_timeout=idle_timeout))
        t.register("hang", lambda req: asyncio.Event().wait())  # type: ignore[arg-type,return-value]
        await t.start()
        ready.put((t.peer_id, t.port))
        await asyncio.Event().wait()

    asyncio.run(main())
