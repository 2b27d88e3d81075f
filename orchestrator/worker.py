"""The entry point of a Prefect worker's flow runs: ``orchestrator/worker.py:run_workflow``.

A worker on another machine (``deployments/prefect.yaml``) runs the deployment of
``run_workflow`` against a node's data directory or database (the ``RN_*`` settings). This
composition root builds only what an execution needs there: the node's database and execution
records, its workflows and services, the artifact store and the executor that runs jobs on this
machine. No QUIC transport runs in a worker: a workflow node on another peer fails, saying so.
"""

from __future__ import annotations

from executors.artifacts import ArtifactStore
from executors.base import ArtifactRef, JobResult, LogSink
from flows.dispatch import DispatchError, JobDispatcher
from flows.executions import Executions
from flows.on_prefect import PrefectEngine
from flows.on_prefect.bodies import Serving, serve_process_with
from flows.on_prefect.flow import run_workflow
from flows.reuse import Reuse
from orchestrator.assembly import job_step, local_jobs, plan_compiler
from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.events import EventBus
from orchestrator.execution_store import ExecutionStore
from orchestrator.graph import PlanNode
from orchestrator.job_request import JobRequest
from orchestrator.keys import load_identity
from orchestrator.peer_policy import PeerPolicy, PolicyConfig
from orchestrator.registry import ServiceRegistry
from orchestrator.workflows import WorkflowStore

__all__ = ["build_worker", "run_workflow"]


class _NoPeers:
    """The dispatcher of a worker's jobs that need another peer: none can run here."""

    async def dispatch(self, request: JobRequest, *, on_log: LogSink | None = None) -> JobResult:
        raise DispatchError(f"peer {request.peer_id}: a Prefect worker runs no peer transport; "
                            "run this workflow from its node")

    async def cancel(self, request: JobRequest) -> bool:
        return False

    async def data_source(self, service_id: int) -> ArtifactRef:
        raise DispatchError("a Prefect worker runs no peer transport")

    async def job_key(self, request: JobRequest) -> str:
        raise DispatchError("a Prefect worker runs no peer transport")


def build_worker(settings: Settings) -> Serving:
    """The engine and execution owner a worker's flow runs call back."""
    identity = load_identity(settings)
    db = Database(settings.effective_database_url)
    db.migrate()
    bus = EventBus()  # no loop bound: nothing listens in a worker
    services = ServiceRegistry(db, bus)
    workflows = WorkflowStore(db, bus, own_peer_id=identity.peer_id,
                              services=services)
    artifacts = ArtifactStore(settings.artifacts_dir)
    _, local = local_jobs(settings, services, artifacts,
                          PeerPolicy(PolicyConfig.from_settings(settings)), identity=identity)
    elsewhere = _NoPeers()

    def dispatcher_for(node: PlanNode) -> JobDispatcher:
        return local if node.local else elsewhere

    store = ExecutionStore(db, bus, own_peer_id=identity.peer_id)
    compiler = plan_compiler(settings, workflows, services, own_peer_id=identity.peer_id,
                             is_known_peer=lambda _peer: False)
    engine = PrefectEngine(None)
    # No transport: reused and cached results are those whose outputs are on this machine.
    reuse = Reuse(store, artifacts, own_peer_id=identity.peer_id)
    steps = job_step(settings, store, artifacts, local, dispatcher_for=dispatcher_for,
                     reuse=reuse)
    return engine, Executions(store, compiler, engine, steps)


serve_process_with(lambda: build_worker(Settings()))
