"""Runs executions: the body of the flow ``run_workflow`` and of its per-node task.

``flows.flow`` holds the Prefect flow and task; they call into the ``WorkflowRunner`` bound in the
process (the node's). The runner schedules each plan node as soon as its upstream nodes have
finished, records every job in our tables through ``orchestrator.engine``, and dispatches the job
through ``flows.dispatch``. Prefect is imported lazily, so building a node does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from executors.base import ArtifactRef, JobOutcome, JobResult, utcnow
from flows.dispatch import DispatchError, JobDispatcher, JobInput, JobRequest, LocalDispatcher
from flows.own_flow_runs import OwnFlowRuns
from flows.tag_limits import TagLimits, use_tag_limits
from flows.task_run_logs import LogShipper, TaskRunLog
from orchestrator.config import Settings
from orchestrator.engine import ExecutionEngine, InterfaceRecord
from orchestrator.errors import Unavailable
from orchestrator.graph import DATA_OUTPUT, TEXT_OUTPUTS, Plan, PlanNode
from orchestrator.models import JobExecution, WorkflowExecution
from orchestrator.states import RunState, ServiceType

if TYPE_CHECKING:
    from prefect.states import State

log = logging.getLogger("remote_network.flows")

# Prefect's own timeout is a safety net behind the executor's, which kills the job itself.
TIMEOUT_GRACE = 60.0
# Text outputs this small are read on the loop: a thread hand-off costs more than the read.
SMALL_READ = 64 * 1024
# Prefect task objects kept for reuse, by their options (building one costs milliseconds).
TASK_CACHE_SIZE = 256
# Small text outputs kept by artifact hash, for the records of the jobs they feed (at most
# this many, each at most SMALL_READ: 16 MiB).
TEXT_CACHE_SIZE = 256


class JobFailed(Exception):
    pass


class WorkflowFailed(Exception):
    pass


class NodeOutputs:
    """What a finished node hands downstream: its outputs by key, as artifact references.

    A task's return value and its downstream tasks' parameter. Prefect walks into dataclasses,
    dicts and lists among a task's parameters and results (twice per task run) to find futures
    and link upstream runs; it links this object by identity, so it is deliberately a plain
    object that Prefect does not walk into: walking its references cost milliseconds a job.
    """

    __slots__ = ("node_id", "outputs")

    def __init__(self, node_id: int, outputs: dict[str, ArtifactRef] | None = None) -> None:
        self.node_id = node_id
        self.outputs: dict[str, ArtifactRef] = outputs if outputs is not None else {}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NodeOutputs) and other.node_id == self.node_id
                and other.outputs == self.outputs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NodeOutputs(node_id={self.node_id}, outputs={sorted(self.outputs)})"


def _keep(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Store ``value`` in a cache of at most ``limit`` entries (the oldest goes first)."""
    if len(cache) >= limit:
        cache.pop(next(iter(cache)))
    cache[key] = value


# -- the runner this process's flow and task runs use -------------------------------------------
_runner: WorkflowRunner | None = None


def _cancelled_run(exc: BaseException) -> bool:
    """Whether ``exc`` is Prefect's way of saying that the awaited run ended Cancelled."""
    from prefect.exceptions import CancelledRun

    return isinstance(exc, CancelledRun)


def bind_runner(runner: WorkflowRunner | None) -> None:
    """The runner that flow and task runs in this process use (the node's)."""
    global _runner
    _runner = runner


def flow_run_name(plan: Plan, execution_id: int) -> str:
    """What an execution's flow run is called in Prefect, whoever started it."""
    return f"{plan.workflow_name} #{execution_id}"


def current_runner() -> WorkflowRunner:
    """The bound runner; in a process without a node (a Prefect worker running a deployment of
    ``run_workflow``), one built from the node settings found in the environment (RN_*)."""
    global _runner
    if _runner is None:
        from orchestrator.node import Node

        node = Node(Settings())
        _runner = node.workflow_runner
    return _runner


# -- the runner -----------------------------------------------------------------------------------
class WorkflowRunner:
    def __init__(self, engine: ExecutionEngine, runtime: Any, *, local: LocalDispatcher,
                 artifacts: Any, settings: Settings) -> None:
        self.engine = engine
        self.runtime = runtime
        self.local = local
        self.artifacts = artifacts
        self.settings = settings
        # Picks the dispatcher for a plan node; the network replaces it to add remote peers.
        self.dispatcher_for: Callable[[PlanNode], JobDispatcher] = lambda _node: self.local
        self._flows: dict[int, asyncio.Task[None]] = {}
        self._plans: dict[int, Plan] = {}
        self._active: dict[int, dict[int, tuple[JobDispatcher, JobRequest]]] = {}
        self._job_ids: dict[int, dict[int, int]] = {}  # execution -> plan node -> job id
        self._tasks: dict[tuple[Any, ...], Any] = {}
        self._texts: dict[str, str] = {}
        self._clients: asyncio.Future[tuple[Any, Any]] | None = None
        self._flow_id: Any = None  # run_workflow's id on the Prefect server, once known
        self._tag_limits = TagLimits()
        self._own_runs = OwnFlowRuns()
        self._logs = LogShipper(self._post_logs)  # job lines to Prefect, as task-run logs
        # Only where a Prefect UI can show them: the node's own server with --prefect-ui, or a
        # server of the user's (each line costs that server about a millisecond of CPU).
        self._job_log_lines = (settings.prefect_job_log_lines
                               if settings.prefect_ui or settings.prefect_api_url else 0)

    def use_remote(self, remote: JobDispatcher) -> None:
        """Dispatch through ``remote`` every node that runs on another peer or may take inputs
        held by one (``remote`` runs this node's own jobs locally, after fetching those)."""
        self.dispatcher_for = lambda node: self.local if node.local and not node.upstream \
            else remote

    # -- entry points -----------------------------------------------------------------------
    def execute(self, workflow_id: int, *, trigger: str = "api") -> WorkflowExecution:
        """Compile (400 when invalid), record, and start the flow run in the background."""
        execution, plan = self.engine.create_execution(workflow_id, trigger=trigger)
        self._start(int(execution.id or 0), plan)
        return execution

    def execute_flow_run(self, workflow_id: int, flow_run: Any) -> WorkflowExecution:
        """Run an existing Prefect flow run (a scheduled run of a deployment) as an execution."""
        execution, plan = self.engine.create_execution(workflow_id, trigger="schedule")
        self._start(int(execution.id or 0), plan, flow_run=flow_run)
        return execution

    async def cancel(self, execution_id: int) -> WorkflowExecution:
        self.engine.cancel(execution_id)
        for dispatcher, request in list(self._active.get(execution_id, {}).values()):
            await dispatcher.cancel(request)
        return self.engine.execution(execution_id)

    async def stop(self) -> None:
        flows = list(self._flows.values())
        for t in flows:
            t.cancel()
        await asyncio.gather(*flows, return_exceptions=True)
        await self._logs.aclose()
        clients, self._clients = self._clients, None
        if clients is not None and clients.done() and not clients.exception():
            async_ctx, sync_ctx = clients.result()
            with contextlib.suppress(Exception):
                await async_ctx.client.__aexit__(None, None, None)
            with contextlib.suppress(Exception):
                sync_ctx.client.__exit__(None, None, None)

    async def _use_shared_clients(self) -> None:
        """Make the flow run started from the current task use this runner's Prefect API
        clients. Prefect otherwise opens new ones for every flow run (a TLS context each, even
        for a plain-HTTP API: tens of milliseconds on the event loop), which serialises
        executions started together."""
        from prefect.context import AsyncClientContext, SyncClientContext

        if self._clients is None:
            self._clients = asyncio.get_running_loop().create_future()
            try:
                async_ctx = AsyncClientContext()
                await async_ctx.client.__aenter__()
                self._own_runs.install(async_ctx.client)
                sync_ctx = SyncClientContext()
                sync_ctx.client.__enter__()
            except BaseException as exc:
                self._clients.set_exception(exc)
                self._clients.exception()  # retrieved: each waiter gets it below
                self._clients = None
                raise
            self._clients.set_result((async_ctx, sync_ctx))
        async_ctx, sync_ctx = await asyncio.shield(self._clients)
        # Only this task's context (a copy, made when the task was created) sees these.
        AsyncClientContext.__var__.set(async_ctx)
        SyncClientContext.__var__.set(sync_ctx)

    def inputs_in_use(self) -> set[str]:
        """Digests of the artifacts the jobs running now read."""
        return {inp.artifact.sha256 for jobs in list(self._active.values())
                for _, request in list(jobs.values()) for inp in request.inputs
                if inp.artifact is not None}

    @property
    def active_executions(self) -> int:
        return len(self._flows)

    # -- one flow run --------------------------------------------------------------------------
    def _start(self, execution_id: int, plan: Plan, *, flow_run: Any = None) -> None:
        self._plans[execution_id] = plan
        t = asyncio.create_task(self._run(execution_id, plan, flow_run),
                                name=f"execution-{execution_id}")
        self._flows[execution_id] = t

    async def _run(self, execution_id: int, plan: Plan, flow_run: Any) -> None:
        try:
            await self.runtime.wait_ready()
            await self._use_shared_clients()
            from prefect.client.orchestration import get_client
            from prefect.flow_engine import run_flow_async

            from flows.flow import run_workflow

            self._tag_limits.prefetch(get_client())
            name = flow_run_name(plan, execution_id)
            params = {"workflow_id": plan.workflow_id, "execution_id": execution_id}
            if flow_run is None:
                # Created here with its name: a run Prefect creates is renamed with one more call.
                flow_run = await self._create_flow_run(name, params)
                self._own_runs.add(flow_run)
                await run_flow_async(run_workflow, flow_run=flow_run, parameters=params)
            else:
                named = run_workflow.with_options(flow_run_name=name)
                await run_flow_async(named, flow_run=flow_run, parameters=params)
        except Unavailable as exc:
            self._fail_if_open(execution_id, exc.message)
        except (WorkflowFailed, JobFailed):
            pass
        except asyncio.CancelledError:
            self._fail_if_open(execution_id, "interrupted: the node is stopping")
            raise
        except Exception as exc:
            if _cancelled_run(exc):  # the flow run ended Cancelled: see _ended_early
                return
            if isinstance(exc, httpx.TransportError):
                why = f"the Prefect API at {self.runtime.api_url} did not answer ({exc})"
                log.error("execution %s failed: %s", execution_id, why)
                self._fail_if_open(execution_id, f"execution failed: {why}")
                return
            log.exception("execution %s crashed", execution_id)
            self._fail_if_open(execution_id, f"execution failed: {exc}")
        finally:
            if flow_run is not None:
                self._own_runs.discard(flow_run.id)
            self._fail_if_open(execution_id, "execution ended without a result")
            self._log_end(execution_id, plan)
            self._flows.pop(execution_id, None)
            self._plans.pop(execution_id, None)
            self._active.pop(execution_id, None)
            self._job_ids.pop(execution_id, None)
            self.engine.terminal.discard(execution_id)

    def _log_end(self, execution_id: int, plan: Plan) -> None:
        """One line in the node's log per ended execution (scheduled ones have no other)."""
        if not log.isEnabledFor(logging.WARNING):
            return
        try:
            row = self.engine.execution(execution_id)
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

    async def _create_flow_run(self, name: str, params: dict[str, Any]) -> Any:
        """A Pending flow run of ``run_workflow`` named ``name``. Prefect's client asks the
        server for the flow's id before every run; the id is kept here instead, and asked for
        again only when the server no longer knows it (a server reset, a flow deleted)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import FlowRunCreate
        from prefect.client.schemas.objects import FlowRun, FlowRunPolicy
        from prefect.states import Pending, to_state_create

        from flows.flow import run_workflow

        client = get_client()
        known = self._flow_id is not None
        if not known:
            self._flow_id = await client.create_flow(run_workflow)
        # With the version and retry policy the engine would write back (see OwnFlowRuns).
        body = FlowRunCreate(flow_id=self._flow_id, name=name, flow_version=run_workflow.version,
                             parameters=run_workflow.serialize_parameters(params),
                             state=to_state_create(Pending()),
                             empirical_policy=FlowRunPolicy(
                                 retries=run_workflow.retries,
                                 retry_delay=int(run_workflow.retry_delay_seconds or 0)))
        try:
            response = await client.request(
                "POST", "/flow_runs/", json=body.model_dump(mode="json", exclude_unset=True))
        except httpx.HTTPStatusError as exc:
            if not known or exc.response.status_code not in (404, 409, 422):
                raise
            self._flow_id = None
            return await self._create_flow_run(name, params)
        flow_run = FlowRun.model_validate(response.json())
        flow_run.parameters = params
        return flow_run

    def _fail_if_open(self, execution_id: int, error: str) -> None:
        try:
            if self.engine.is_finished(execution_id):
                return
            for job in self.engine.jobs(execution_id).values():
                if not RunState(job.status).is_terminal:
                    self.engine.set_job(int(job.id or 0), RunState.FAILED, error=error)
            self.engine.set_execution(execution_id, RunState.FAILED, error=error)
        except Exception:
            log.exception("cannot mark execution %s failed", execution_id)

    async def flow_body(self, workflow_id: int,
                        execution_id: int | None) -> dict[str, Any] | State[Any]:
        if execution_id is None:
            execution, plan = self.engine.create_execution(workflow_id, trigger="schedule")
            execution_id = int(execution.id or 0)
            self._plans[execution_id] = plan
        plan = self._plans.get(execution_id) or self.engine.plan(execution_id)
        self._plans[execution_id] = plan
        if self._finished(execution_id):  # cancelled before Prefect was ready
            return self._ended_early(execution_id)
        from prefect.client.orchestration import get_client
        from prefect.context import get_run_context

        ctx = get_run_context()
        flow_run_id = str(ctx.flow_run.id) if getattr(ctx, "flow_run", None) else None
        name = flow_run_name(plan, execution_id)
        if flow_run_id is not None and ctx.flow_run.name != name:
            # A run Prefect started (a worker running the deployment): named as the node's are.
            await get_client().update_flow_run(ctx.flow_run.id, name=name)
        use_tag_limits(await self._tag_limits.current(get_client()))
        self.engine.set_execution(execution_id, RunState.RUNNING, prefect_flow_run_id=flow_run_id)
        jobs = self.engine.jobs(execution_id)
        self._job_ids[execution_id] = {n: int(j.id or 0) for n, j in jobs.items()}
        tasks: dict[int, asyncio.Task[NodeOutputs | None]] = {}
        for node in plan.nodes:
            tasks[node.node_id] = asyncio.create_task(
                self._node(execution_id, plan, node, jobs[node.node_id], tasks))
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)

        if self._finished(execution_id):
            return self._ended_early(execution_id)
        if all(isinstance(r, NodeOutputs) for r in results):
            self.engine.set_execution(execution_id, RunState.COMPLETED)
            return {"execution_id": execution_id, "status": RunState.COMPLETED}
        final = self.engine.jobs(execution_id)
        for node in plan.nodes:
            job = final[node.node_id]
            if job.status == RunState.FAILED:
                error = f"{node.label} failed: {job.error or 'unknown error'}"
                self.engine.set_execution(execution_id, RunState.FAILED, error=error)
                raise WorkflowFailed(error)
        self.engine.set_execution(execution_id, RunState.COMPLETED)
        return {"execution_id": execution_id, "status": RunState.COMPLETED}

    def _ended_early(self, execution_id: int) -> dict[str, Any] | State[Any]:
        """The flow's end when the execution ended while it ran (cancelled, mostly): the flow
        run ends Cancelled in Prefect too, rather than Completed."""
        from prefect.states import Cancelled

        row = self.engine.execution(execution_id)
        if row.status == RunState.CANCELLED:
            return Cancelled(message=f"execution {execution_id} cancelled")
        return {"execution_id": execution_id, "status": row.status}

    async def _node(self, execution_id: int, plan: Plan, node: PlanNode, job: JobExecution,
                    tasks: dict[int, asyncio.Task[NodeOutputs | None]]) -> NodeOutputs | None:
        job_id = int(job.id or 0)
        upstream: list[NodeOutputs] = []
        for up in node.upstream:
            try:
                result = await tasks[up]
            except BaseException:
                result = None
            if result is None:
                self._close_job(job_id, RunState.CANCELLED,
                                f"not started: upstream {plan.node(up).label} did not complete")
                return None
            upstream.append(result)
        if self._finished(execution_id):
            return None
        try:
            if node.service_type == ServiceType.DATA:
                return await self._data_node(node, job_id)
            return await self._task_for(node)(execution_id, node.node_id, upstream)
        except JobFailed as exc:
            self._close_job(job_id, RunState.FAILED, str(exc))
            return None
        except Exception as exc:
            if _cancelled_run(exc):
                self._close_job(job_id, RunState.CANCELLED, "cancelled")
            else:
                self._close_job(job_id, RunState.FAILED, str(exc) or type(exc).__name__)
            return None

    def _task_for(self, node: PlanNode) -> Any:
        """The Prefect task that runs ``node``: ``run_job`` with the node's name, retries,
        timeout and tags; one object per distinct set of options, reused across executions."""
        name = node.service_name or f"service-{node.service_id}"
        key = (name, node.service_id, node.peer_id, node.service_type, node.retry_count,
               node.retry_delay, node.timeout)
        runnable = self._tasks.get(key)
        if runnable is None:
            from flows.flow import run_job

            runnable = run_job.with_options(
                name=name,
                task_run_name=f"{node.service_name or node.service_id} @ {node.peer_id[:12]}",
                retries=node.retry_count,
                retry_delay_seconds=node.retry_delay,
                timeout_seconds=node.timeout + TIMEOUT_GRACE,
                tags=[f"peer:{node.peer_id}", f"service-type:{node.service_type or 'REMOTE'}"],
                retry_condition_fn=self._may_retry,
            )
            _keep(self._tasks, key, runnable, TASK_CACHE_SIZE)
        return runnable

    def _may_retry(self, *_: Any) -> bool:
        """Prefect's retry condition: not once the execution has finished (cancelled)."""
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
        execution_id = ctx.parameters.get("execution_id") if ctx is not None else None
        return execution_id is None or not self._finished(int(execution_id))

    def _finished(self, execution_id: int) -> bool:
        """Whether the execution has ended (cancelled, mostly). An execution whose flow runs
        here changes state only through this process's engine, which remembers the ones it
        ended; any other is looked up."""
        if execution_id in self._flows:
            return execution_id in self.engine.terminal
        return self.engine.is_finished(execution_id)

    def _close_job(self, job_id: int, state: RunState, error: str) -> None:
        job = self.engine.job(job_id)
        if not RunState(job.status).is_terminal:
            self.engine.set_job(job_id, state, error=error)

    async def _data_node(self, node: PlanNode, job_id: int) -> NodeOutputs:
        self.engine.set_job(job_id, RunState.RUNNING, attempt=1)
        try:
            ref = await self.local.data_source(node.service_id)
        except DispatchError as exc:
            self.engine.set_job(job_id, RunState.FAILED, error=str(exc))
            raise JobFailed(str(exc)) from None
        self.engine.set_job(job_id, RunState.COMPLETED, exit_code=0, records=[InterfaceRecord(
            DATA_OUTPUT, "output", path="", artifact_hash=ref.sha256, size=ref.size)])
        return NodeOutputs(node.node_id, {DATA_OUTPUT: ref})

    # -- one task run ----------------------------------------------------------------------------
    async def run_node(self, execution_id: int, node_id: int,
                       upstream: list[NodeOutputs]) -> NodeOutputs | State[Any]:
        plan = self._plans.get(execution_id) or self.engine.plan(execution_id)
        node = plan.node(node_id)
        job_id = self._job_ids.get(execution_id, {}).get(node_id) or int(
            self.engine.jobs(execution_id)[node_id].id or 0)
        from prefect.context import get_run_context

        ctx = get_run_context()
        task_run = getattr(ctx, "task_run", None)
        attempt = int(task_run.run_count) if task_run is not None else 1
        from prefect.states import Cancelled

        if self._finished(execution_id):
            return Cancelled(message="execution cancelled before the job started")
        job = self.engine.set_job(job_id, RunState.RUNNING, attempt=attempt, error=None,
                                  prefect_task_run_id=str(task_run.id) if task_run else None)
        inputs = self._inputs(plan, node, {u.node_id: u for u in upstream})
        request = JobRequest(
            job_id=f"rn-e{execution_id}-j{job_id}-a{attempt}", service_id=node.service_id,
            peer_id=node.peer_id, inputs=tuple(inputs), env=dict(node.env), args=node.args,
            stdin_text=node.stdin, entrypoint=node.entrypoint, cmd=node.cmd,
            timeout=node.timeout,
            wired_outputs=tuple(sorted({i.source_key for n in plan.nodes for i in n.inputs
                                        if i.source_node_id == node_id})))
        dispatcher = self.dispatcher_for(node)
        self._active.setdefault(execution_id, {})[job_id] = (dispatcher, request)

        prefect_log = self._task_run_log(task_run)

        def on_log(_job: str, stream: str, line: str) -> None:
            self.engine.publish_log(job, stream, line)
            if prefect_log is not None:
                prefect_log.line(stream, line)

        try:
            result = await dispatcher.dispatch(request, on_log=on_log)
        except DispatchError as exc:
            now = utcnow()
            result = JobResult(request.job_id, JobOutcome.FAILED, None, now, now, error=str(exc))
        finally:
            self._active.get(execution_id, {}).pop(job_id, None)
            if prefect_log is not None:
                prefect_log.close()

        if result.outcome is JobOutcome.COMPLETED:
            self.engine.set_job(job_id, RunState.COMPLETED, exit_code=result.exit_code,
                                records=await self._records(node, inputs, result))
            return NodeOutputs(node_id, dict(result.outputs))
        if result.outcome is JobOutcome.CANCELLED or self._finished(execution_id):
            self._close_job(job_id, RunState.CANCELLED, "cancelled")
            # The task run ends Cancelled (not Failed) in Prefect; awaiting it raises
            # CancelledRun, which _node takes as the job's cancellation.
            return Cancelled(message="job cancelled")
        if result.outcome is JobOutcome.TIMED_OUT:
            reason = f"timed out after {node.timeout:g}s"
        else:
            reason = result.error or f"exit code {result.exit_code}"
            if result.exit_code not in (None, 0) and "exit code" not in reason:
                reason = f"exit code {result.exit_code}: {reason}"
        if attempt > node.retry_count:
            self.engine.set_job(job_id, RunState.FAILED, exit_code=result.exit_code,
                                error=reason, records=await self._records(node, inputs, result))
        else:
            self.engine.set_job(job_id, RunState.RUNNING, exit_code=result.exit_code,
                                error=f"attempt {attempt} failed ({reason}); retrying")
        raise JobFailed(reason)

    async def _post_logs(self, batch: list[dict[str, Any]]) -> None:
        clients = self._clients
        if clients is None or not clients.done() or clients.exception() is not None:
            raise RuntimeError("no Prefect client")
        async_ctx, _ = clients.result()
        await async_ctx.client.request("POST", "/logs/", json=batch)

    def _task_run_log(self, task_run: Any) -> TaskRunLog | None:
        """Where the job's output lines go in Prefect (None: nowhere)."""
        limit = self._job_log_lines
        if task_run is None or not limit:
            return None
        return TaskRunLog(self._logs.add, flow_run_id=str(task_run.flow_run_id),
                          task_run_id=str(task_run.id), limit=limit)

    @staticmethod
    def _inputs(plan: Plan, node: PlanNode, upstream: dict[int, NodeOutputs]) -> list[JobInput]:
        inputs = []
        for inp in node.inputs:
            outputs = upstream[inp.source_node_id].outputs
            ref = outputs.get(inp.source_key)
            if ref is None and inp.source_interface_id is not None:
                ref = outputs.get(f"#{inp.source_interface_id}")
            if ref is None:
                raise JobFailed(f"upstream node {inp.source_node_id} produced no "
                                f"{inp.source_key} output")
            data_service = (plan.node(inp.source_node_id).service_id
                            if inp.source_key == DATA_OUTPUT else None)
            inputs.append(JobInput(
                interface_id=inp.target_interface_id, interface_type=inp.target_type,
                path=inp.target_path, artifact=ref, data_service_id=data_service))
        return inputs

    async def _records(self, node: PlanNode, inputs: list[JobInput],
                       result: JobResult) -> list[InterfaceRecord]:
        """The job's inputs and outputs as they are recorded (text values inline)."""
        limit = self.settings.output_inline_limit
        by_key = {o.key: o for o in node.outputs}
        records = []
        for inp in inputs:
            ref = inp.artifact
            records.append(InterfaceRecord(
                inp.interface_type or "", "input", interface_id=inp.interface_id,
                path=inp.path, value=await self._text(ref, limit, inp.interface_type),
                artifact_hash=ref.sha256 if ref else "", size=ref.size if ref else 0))
        for key, ref in result.outputs.items():
            if key.startswith("#"):
                continue
            kind, _, path = key.partition(":")
            out = by_key.get(key)
            records.append(InterfaceRecord(
                kind, "output", interface_id=out.interface_id if out else None, path=path,
                value=await self._text(ref, limit, kind), artifact_hash=ref.sha256,
                size=ref.size))
        return records

    async def _text(self, ref: ArtifactRef | None, limit: int, kind: str | None) -> str | None:
        text_kinds = {*TEXT_OUTPUTS, "STDIN", "ENV", "ARG"}
        if ref is None or kind not in text_kinds or ref.size > limit or ref.peer_id:
            return None
        if ref.size == 0:
            return ""
        cached = self._texts.get(ref.sha256)
        if cached is not None:
            return cached
        try:
            if ref.size <= SMALL_READ:
                data: bytes = self.artifacts.read_bytes(ref)
            else:
                data = await asyncio.to_thread(self.artifacts.read_bytes, ref)
        except Exception:
            return None
        text = data.decode(errors="replace")
        if ref.size <= SMALL_READ:
            # Artifacts never change: a job's input is its upstream's output, read just before.
            _keep(self._texts, ref.sha256, text, TEXT_CACHE_SIZE)
        return text

