"""Peer messaging for the node: the QUIC transport and what it answers.

Builds ``network.transport.PeerTransport`` from the settings, resolves peers through the peer
directory (and, behind NAT, through the relay ``relay_for`` names), refuses blacklisted peers (and
drops them when blacklisted later), serves artifacts by hash, answers ``service_search`` (with the
services the asking peer may use) and ``capabilities``, and provides the WebSocket
``SERVICE_SEARCH`` handler (``handlers()``) and the full-capabilities fetch behind
``GET /api/peers/{id}/...``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from executors.artifacts import ArtifactStore
from network.identity import Identity
from network.limits import TransportLimits
from network.peer_capabilities import fetch_capabilities, register_capabilities
from network.peers import PeerDirectory
from network.search import (
    WS_SERVICE_SEARCH,
    Reply,
    offer_from_view,
    register_search,
    ws_search_handler,
)
from network.transport import Address, PeerTransport, TransportConfig
from orchestrator.blacklist import Blacklist
from orchestrator.capabilities import CapabilityProbe
from orchestrator.config import Settings
from orchestrator.content_identity import service_digest
from orchestrator.events import PEER_CAPABILITIES_UPDATED, EventBus
from orchestrator.peer_policy import PeerPolicy
from orchestrator.registry import ServiceRegistry

log = logging.getLogger("remote_network.messaging")



def transport_config(settings: Settings) -> TransportConfig:
    limits = TransportLimits(
        max_connections=settings.p2p_max_connections,
        max_unverified=min(64, settings.p2p_max_connections),
        max_connections_per_peer=settings.p2p_max_connections_per_peer,
        max_incoming_streams=settings.p2p_max_streams,
        bulk_max_connections=settings.bulk_max_connections)
    return TransportConfig(host=settings.p2p_host, port=settings.quic_port,
                           tls_dir=settings.tls_dir, limits=limits)


class PeerMessaging:
    def __init__(self, identity: Identity, settings: Settings, *, peers: PeerDirectory,
                 blacklist: Blacklist, services: ServiceRegistry, policy: PeerPolicy,
                 capabilities: CapabilityProbe, artifacts: ArtifactStore, bus: EventBus,
                 relay_for: Callable[[str], str | None],
                 accepts_tunnels_from: Callable[[str], bool]) -> None:
        """``relay_for(peer_id)``: the relay through which a peer behind NAT is dialled;
        ``accepts_tunnels_from(peer_id)``: whether a tunnel to us from that peer (our relay,
        behind NAT) is accepted."""
        self.peers = peers
        self.blacklist = blacklist
        self.services = services
        self.policy = policy
        self.artifacts = artifacts
        self.bus = bus
        self.transport = PeerTransport(identity, transport_config(settings),
                                       resolver=peers.quic_addresses,
                                       is_blacklisted=blacklist.contains, relay_for=relay_for,
                                       accepts_tunnels_from=accepts_tunnels_from,
                                       blob_source=self._blob_path)
        self.transport.on_connected.append(self._connected)
        blacklist.after_add(self.transport.drop_blacklisted)
        register_search(self.transport, self._offers)
        register_capabilities(self.transport, capabilities.get)

    def handlers(self) -> dict[str, Callable[[dict[str, Any], Reply], Awaitable[None]]]:
        """The WebSocket messages this part answers."""
        return {WS_SERVICE_SEARCH: ws_search_handler(self.transport, self.known_peers)}

    async def start(self) -> None:
        try:
            await self.transport.start()
        except OSError as exc:
            cfg = self.transport.config
            raise OSError(exc.errno, f"cannot listen for QUIC on {cfg.host}:{cfg.port}: "
                          f"{exc.strerror}") from exc

    async def stop(self) -> None:
        await self.transport.stop()

    # -- what the transport asks -----------------------------------------------------------
    def _connected(self, peer_id: str, address: Address | None) -> None:
        self.peers.mark_seen(peer_id, "quic", address=address)

    def _blob_path(self, sha256: str) -> Path | None:
        if not self.artifacts.has(sha256):
            return None
        return Path(self.artifacts.path(sha256))

    def _offers(self, peer_id: str) -> list[dict[str, Any]]:
        """This node's services that ``peer_id`` may use, as it sees them."""
        return [offer_from_view(view, service_digest(view)) for view in self.services.list()
                if self.policy.may_use(view.service, peer_id)]

    def known_peers(self) -> Iterable[str]:
        peers = {info.peer_id for info in self.peers.all()}
        peers.update(self.transport.connected_peers())
        return sorted(p for p in peers if not self.blacklist.contains(p))

    # -- what the API uses -----------------------------------------------------------------
    async def fetch_peer_capabilities(self, peer_id: str) -> dict[str, Any]:
        """Full capabilities of ``peer_id`` over QUIC; announces PEER_CAPABILITIES_UPDATED."""
        caps = await fetch_capabilities(self.transport, peer_id)
        self.bus.publish(PEER_CAPABILITIES_UPDATED, {"peer_id": peer_id, "capabilities": caps})
        return caps
