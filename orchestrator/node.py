"""The composition root: builds every part of the node from the settings and runs its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from executors.artifacts import ArtifactStore
from flows.dispatch import JobDispatcher
from flows.executions import Executions
from flows.job_protocol import RemoteDispatcher, RemoteJobs
from flows.on_prefect import PrefectEngine, PrefectRuntime, ScheduleService
from flows.placement import Placement
from flows.preview import PlanPreview
from flows.reuse import CachedResults, Reuse
from network.dht import dht_node_id
from network.hole_punch import PUNCH, HolePuncher
from network.identity import Identity
from network.nat_type import NatObserver, NatType
from network.records import MAX_SERVICE_DIGESTS
from orchestrator.assembly import job_step, local_jobs, plan_compiler
from orchestrator.auth import Authenticator, load_or_create_secret
from orchestrator.background import cancel_and_wait
from orchestrator.blacklist import Blacklist
from orchestrator.capabilities import CapabilityProbe
from orchestrator.config import Settings
from orchestrator.content_identity import service_digest
from orchestrator.db import Database
from orchestrator.discovery import (
    Discovery,
    interface_addresses,
    local_subnet,
    nat_observers,
    peer_directory,
    peer_nat_type,
)
from orchestrator.errors import Forbidden, OperationFailed
from orchestrator.events import EventBus
from orchestrator.execution_store import ExecutionStore
from orchestrator.graph import PlanNode
from orchestrator.keys import load_identity
from orchestrator.peer_messaging import PeerMessaging
from orchestrator.peer_policy import JobGate, PeerPolicy, PolicyConfig
from orchestrator.registry import ServiceRegistry
from orchestrator.relay import ConnectedRelay, RelayClient, RelayServer, relay_for
from orchestrator.retention import Retention
from orchestrator.services.data_services import DataServices
from orchestrator.services.docker_services import DockerServices
from orchestrator.services.standalone_services import StandaloneServices
from orchestrator.services.upload_manager import UploadManager
from orchestrator.states import ServiceStatus
from orchestrator.workflows import WorkflowStore

log = logging.getLogger("remote_network.node")

# An inbound WebSocket message handler: (payload, reply) -> None. Handled in order, one at a
# time per socket, unless the handler has ``runs_in_background = True`` (e.g. a search).
Reply = Callable[[dict[str, Any]], Awaitable[None]]
WsHandler = Callable[[dict[str, Any], Reply], Awaitable[None]]


def dispatcher_for(local: JobDispatcher, remote: JobDispatcher, node: PlanNode) -> JobDispatcher:
    """``local`` for a node that runs here on inputs made here; ``remote`` for every other
    (it runs this node's own jobs locally, after fetching the inputs other peers hold)."""
    return local if node.local and not node.upstream else remote


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
        self.workflows = WorkflowStore(self.db, self.bus, own_peer_id=self.identity.peer_id,
                                       services=self.services)
        self.capabilities = CapabilityProbe(settings.data_dir, settings.docker_host)
        # Content-addressed job inputs/outputs, the executor that runs jobs on this machine and
        # the dispatcher of this node's jobs.
        self.artifacts = ArtifactStore(settings.artifacts_dir)
        self.executor, self.local_jobs = local_jobs(settings, self.services, self.artifacts,
                                                    self.policy, identity=self.identity)
        self.ws_handlers: dict[str, WsHandler] = {}
        self.standalone = StandaloneServices(settings, self.services)
        self.data_services = DataServices(settings, self.services)
        self.docker_services = DockerServices(self.services, self.bus, settings)
        self.uploads = UploadManager(settings, standalone=self.standalone,
                                     data=self.data_services)
        self.ws_handlers.update(self.uploads.handlers())
        self.ws_handlers.update(self.uploads.ui.handlers())
        # The directory of known peers, filled by discovery and by live connections.
        self.peers = peer_directory(self.identity.peer_id, settings, self.bus)
        # QUIC messaging with peers (node.transport): search, capabilities, bulk artifacts.
        # Behind NAT, the relay we are registered with (kept by nat_relay, below).
        self.our_relay = ConnectedRelay()
        self.messaging = PeerMessaging(
            self.identity, settings, peers=self.peers, blacklist=self.blacklist,
            services=self.services, policy=self.policy, capabilities=self.capabilities,
            artifacts=self.artifacts, bus=self.bus, relay_for=partial(relay_for, self.peers),
            accepts_tunnels_from=self.our_relay.accepts)
        self.transport = self.messaging.transport
        self.ws_handlers.update(self.messaging.handlers())
        # Relaying: our sessions as a relay (--relay), our relay behind NAT (--nat).
        self.relay_service = (
            RelayServer(self.transport, blacklist=self.blacklist,
                        capacity=settings.relay_max_sessions,
                        price_per_gb=settings.relay_price_per_gb)
            if settings.relay else None)
        self.nat_relay = (
            RelayClient(self.transport, settings, peers=self.peers,
                        is_blacklisted=self.blacklist.contains, bus=self.bus,
                        dht_node_id=dht_node_id(self.identity).hex(),
                        connected=self.our_relay)
            if settings.nat else None)
        # Our NAT type, from where peers see our QUIC port (published in our record).
        self.nat_observer = NatObserver(
            self.transport, partial(nat_observers, self.peers),
            local_addresses=interface_addresses,
            on_change=lambda _type, _address: self.dht.request_republish())
        # A peer reached through its relay moves to a direct path where a punch opens one.
        self.hole_puncher = HolePuncher(
            self.transport,
            own_nat=lambda: (self.nat_observer.nat_type, self.nat_observer.external_address),
            peer_nat=partial(peer_nat_type, self.peers))
        self.transport.register(PUNCH, self.hole_puncher.on_punch)
        self.transport.on_relayed.append(self.hole_puncher.relayed)
        # Peer discovery (node.dht): publishes our record, fills the directory.
        self.discovery = Discovery(
            self.identity, settings, peers=self.peers, bus=self.bus, services=self.services,
            capabilities=self.capabilities, blacklist=self.blacklist,
            fetch_capabilities=self.messaging.fetch_peer_capabilities, nat_relay=self.nat_relay,
            # The record's field is empty while unknown, as the peers list documents it.
            nat_type=lambda: ("" if self.nat_observer.nat_type is NatType.UNKNOWN
                              else self.nat_observer.nat_type.value),
            service_digests=self._public_digests)
        self.dht = self.discovery.dht
        # Jobs: the records of executions and jobs (the only writer of those rows), and other
        # peers: workflow nodes on them go out over QUIC, their jobs come in.
        self.execution_store = ExecutionStore(self.db, self.bus, own_peer_id=self.peer_id)
        self.remote_dispatcher = RemoteDispatcher(self.transport, self.local_jobs,
                                                  self.artifacts)
        self.remote_jobs = RemoteJobs(self.transport, registry=self.services,
                                      local=self.local_jobs,
                                      fetch=self.remote_dispatcher.fetch,
                                      store=self.execution_store,
                                      is_blacklisted=self.blacklist.contains,
                                      policy=self.policy, gate=JobGate(
                                          total=settings.effective_remote_jobs_max,
                                          per_peer=settings.effective_remote_jobs_per_peer,
                                          queue=settings.remote_jobs_queue))
        self.remote_jobs.register()
        # Workflows: Prefect beside the node, and the owner of executions, which runs each as a
        # flow run on it; cron schedules are Prefect deployments the node serves.
        self.prefect = PrefectRuntime(settings)
        # Results taken instead of run (a resumed execution's, cached ones) and nodes placed by
        # content digest.
        reuse = Reuse(self.execution_store, self.artifacts, own_peer_id=self.peer_id,
                      fetch=self.remote_dispatcher.fetch,
                      results=CachedResults(self.dht, self.remote_dispatcher))
        placement = Placement(self.transport, self.messaging.known_peers)
        self.executions = Executions(
            self.execution_store,
            plan_compiler(settings, self.workflows, self.services, own_peer_id=self.peer_id,
                          is_known_peer=self.peers.__contains__),
            PrefectEngine(self.prefect, job_log_lines=(
                # Only where a Prefect UI shows them: the node's own server with --prefect-ui,
                # or a server of the user's (each line costs that server about a millisecond).
                settings.prefect_job_log_lines
                if settings.prefect_ui or settings.prefect_api_url else 0)),
            job_step(settings, self.execution_store, self.artifacts, self.local_jobs,
                     dispatcher_for=partial(dispatcher_for, self.local_jobs,
                                            self.remote_dispatcher),
                     reuse=reuse, placement=placement))
        self.plan_preview = PlanPreview(
            self.executions.compiler, self.services, own_peer_id=self.peer_id,
            dispatcher_for=partial(dispatcher_for, self.local_jobs, self.remote_dispatcher),
            reuse=reuse, placement=placement, reached=self._reached)
        # Each job this node signs a receipt of gets a provider record in the DHT.
        self._providing: set[asyncio.Task[bool]] = set()
        self.local_jobs.on_sealed = self._provide
        self.retention = Retention(
            self.execution_store, self.artifacts, retention_days=settings.retention_days,
            sweep_seconds=settings.retention_sweep_seconds,
            in_use=lambda: (self.executions.inputs_in_use()
                            | self.remote_jobs.inputs_in_use()),
            forget_flow_runs=self.prefect.delete_flow_runs)
        self.schedules = ScheduleService(self.db, self.executions, self.prefect,
                                         poll_seconds=settings.schedule_poll_seconds)
        self.prefect.on_ready(self.schedules.sync)
        self.workflows.before_delete(self.schedules.on_workflow_deleted)
        self.started_monotonic = time.monotonic()
        self.restart_requested = False
        self._stop_event: asyncio.Event | None = None

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def _public_digests(self) -> tuple[str, ...]:
        """The content digests of the ACTIVE services anyone may use (the record's summary)."""
        digests = {service_digest(view) for view in self.services.list()
                   if view.service.status == ServiceStatus.ACTIVE
                   and self.policy.access(view.service) == "public"}
        return tuple(sorted(digests - {""}))[:MAX_SERVICE_DIGESTS]

    def _reached(self, peer_id: str) -> str:
        """How a peer is reached now: "direct", "relayed" or "not_connected"."""
        conn = self.transport.current_connection(peer_id)
        if conn is None:
            return "not_connected"
        return "relayed" if conn.relayed_via is not None else "direct"

    def _provide(self, job_key: str) -> None:
        if self.dht.server is None or len(self._providing) >= 64:
            # Not on the DHT (yet), or a burst of jobs: the next publish announces it.
            self.dht.remember_provided(job_key)
            return
        task = asyncio.ensure_future(self.dht.provide(job_key))
        self._providing.add(task)
        task.add_done_callback(lambda t: (self._providing.discard(t),
                                          t.cancelled() or t.exception()))

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.bus.bind(asyncio.get_running_loop())
        self._stop_event = asyncio.Event()
        self.started_monotonic = time.monotonic()
        await self.executor.start()
        self.execution_store.recover_interrupted()
        if self.settings.prefect_warmup:
            self.prefect.start()
        await self.uploads.start()
        self.retention.start()
        await self.messaging.start()
        await self.discovery.start()
        self.nat_observer.start()
        if self.nat_relay is not None:
            self.nat_relay.start()
        log.info("node %s started", self.peer_id)

    async def stop(self) -> None:
        await self.retention.stop()
        await self.schedules.stop()
        await self.executions.stop()
        await self.prefect.stop()
        await self.executor.shutdown()
        if self.nat_relay is not None:
            await self.nat_relay.stop()
        await self.nat_observer.stop()
        await self.hole_puncher.stop()
        for task in list(self._providing):
            await cancel_and_wait(task)
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
            # What the original web UI's dashboard also reads: "private" is how it knows a
            # node keeps a relay (and shows its relay section), and the relay's figures.
            "node_type": "private" if self.settings.nat else "public",
            "quic_port": self.settings.quic_port,
            # What peers on distinct addresses see of our QUIC port (network.nat_type).
            "nat_type": self.nat_observer.nat_type.value,
            "public_endpoint": self.nat_observer.public_endpoint,
            "topology": {"local_subnet": local_subnet(self.settings.p2p_host)},
            **self.transport.path_counts(),
            **self.hole_puncher.counts(),
            **(self.relay_service.totals() if self.relay_service is not None else {}),
        }
        session = self.nat_relay.current_session() if self.nat_relay is not None else None
        if session is not None:
            stats["current_relay_session"] = session
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
