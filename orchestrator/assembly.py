"""What both composition roots build the same way: the node (``orchestrator.node``) and a
Prefect worker's flow runs (``orchestrator.worker``)."""

from __future__ import annotations

from collections.abc import Callable

from executors.artifacts import ArtifactStore
from executors.local import LocalExecutor
from flows.dispatch import JobDispatcher, LocalDispatcher
from flows.job_step import JobStep
from flows.placement import Placement
from flows.reuse import Reuse
from network.identity import Identity
from orchestrator.config import Settings
from orchestrator.execution_store import ExecutionStore
from orchestrator.graph import Defaults, PlanNode
from orchestrator.peer_policy import PeerPolicy
from orchestrator.plan_compiler import PlanCompiler
from orchestrator.registry import ServiceRegistry
from orchestrator.workflows import WorkflowStore


def local_jobs(settings: Settings, services: ServiceRegistry, artifacts: ArtifactStore,
               policy: PeerPolicy, *, identity: Identity) -> tuple[LocalExecutor, LocalDispatcher]:
    """The executor that runs jobs on this machine, and the dispatcher of this node's jobs
    (which signs their receipts with ``identity``)."""
    executor = LocalExecutor(artifacts, settings.data_dir / "jobs", owner=identity.peer_id,
                             docker_host=settings.docker_host, data_dir=settings.data_dir,
                             sandbox=settings.job_sandbox)
    return executor, LocalDispatcher(services, executor, artifacts,
                                     scratch_dir=settings.data_dir / "jobs" / "inputs",
                                     policy=policy, signer=identity)


def plan_compiler(settings: Settings, workflows: WorkflowStore, services: ServiceRegistry, *,
                  own_peer_id: str, is_known_peer: Callable[[str], bool]) -> PlanCompiler:
    return PlanCompiler(workflows, services, own_peer_id=own_peer_id,
                        defaults=Defaults(timeout=float(settings.job_timeout_seconds),
                                          retry_count=settings.retry_count),
                        is_known_peer=is_known_peer)


def job_step(settings: Settings, store: ExecutionStore, artifacts: ArtifactStore,
             local: LocalDispatcher, *,
             dispatcher_for: Callable[[PlanNode], JobDispatcher], reuse: Reuse,
             placement: Placement | None = None) -> JobStep:
    return JobStep(store, artifacts, dispatcher_for=dispatcher_for, data_source=local,
                   inline_limit=settings.output_inline_limit, reuse=reuse,
                   placement=placement)
