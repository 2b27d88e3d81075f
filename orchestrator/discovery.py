"""Peer discovery for the node: the DHT loop, the peer directory and what we publish.

``peer_directory`` builds ``network.peers.PeerDirectory`` from the settings and turns its changes
into ``PEER_UPDATED`` events. ``Discovery`` builds ``network.dht.DhtNode``, which fills that
directory; supplies the facts this node publishes (addresses, relay/NAT mode and the relay in use,
capability summary, service counts); republishes when a service or the relay in use changes; and
answers the peers API (the capabilities summary at once, the full fetch in the background).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from network.dht import DhtConfig, DhtNode, LocalFacts, parse_address
from network.identity import Identity
from network.nat_type import NatType
from network.peers import PeerDirectory
from network.records import NatFacts, capabilities_from_summary
from orchestrator.blacklist import Blacklist
from orchestrator.capabilities import CapabilityProbe, summary
from orchestrator.config import Settings
from orchestrator.errors import InvalidInput
from orchestrator.events import PEER_UPDATED, EventBus
from orchestrator.registry import SERVICE_UPDATED, ServiceRegistry
from orchestrator.relay import RELAY_CANDIDATES, RelayClient

log = logging.getLogger("remote_network.discovery")

NO_CAPABILITIES = "No system capabilities found in peer metadata"
PEER_NOT_FOUND = "Peer not found"
WILDCARD = {"0.0.0.0", "::", ""}


def check_peer_id(raw: str) -> str:
    """A peer id is 40 hex digits; returned lowercased. InvalidInput otherwise."""
    value = raw.strip().lower()
    if len(value) != 40 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidInput("Invalid peer ID")
    return value


def peer_directory(own_peer_id: str, settings: Settings, bus: EventBus) -> PeerDirectory:
    """The directory of known peers; each arrival, change and departure is a PEER_UPDATED."""

    def changed(peer_id: str, action: str) -> None:
        bus.publish(PEER_UPDATED, {"peer_id": peer_id, "action": action,
                                   "total": len(directory)})

    directory = PeerDirectory(own_peer_id, settings.topic,
                              stale_after=settings.peer_stale_seconds,
                              max_peers=settings.peer_book_max, on_change=changed)
    return directory


def dht_config(settings: Settings) -> DhtConfig:
    bootstrap = []
    for text in settings.bootstrap:
        try:
            bootstrap.append(parse_address(text))
        except ValueError as exc:
            log.warning("ignored bootstrap peer: %s", exc)
    return DhtConfig(host=settings.p2p_host, port=settings.dht_port, topic=settings.topic,
                     bootstrap=tuple(bootstrap), rpc_timeout=settings.dht_rpc_timeout,
                     refresh_interval=settings.dht_refresh_seconds,
                     max_values=settings.dht_max_values,
                     values_per_source=settings.dht_values_per_source,
                     members_per_source=settings.dht_members_per_source)


def nat_observers(peers: PeerDirectory, limit: int = 8) -> list[str]:
    """Peers to ask where they see us from: those whose record says they are not behind NAT
    and names a direct address, relays first, the rest in random order."""
    rows = [p for p in peers.all()
            if p.record is not None and not p.record.nat.behind_nat and p.quic_addresses]
    random.shuffle(rows)
    rows.sort(key=lambda p: not (p.record is not None and p.record.is_relay))
    return [p.peer_id for p in rows[:limit]]


def peer_nat_type(peers: PeerDirectory, peer_id: str) -> NatType:
    """What a peer's record says of its NAT (unknown without a record or a known value)."""
    info = peers.get(peer_id)
    value = info.record.nat.nat_type if info is not None and info.record is not None else ""
    try:
        return NatType(value)
    except ValueError:
        return NatType.UNKNOWN


def interface_addresses(limit: int = 3) -> list[str]:
    """This machine's IPv4 addresses other than loopback and link-local."""
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name != "AF_INET":
                continue
            ip = ipaddress.ip_address(addr.address)
            if ip.is_loopback or ip.is_link_local or addr.address in found:
                continue
            found.append(addr.address)
    return found[:limit]


def local_subnet(bound_host: str = "") -> str:
    """``ip/prefix`` of this machine on its LAN: the address the QUIC port is bound to, or else
    the first IPv4 address that is neither loopback nor link-local ("" when there is none)."""
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name != "AF_INET" or not addr.netmask:
                continue
            ip = ipaddress.ip_address(addr.address)
            if ip.is_loopback or ip.is_link_local:
                continue
            if bound_host not in WILDCARD and bound_host and addr.address != bound_host:
                continue
            return str(ipaddress.ip_interface(f"{addr.address}/{addr.netmask}"))
    return ""


class Discovery:
    def __init__(self, identity: Identity, settings: Settings, *, peers: PeerDirectory,
                 bus: EventBus, services: ServiceRegistry, capabilities: CapabilityProbe,
                 blacklist: Blacklist, fetch_capabilities: Callable[[str], Awaitable[Any]],
                 nat_relay: RelayClient | None = None,
                 nat_type: Callable[[], str] = lambda: "",
                 service_digests: Callable[[], tuple[str, ...]] = tuple) -> None:
        """``fetch_capabilities(peer_id)``: a peer's full capabilities, over the transport.
        ``nat_relay``: behind NAT, the relay client; the published record names its relay.
        ``nat_type()``: what the node learned of its NAT (``network.nat_type``).
        ``service_digests()``: the content digests of the services it offers to anyone."""
        self.settings = settings
        self.peers = peers
        self.bus = bus
        self.services = services
        self.capabilities = capabilities
        self.blacklist = blacklist
        self.fetch_capabilities = fetch_capabilities
        self.nat_relay = nat_relay
        self.nat_type = nat_type
        self.service_digests = service_digests
        self.dht = DhtNode(identity, dht_config(settings), facts=self.local_facts,
                           on_record=peers.update_from_record, on_round=peers.expire)
        self._watch: asyncio.Task[None] | None = None
        self._fetches: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.dht.start()
        self._watch = asyncio.create_task(self._watch_events(), name="discovery-events")

    async def stop(self) -> None:
        for task in [self._watch, *self._fetches]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.dht.stop()

    # -- what we publish -------------------------------------------------------------------------
    def quic_hosts(self) -> list[str]:
        settings = self.settings
        if settings.public_host:
            return [settings.public_host]
        if settings.p2p_host not in WILDCARD:
            return [settings.p2p_host]
        hosts = [self.dht.observed_ip] if self.dht.observed_ip else []
        hosts += [h for h in interface_addresses() if h not in hosts]
        return hosts or ["127.0.0.1"]

    def _facts_sync(self) -> LocalFacts:
        settings = self.settings
        counts = self.services.counts()
        caps = summary(self.capabilities.get())
        relay = self.nat_relay
        return LocalFacts(
            quic_addresses=tuple((h, settings.quic_port) for h in self.quic_hosts()),
            api_port=settings.api_port,
            is_relay=settings.relay,
            nat=NatFacts(
                behind_nat=settings.nat,
                nat_type=self.nat_type(),
                using_relay=bool(relay and relay.connected_relay_id),
                connected_relay_id=relay.connected_relay_id if relay else "",
            ),
            capabilities=caps,
            files_count=counts["files_count"],
            apps_count=counts["apps_count"],
            service_digests=self.service_digests(),
        )

    async def local_facts(self) -> LocalFacts:
        return await asyncio.to_thread(self._facts_sync)

    async def _watch_events(self) -> None:
        relay = ""
        async with self.bus.subscribe() as sub:
            while True:
                event = await sub.get()
                if event.type == SERVICE_UPDATED:
                    self.dht.request_republish()
                elif (event.type == RELAY_CANDIDATES
                      and event.payload.get("connected_relay") != relay):
                    relay = event.payload.get("connected_relay") or ""
                    self.dht.request_republish()

    # -- what we show ----------------------------------------------------------------------------
    def list_peers(self) -> dict[str, Any]:
        """The topic's peers, less the blacklisted ones (``GET /api/blacklist`` lists those).
        A peer whose row cannot be shown is left out (and logged), never the whole answer."""
        blocked = self.blacklist.contains
        peers = []
        for info in self.peers.all():
            if blocked(info.peer_id):
                continue
            try:
                peers.append(info.to_api())
            except (ValueError, OverflowError, OSError, TypeError) as exc:
                log.warning("peer %s not listed: %s", info.peer_id[:16], exc)
        return {"peers": peers, "total": len(peers)}

    def peer_capabilities(self, raw_peer_id: str) -> dict[str, Any]:
        """The DHT summary at once; a full fetch over the transport starts in the background
        (the transport announces ``PEER_CAPABILITIES_UPDATED`` when it completes)."""
        peer_id = check_peer_id(raw_peer_id)
        info = self.peers.get(peer_id)
        if info is None:
            return {"peer_id": peer_id, "error": PEER_NOT_FOUND}
        if not info.capabilities:
            return {"peer_id": peer_id, "error": NO_CAPABILITIES}
        self._fetch_in_background(peer_id)
        return {"peer_id": peer_id, "capabilities": capabilities_from_summary(info.capabilities)}

    def _fetch_in_background(self, peer_id: str) -> None:
        async def run() -> None:
            try:
                await self.fetch_capabilities(peer_id)
            except Exception as exc:  # the summary stands; say why the full fetch failed
                log.info("full capabilities of peer %s not fetched: %s", peer_id[:16], exc)

        task = asyncio.get_running_loop().create_task(run())
        self._fetches.add(task)
        task.add_done_callback(self._fetches.discard)
