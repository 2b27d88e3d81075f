"""The parts of a node that run jobs for other peers and send jobs to them, around one peer
transport: a database, the registry, the artifact store, the executor and both dispatchers.
Used where a whole node process would be too much (benches, the NAT lab's peers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from executors.artifacts import ArtifactStore
from executors.local import LocalExecutor
from flows.dispatch import LocalDispatcher
from flows.job_protocol import RemoteDispatcher, RemoteJobs
from network.transport import PeerTransport
from orchestrator.db import Database
from orchestrator.events import EventBus
from orchestrator.execution_store import ExecutionStore
from orchestrator.models import StandaloneDetails
from orchestrator.registry import ServiceRegistry
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import Interface


class JobPeer:
    """Jobs on ``transport``, wired as the node wires them: it serves its store's blobs and
    answers ``job_run``. ``dispatcher_options`` go to the ``RemoteDispatcher`` (liveness,
    ``on_state``); ``is_blacklisted`` to ``RemoteJobs``."""

    def __init__(self, transport: PeerTransport, root: Path, *,
                 dispatcher_options: dict[str, Any] | None = None,
                 is_blacklisted: Callable[[str], bool] = lambda _p: False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.transport = transport
        self.db = Database(f"sqlite:///{root / 'node.db'}")
        self.db.migrate()
        self.bus = EventBus()
        self.registry = ServiceRegistry(self.db, self.bus)
        self.store = ArtifactStore(root / "artifacts")
        self.executor = LocalExecutor(self.store, root / "jobs", owner=transport.peer_id)
        self.local = LocalDispatcher(self.registry, self.executor, self.store,
                                     scratch_dir=root / "scratch", signer=transport.identity)
        self.remote = RemoteDispatcher(transport, self.local, self.store,
                                       **(dispatcher_options or {}))
        self.records = ExecutionStore(self.db, self.bus, own_peer_id=transport.peer_id)
        self.jobs = RemoteJobs(transport, registry=self.registry, local=self.local,
                               fetch=self.remote.fetch, store=self.records,
                               is_blacklisted=is_blacklisted)
        self.jobs.register()
        transport.blob_source = lambda sha: (self.store.path(sha) if self.store.has(sha)
                                             else None)

    async def start(self) -> None:
        await self.executor.start()

    async def stop(self) -> None:
        await self.executor.shutdown(timeout=10)
        self.db.close()

    def stdin_to_stdout_service(self, name: str, executable: str) -> int:
        """A standalone service reading its input on stdin and writing its output on stdout."""
        view = self.registry.create(
            name=name, service_type=ServiceType.STANDALONE,
            interfaces=[Interface(InterfaceType.STDIN), Interface(InterfaceType.STDOUT)],
            details=StandaloneDetails(service_id=0, executable_path=executable))
        return int(view.service.id or 0)
