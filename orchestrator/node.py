"""The composition root: builds every part of the node from the settings and runs its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from executors.artifacts import ArtifactStore
from executors.local import LocalExecutor
from flows.dispatch import LocalDispatcher
from flows.remote import RemoteDispatcher
from flows.runner import WorkflowRunner, bind_runner
from flows.runtime import PrefectRuntime
from flows.schedules import ScheduleService
from network.identity import Identity
from orchestrator.auth import Authenticator, load_or_create_secret
from orchestrator.blacklist import Blacklist
from orchestrator.capabilities import CapabilityProbe
from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.discovery import Discovery
from orchestrator.engine import ExecutionEngine
from orchestrator.errors import Forbidden, OperationFailed
from orchestrator.events import EventBus
from orchestrator.executions import ExecutionRecords
from orchestrator.graph import Defaults
from orchestrator.keys import load_identity
from orchestrator.peer_messaging import PeerMessaging
from orchestrator.peer_policy import JobGate, PeerPolicy, PolicyConfig
from orchestrator.registry import ServiceRegistry
from orchestrator.relay import RelayClient, RelayServer, relay_for
from orchestrator.remote_jobs import RemoteJobs
from orchestrator.retention import Retention
from orchestrator.services.data_services import DataServices
from orchestrator.services.docker_services import DockerServices
from orchestrator.services.standalone_services import StandaloneServices
from orchestrator.services.upload_manager import UploadManager
from orchestrator.workflows import WorkflowStore

log = logging.getLogger("remote_network.node")

# An inbound WebSocket message handler: (payload, reply) -> None. Handled in order, one at a
# time per socket, unless the handler has ``runs_in_background = True`` (e.g. a search).
Reply = Callable[[dict[str, Any]], Awaitable[None]]
WsHandler = Callable[[dict[str, Any], Reply], Awaitable[None]]


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
        # What other peers may do with the services (access, command, limits): one place.
        self.policy = PeerPolicy(PolicyConfig.from_settings(settings))
        self.blacklist = Blacklist(self.db, self.bus, own_peer_id=self.identity.peer_id)
        self.workflows = WorkflowStore(self.db, self.bus, own_peer_id=self.identity.peer_id)
        self.workflows.local_service_exists = self._service_exists
        self.executions = ExecutionRecords(self.db)
        self.capabilities = CapabilityProbe(settings.data_dir, settings.docker_host)
        # Content-addressed job inputs/outputs, and the executor that runs jobs on this machine.
        self.artifacts = ArtifactStore(settings.artifacts_dir)
        self.executor = LocalExecutor(self.artifacts, settings.data_dir / "jobs",
                                      owner=self.identity.peer_id,
                                      docker_host=settings.docker_host,
                                      data_dir=settings.data_dir,
                                      sandbox=settings.job_sandbox)
        self.ws_handlers: dict[str, WsHandler] = {}
        self.standalone = StandaloneServices(settings, self.services)
        self.data_services = DataServices(settings, self.services)
        self.docker_services = DockerServices(self.services, self.bus, settings)
        self.services.on_delete.append(self.docker_services.on_service_deleted)
        self.uploads = UploadManager(settings, standalone=self.standalone,
                                     data=self.data_services)
        self.ws_handlers.update(self.uploads.handlers())
        # Peer discovery: the DHT (node.dht) and the directory of known peers (node.peers).
        self.discovery = Discovery(self)
        self.peers = self.discovery.peers
        self.dht = self.discovery.dht
        # QUIC messaging with peers (node.transport): search, capabilities, bulk artifacts.
        self.messaging = PeerMessaging(self)
        self.transport = self.messaging.transport
        # Relaying: our sessions as a relay (--relay), our relay behind NAT (--nat).
        self.relay_service = RelayServer(self) if settings.relay else None
        self.nat_relay = RelayClient(self) if settings.nat else None
        self.transport.relay_for = lambda peer_id: relay_for(self, peer_id)
        # Workflow engine: execution records, Prefect beside the node, the flow runner, schedules.
        self.prefect = PrefectRuntime(settings)
        self.engine = ExecutionEngine(
            self.db, self.bus, workflows=self.workflows, services=self.services,
            own_peer_id=self.identity.peer_id,
            defaults=Defaults(timeout=float(settings.job_timeout_seconds),
                              retry_count=settings.retry_count))
        self.workflow_runner = WorkflowRunner(
            self.engine, self.prefect, artifacts=self.artifacts, settings=settings,
            local=LocalDispatcher(self.services, self.executor, self.artifacts,
                                  scratch_dir=settings.data_dir / "jobs" / "inputs",
                                  policy=self.policy))
        bind_runner(self.workflow_runner)
        # Remote jobs: workflow nodes on other peers go out over QUIC; other peers' jobs come in.
        self.remote_dispatcher = RemoteDispatcher(self.transport, self.workflow_runner.local,
                                                  self.artifacts)
        self.workflow_runner.use_remote(self.remote_dispatcher)
        self.remote_jobs = RemoteJobs(self.transport, registry=self.services,
                                      local=self.workflow_runner.local,
                                      fetch=self.remote_dispatcher.fetch, db=self.db,
                                      is_blacklisted=self.blacklist.contains, bus=self.bus,
                                      policy=self.policy, gate=JobGate(
                                          total=settings.effective_remote_jobs_max,
                                          per_peer=settings.effective_remote_jobs_per_peer,
                                          queue=settings.remote_jobs_queue))
        self.remote_jobs.register()
        self.retention = Retention(
            self.db, self.artifacts, retention_days=settings.retention_days,
            sweep_seconds=settings.retention_sweep_seconds,
            in_use=lambda: (self.workflow_runner.inputs_in_use()
                            | self.remote_jobs.inputs_in_use()),
            forget_flow_runs=self.prefect.delete_flow_runs)
        self.schedules = ScheduleService(self.db, self.workflow_runner, self.prefect,
                                         poll_seconds=settings.schedule_poll_seconds)
        self.prefect.on_ready(self.schedules.sync)
        self.workflows.on_delete.append(self.schedules.on_workflow_deleted)
        self.engine.is_known_peer = self.peers.__contains__
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
        await self.executor.start()
        self.engine.recover_interrupted()
        if self.settings.prefect_warmup:
            self.prefect.start()
        await self.uploads.start()
        self.retention.start()
        await self.messaging.start()
        await self.discovery.start()
        if self.nat_relay is not None:
            self.nat_relay.start()
        log.info("node %s started", self.peer_id)

    async def stop(self) -> None:
        await self.retention.stop()
        await self.schedules.stop()
        await self.workflow_runner.stop()
        await self.prefect.stop()
        await self.executor.shutdown()
        if self.nat_relay is not None:
            await self.nat_relay.stop()
        await self.discovery.stop()
        await self.messaging.stop()
        await self.uploads.stop()
        self.docker_services.close()
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
            "dht_node_id": self.dht.node_id_hex,
            "relay_mode": self.settings.relay,
            "nat_mode": self.settings.nat,
            "connected_relay": self.nat_relay.connected_relay_id if self.nat_relay else "",
            "active_connections": self.transport.active_connections,
        }
        return {
            "peer_id": self.peer_id,
            "dht_node_id": self.dht.node_id_hex,
            "uptime_seconds": int(time.monotonic() - self.started_monotonic),
            "known_peers": len(self.peers),
            "stats": stats,
            **self.services.counts(),
        }

    def restart(self) -> None:
        if self._stop_event is None:
            raise OperationFailed("Failed to initiate restart: node is not running")
        loop = asyncio.get_running_loop()
        # Let the response go out before the servers stop.
        loop.call_later(0.3, lambda: self.request_stop(restart=True))

    async def fetch_peer_capabilities(self, peer_id: str) -> dict[str, Any]:
        return await self.messaging.fetch_peer_capabilities(peer_id)

    def relay_server(self) -> RelayServer:
        """The relay side (sessions of peers relayed through us); relay mode only."""
        if not self.settings.relay:
            raise Forbidden("Node is not in relay mode")
        if self.relay_service is None:
            raise OperationFailed("Relay peer not initialized")
        return self.relay_service

    def relay_client(self) -> RelayClient:
        """The NAT side (our relay candidates and connection); NAT mode only."""
        if not self.settings.nat:
            raise Forbidden("Node is not in NAT mode")
        if self.nat_relay is None:
            raise OperationFailed("Relay peer not initialized")
        return self.nat_relay
