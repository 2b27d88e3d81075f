"""What the execution owner asks of the engine that runs its flows: the one seam to Prefect.

Every execution is one flow run and every job one task run; ``flows.on_prefect.PrefectEngine`` is
the implementation (Prefect's imports, its patched internals, flow-run creation, API clients, tag
limits and log shipping all live behind it). The owner (``flows.executions``) hands the engine its
``ExecutionBodies``; the engine calls them back from inside the flow run and the task runs, and
turns their outcomes into Prefect states (a cancelled job or execution ends Cancelled there too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flows.scheduling import NodeOutputs
from orchestrator.graph import PlanNode
from orchestrator.states import RunState

# (stream, line): a job's output line, where the engine shows it (its task run's logs).
LineSink = Callable[[str, str], None]


class FlowEngineError(Exception):
    """The engine could not run the flow (its API did not answer); the message says why."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at a job, as the engine runs it."""

    number: int = 1
    task_run_id: str | None = None
    log: LineSink | None = None  # also where the job's lines go, besides the node's events
    close_log: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class FlowEnd:
    """How an execution's flow body ended (a failure is raised as WorkflowFailed instead)."""

    execution_id: int
    status: RunState


class ExecutionBodies(Protocol):
    """What the engine calls back, from inside the flow run and its task runs."""

    async def flow_body(self, workflow_id: int, execution_id: int | None) -> FlowEnd: ...

    async def task_body(self, execution_id: int, node_id: int, upstream: list[NodeOutputs],
                        attempt: Attempt) -> NodeOutputs: ...

    def may_retry(self, execution_id: int) -> bool: ...


class FlowEngine(Protocol):
    api_url: str

    async def wait_ready(self) -> None:
        """Until the engine can run flows (``Unavailable`` when it cannot)."""

    async def run_flow(self, bodies: ExecutionBodies, *, workflow_id: int, execution_id: int,
                       name: str, flow_run: Any = None) -> None:
        """Run ``bodies.flow_body`` as the flow run ``name`` (or the existing ``flow_run``, a
        scheduled run); returns once it has ended. Raises what the body raised, or
        FlowEngineError."""

    async def flow_started(self, name: str) -> str | None:
        """Inside a flow body: the flow run's id (None outside one), named ``name``."""

    async def run_task(self, node: PlanNode, execution_id: int,
                       upstream: list[NodeOutputs]) -> NodeOutputs:
        """Run ``bodies.task_body`` for ``node`` as a task run with the node's retries and
        timeout; raises JobFailed, JobCancelled, or what the body raised."""

    async def stop(self) -> None: ...
