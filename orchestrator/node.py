"""The composition root: builds every part of the node from the settings and runs its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from network.identity import Identity, load_or_create
from orchestrator.auth import Authenticator, load_or_create_secret
from orchestrator.blacklist import Blacklist
from orchestrator.capabilities import CapabilityProbe
from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.errors import Forbidden, OperationFailed
from orchestrator.events import EventBus
from orchestrator.executions import ExecutionRecords
from orchestrator.registry import ServiceRegistry
from orchestrator.workflows import WorkflowStore

log = logging.getLogger("remote_network.node")

# An inbound WebSocket message handler: (payload, reply) -> None.
Reply = Callable[[dict[str, Any]], Awaitable[None]]
WsHandler = Callable[[dict[str, Any], Reply], Awaitable[None]]


def load_identity(settings: Settings) -> Identity:
    """Load (or create) the node key, warning when it is stored unencrypted."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    passphrase = settings.passphrase()
    identity, created = load_or_create(settings.key_path, passphrase)
    if created:
        log.info("created identity %s at %s", identity.peer_id, settings.key_path)
    if passphrase is None:
        log.warning("identity key %s is stored unencrypted (mode 0600); set RN_KEY_PASSPHRASE "
                    "or --key-passphrase-file to encrypt it", settings.key_path)
    return identity


class Node:
    def __init__(self, settings: Settings, *, identity: Identity | None = None) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.identity = identity or load_identity(settings)
        self.bus = EventBus()
        self.db = Database(settings.effective_database_url)
        self.db.migrate()
        self.auth = Authenticator(
            self.identity,
            load_or_create_secret(settings.jwt_secret_path),
            authorized_keys_path=settings.authorized_keys_path,
            token_ttl=settings.jwt_ttl_seconds,
            challenge_ttl=settings.challenge_ttl_seconds,
        )
        self.services = ServiceRegistry(self.db, self.bus)
        self.blacklist = Blacklist(self.db, self.bus, own_peer_id=self.identity.peer_id)
        self.workflows = WorkflowStore(self.db, self.bus, own_peer_id=self.identity.peer_id)
        self.workflows.local_service_exists = self._service_exists
        self.executions = ExecutionRecords(self.db)
        self.capabilities = CapabilityProbe(settings.data_dir, settings.docker_host)
        self.ws_handlers: dict[str, WsHandler] = {}
        # The relay peer (relay or NAT mode), set up by the network layer when it runs.
        self.relay: Any = None
        self.started_monotonic = time.monotonic()
        self.restart_requested = False
        self._stop_event: asyncio.Event | None = None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def _service_exists(self, service_id: int) -> bool:
        try:
            self.services.get(service_id)
        except Exception:
            return False
        return True

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.bus.bind(asyncio.get_running_loop())
        self._stop_event = asyncio.Event()
        self.started_monotonic = time.monotonic()
        log.info("node %s started", self.peer_id)

    async def stop(self) -> None:
        self.db.close()
        log.info("node %s stopped", self.peer_id)

    def request_stop(self, *, restart: bool = False) -> None:
        self.restart_requested = self.restart_requested or restart
        if self._stop_event is not None:
            self._stop_event.set()

    async def wait_stopped(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()

    # -- node endpoints ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        stats = {
            "peer_id": self.peer_id,
            "dht_node_id": "",
            "relay_mode": self.settings.relay,
            "nat_mode": self.settings.nat,
            "connected_relay": "",
            "active_connections": 0,
        }
        return {
            "peer_id": self.peer_id,
            "dht_node_id": "",
            "uptime_seconds": int(time.monotonic() - self.started_monotonic),
            "known_peers": 0,
            "stats": stats,
            **self.services.counts(),
        }

    def restart(self) -> None:
        if self._stop_event is None:
            raise OperationFailed("Failed to initiate restart: node is not running")
        loop = asyncio.get_running_loop()
        # Let the response go out before the servers stop.
        loop.call_later(0.3, self.request_stop, restart=True)

    def relay_server(self) -> Any:
        """The relay side (sessions of peers relayed through us); relay mode only."""
        if not self.settings.relay:
            raise Forbidden("Node is not in relay mode")
        if self.relay is None:
            raise OperationFailed("Relay peer not initialized")
        return self.relay

    def relay_client(self) -> Any:
        """The NAT side (our relay candidates and connection); NAT mode only."""
        if not self.settings.nat:
            raise Forbidden("Node is not in NAT mode")
        if self.relay is None:
            raise OperationFailed("Relay peer not initialized")
        return self.relay
