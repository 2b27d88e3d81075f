"""The owner of an execution's lifecycle: start, step, finish, cancel.

``execute`` compiles the workflow (``orchestrator.plan_compiler``), records the execution with one
job per plan node (``orchestrator.execution_store``, the only writer of those rows) and starts its
flow run in the background on the ``FlowEngine`` (Prefect). From inside that flow run the engine
calls ``flow_body``: the plan's nodes are scheduled by ``flows.scheduling`` as their upstream nodes
finish, each as a task run of the engine that calls ``task_body``, which runs one attempt of the
job through ``flows.job_step``. ``cancel`` records the cancellation and stops the running jobs;
every later step sees it and ends Cancelled.
"""

from __future__ import annotations

import asyncio
import logging

from flows.flow_engine import Attempt, ExecutionBodies, FlowEnd, FlowEngine, FlowEngineError
from flows.job_step import JobStep
from flows.scheduling import (
    JobCancelled,
    JobFailed,
    NodeOutputs,
    WorkflowFailed,
    run_plan,
)
from orchestrator.errors import Conflict, Unavailable
from orchestrator.execution_store import ExecutionStore
from orchestrator.graph import Plan, PlanNode
from orchestrator.models import WorkflowExecution
from orchestrator.plan_compiler import PlanCompiler
from orchestrator.states import RunState, ServiceType

log = logging.getLogger("remote_network.flows")


def flow_run_name(plan: Plan, execution_id: int) -> str:
    """What an execution's flow run is called, whoever started it."""
    return f"{plan.workflow_name} #{execution_id}"


class Executions(ExecutionBodies):
    def __init__(self, store: ExecutionStore, compiler: PlanCompiler, engine: FlowEngine,
                 steps: JobStep) -> None:
        self.store = store
        self.compiler = compiler
        self.engine = engine
        self.steps = steps
        self._flows: dict[int, asyncio.Task[None]] = {}
        self._plans: dict[int, Plan] = {}
        self._job_ids: dict[int, dict[int, int]] = {}  # execution -> plan node -> job id

    # -- entry points --------------------------------------------------------------------------
    def execute(self, workflow_id: int, *, trigger: str = "api",
                flow_run: object | None = None) -> WorkflowExecution:
        """Compile (400 when invalid), record, and start the flow run in the background; with
        ``flow_run``, run that existing flow run (a scheduled run of a deployment)."""
        plan = self.compiler.compile(workflow_id)
        execution = self.store.create_execution(plan, trigger=trigger)
        self._start(int(execution.id or 0), plan, flow_run)
        return execution

    def _start(self, execution_id: int, plan: Plan, flow_run: object | None) -> None:
        self._plans[execution_id] = plan
        self._flows[execution_id] = asyncio.create_task(
            self._run(execution_id, plan, flow_run), name=f"execution-{execution_id}")

    def resume(self, execution_id: int) -> WorkflowExecution:
        """A new execution of the plan of ``execution_id`` (ended: 409 while it runs) that
        takes each job of it that completed with a receipt whose outputs are still held, and
        runs the rest (``flows.reuse``)."""
        old = self.store.execution(execution_id)
        if not RunState(old.status).is_terminal:
            raise Conflict(f"Execution {execution_id} is {old.status}: resume it once it has "
                           "ended (or cancel it)")
        plan = Plan.from_dict(old.plan)
        done = {node: job for node, job in self.store.jobs(execution_id).items()
                if job.status == RunState.COMPLETED and job.receipt is not None}
        execution = self.store.create_execution(plan, trigger="resume",
                                                resumed_from=execution_id)
        self.steps.carry_on(int(execution.id or 0), done)
        self._start(int(execution.id or 0), plan, None)
        return execution

    def execute_flow_run(self, workflow_id: int, flow_run: object) -> WorkflowExecution:
        return self.execute(workflow_id, trigger="schedule", flow_run=flow_run)

    async def cancel(self, execution_id: int) -> WorkflowExecution:
        """Record the cancellation (409 when the execution has ended) and stop its jobs."""
        self.store.cancel(execution_id)
        await self.steps.cancel(execution_id)
        return self.store.execution(execution_id)

    async def stop(self) -> None:
        flows = list(self._flows.values())
        for t in flows:
            t.cancel()
        await asyncio.gather(*flows, return_exceptions=True)
        await self.engine.stop()

    async def wait(self, execution_id: int) -> None:
        """Until the execution's flow run in this process has ended (at once if none runs)."""
        flow = self._flows.get(execution_id)
        if flow is not None:
            await asyncio.shield(flow)

    def inputs_in_use(self) -> set[str]:
        """Digests of the artifacts the jobs running now read."""
        return self.steps.inputs_in_use()

    @property
    def active_executions(self) -> int:
        return len(self._flows)

    # -- one flow run --------------------------------------------------------------------------
    async def _run(self, execution_id: int, plan: Plan, flow_run: object | None) -> None:
        try:
            await self.engine.run_flow(self, workflow_id=plan.workflow_id,
                                       execution_id=execution_id,
                                       name=flow_run_name(plan, execution_id), flow_run=flow_run)
        except Unavailable as exc:
            self._fail_if_open(execution_id, exc.message)
        except (WorkflowFailed, JobFailed):
            pass
        except asyncio.CancelledError:
            self._fail_if_open(execution_id, "interrupted: the node is stopping")
            raise
        except FlowEngineError as exc:
            log.error("execution %s failed: %s", execution_id, exc)
            self._fail_if_open(execution_id, f"execution failed: {exc}")
        except Exception as exc:
            log.exception("execution %s crashed", execution_id)
            self._fail_if_open(execution_id, f"execution failed: {exc}")
        finally:
            self._fail_if_open(execution_id, "execution ended without a result")
            self._log_end(execution_id, plan)
            self._flows.pop(execution_id, None)
            self._plans.pop(execution_id, None)
            self._job_ids.pop(execution_id, None)
            self.steps.forget(execution_id)
            self.store.forget(execution_id)

    def _fail_if_open(self, execution_id: int, error: str) -> None:
        """FAILED, with its unfinished jobs, unless it has ended already."""
        try:
            if self.store.is_finished(execution_id):
                return
            for job in self.store.jobs(execution_id).values():
                self.store.close_job(int(job.id or 0), RunState.FAILED, error)
            self.store.set_execution(execution_id, RunState.FAILED, error=error)
        except Exception:
            log.exception("cannot mark execution %s failed", execution_id)

    def _log_end(self, execution_id: int, plan: Plan) -> None:
        """One line in the node's log per ended execution (scheduled ones have no other)."""
        if not log.isEnabledFor(logging.WARNING):
            return
        try:
            row = self.store.execution(execution_id)
        except Exception:  # the workflow was deleted meanwhile, with its executions
            return
        took = ""
        if row.started_at is not None and row.completed_at is not None:
            took = f" in {(row.completed_at - row.started_at).total_seconds():.1f} s"
        what = f"execution {execution_id} of {plan.workflow_name!r} ({row.trigger})"
        if row.status == RunState.FAILED:
            log.warning("%s FAILED%s: %s", what, took, row.error)
        else:
            log.info("%s %s%s", what, row.status, took)

    def _ended(self, execution_id: int) -> bool:
        """Whether the execution has ended (cancelled, mostly). One whose flow runs here changes
        state only through this process's store, which remembers the ones it ended; any other
        is looked up."""
        if execution_id in self._flows:
            return self.store.ended_here(execution_id)
        return self.store.is_finished(execution_id)

    def _plan(self, execution_id: int) -> Plan:
        plan = self._plans.get(execution_id)
        if plan is None:
            plan = self._plans[execution_id] = self.store.plan(execution_id)
        return plan

    # -- ExecutionBodies: what the flow engine calls back ----------------------------------------
    async def flow_body(self, workflow_id: int, execution_id: int | None) -> FlowEnd:
        if execution_id is None:  # a run Prefect started (a worker running the deployment)
            plan = self.compiler.compile(workflow_id)
            execution_id = int(self.store.create_execution(plan, trigger="schedule").id or 0)
            self._plans[execution_id] = plan
        plan = self._plan(execution_id)
        if self._ended(execution_id):  # cancelled before the engine was ready
            return FlowEnd(execution_id, self.store.status(execution_id))
        flow_run_id = await self.engine.flow_started(flow_run_name(plan, execution_id))
        self.store.set_execution(execution_id, RunState.RUNNING, prefect_flow_run_id=flow_run_id)
        self._job_ids[execution_id] = {n: int(j.id or 0)
                                       for n, j in self.store.jobs(execution_id).items()}
        completed = await run_plan(plan, _Steps(self, execution_id, plan))
        if self._ended(execution_id):
            return FlowEnd(execution_id, self.store.status(execution_id))
        if not completed:
            final = self.store.jobs(execution_id)
            for node in plan.nodes:
                job = final[node.node_id]
                if job.status == RunState.FAILED:
                    error = f"{node.label} failed: {job.error or 'unknown error'}"
                    self.store.set_execution(execution_id, RunState.FAILED, error=error)
                    raise WorkflowFailed(error)
        self.store.set_execution(execution_id, RunState.COMPLETED)
        return FlowEnd(execution_id, RunState.COMPLETED)

    async def task_body(self, execution_id: int, node_id: int, upstream: list[NodeOutputs],
                        attempt: Attempt) -> NodeOutputs:
        plan = self._plan(execution_id)
        return await self.steps.run(execution_id, plan, plan.node(node_id),
                                    self._job_id(execution_id, node_id), upstream, attempt,
                                    lambda: self._ended(execution_id))

    def may_retry(self, execution_id: int) -> bool:
        """Not once the execution has ended (cancelled)."""
        return not self._ended(execution_id)

    def _job_id(self, execution_id: int, node_id: int) -> int:
        known = self._job_ids.get(execution_id, {}).get(node_id)
        if known is not None:
            return known
        return int(self.store.jobs(execution_id)[node_id].id or 0)


class _Steps:
    """The scheduler's view of one execution (``flows.scheduling.NodeSteps``)."""

    def __init__(self, owner: Executions, execution_id: int, plan: Plan) -> None:
        self.owner = owner
        self.execution_id = execution_id
        self.plan = plan

    def ended(self) -> bool:
        return self.owner._ended(self.execution_id)

    async def run(self, node: PlanNode, upstream: list[NodeOutputs]) -> NodeOutputs:
        if node.service_type == ServiceType.DATA:
            job_id = self.owner._job_id(self.execution_id, node.node_id)
            return await self.owner.steps.run_data(node, job_id)
        return await self.owner.engine.run_task(node, self.execution_id, upstream)

    def not_started(self, node: PlanNode, upstream: PlanNode) -> None:
        self._close(node, RunState.CANCELLED,
                    f"not started: upstream {upstream.label} did not complete")

    def did_not_complete(self, node: PlanNode, error: BaseException) -> None:
        if isinstance(error, JobCancelled):
            self._close(node, RunState.CANCELLED, "cancelled")
        else:
            self._close(node, RunState.FAILED, str(error) or type(error).__name__)

    def _close(self, node: PlanNode, state: RunState, error: str) -> None:
        self.owner.store.close_job(self.owner._job_id(self.execution_id, node.node_id), state,
                                   error)
