"""Peer messaging for the node: the QUIC transport and what it answers.

Builds ``network.transport.PeerTransport`` from the settings, resolves peers through the peer
directory, refuses blacklisted peers (and drops them when blacklisted later), serves artifacts
by hash, answers ``service_search`` (with the services the asking peer may use) and
``capabilities``, and provides the WebSocket ``SERVICE_SEARCH`` handler and the
full-capabilities fetch behind ``GET /api/peers/{id}/...``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from network.limits import TransportLimits
from network.peer_capabilities import fetch_capabilities, register_capabilities
from network.search import WS_SERVICE_SEARCH, offer_from_view, register_search, ws_search_handler
from network.transport import Address, PeerTransport, TransportConfig

if TYPE_CHECKING:
    from orchestrator.node import Node

log = logging.getLogger("remote_network.messaging")

PEER_CAPABILITIES_UPDATED = "PEER_CAPABILITIES_UPDATED"


class PeerMessaging:
    def __init__(self, node: Node) -> None:
        self.node = node
        settings = node.settings
        limits = TransportLimits(
            max_connections=settings.p2p_max_connections,
            max_unverified=min(64, settings.p2p_max_connections),
            max_connections_per_peer=settings.p2p_max_connections_per_peer,
            max_incoming_streams=settings.p2p_max_streams,
            bulk_max_connections=settings.bulk_max_connections)
        config = TransportConfig(host=settings.p2p_host, port=settings.quic_port,
                                 tls_dir=settings.tls_dir, limits=limits)
        self.transport = PeerTransport(node.identity, config, resolver=self._addresses,
                                       is_blacklisted=node.blacklist.contains)
        self.transport.blob_source = self._blob_path
        self.transport.on_connected.append(self._connected)
        node.blacklist.on_add.append(self.transport.drop_blacklisted)
        register_search(self.transport, self._offers)
        register_capabilities(self.transport, node.capabilities.get)
        node.ws_handlers[WS_SERVICE_SEARCH] = ws_search_handler(self.transport, self.known_peers)

    async def start(self) -> None:
        try:
            await self.transport.start()
        except OSError as exc:
            cfg = self.transport.config
            raise OSError(exc.errno, f"cannot listen for QUIC on {cfg.host}:{cfg.port}: "
                          f"{exc.strerror}") from exc

    async def stop(self) -> None:
        await self.transport.stop()

    # -- hooks into the rest of the node ---------------------------------------------------
    def _directory(self) -> Any:
        return getattr(self.node, "peers", None)

    def _addresses(self, peer_id: str) -> list[Address]:
        directory = self._directory()
        return directory.quic_addresses(peer_id) if directory is not None else []

    def _connected(self, peer_id: str, address: Address | None) -> None:
        directory = self._directory()
        if directory is not None:
            directory.mark_seen(peer_id, "quic", address=address)

    def _blob_path(self, sha256: str) -> Path | None:
        store = getattr(self.node, "artifacts", None)
        if store is None or not store.has(sha256):
            return None
        return Path(store.path(sha256))

    def _offers(self, peer_id: str) -> list[dict[str, Any]]:
        """This node's services that ``peer_id`` may use, as it sees them."""
        policy = self.node.policy
        return [offer_from_view(view) for view in self.node.services.list()
                if policy.may_use(view.service, peer_id)]

    def known_peers(self) -> Iterable[str]:
        directory = self._directory()
        peers = {info.peer_id for info in directory.all()} if directory is not None else set()
        peers.update(self.transport.connected_peers())
        return sorted(p for p in peers if not self.node.blacklist.contains(p))

    # -- what the API uses -----------------------------------------------------------------
    async def fetch_peer_capabilities(self, peer_id: str) -> dict[str, Any]:
        """Full capabilities of ``peer_id`` over QUIC; announces PEER_CAPABILITIES_UPDATED."""
        caps = await fetch_capabilities(self.transport, peer_id)
        self.node.bus.publish(PEER_CAPABILITIES_UPDATED, {"peer_id": peer_id,
                                                          "capabilities": caps})
        return caps
