"""``PrefectEngine``: the ``FlowEngine`` the node runs its executions on.

It creates each execution's flow run (named, with the version and retry policy Prefect would write
back), runs it in-process with API clients shared by every run (Prefect would otherwise open new
ones per flow run: a TLS context each, tens of milliseconds on the event loop), builds one Prefect
task object per distinct set of job options, asks for tag concurrency slots only where a tag limit
exists, and ships job output lines to the task runs' logs where a Prefect UI can show them.
Prefect is imported lazily: building a node does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any

import httpx

from flows.flow_engine import Attempt, ExecutionBodies, FlowEngineError
from flows.job_step import keep_bounded
from flows.on_prefect import bodies as serving
from flows.on_prefect.own_flow_runs import OwnFlowRuns
from flows.on_prefect.tag_limits import TagLimits, use_tag_limits
from flows.on_prefect.task_run_logs import LogShipper, TaskRunLog
from flows.scheduling import JobCancelled, NodeOutputs
from orchestrator.graph import PlanNode

if TYPE_CHECKING:
    from flows.on_prefect.runtime import PrefectRuntime

# Prefect's own timeout is a safety net behind the executor's, which kills the job itself.
TIMEOUT_GRACE = 60.0
# Prefect task objects kept for reuse, by their options (building one costs milliseconds).
TASK_CACHE_SIZE = 256


class PrefectEngine:
    def __init__(self, runtime: PrefectRuntime | None, *, job_log_lines: int = 0) -> None:
        """``runtime``: the Prefect server beside the node (None in a worker, whose Prefect
        settings are its own); ``job_log_lines``: how many lines of each job go to its task
        run's logs (0: none)."""
        self.runtime = runtime
        self.api_url = runtime.api_url if runtime is not None else os.environ.get(
            "PREFECT_API_URL", "")
        self._job_log_lines = job_log_lines
        self._tasks: dict[tuple[Any, ...], Any] = {}
        self._clients: asyncio.Future[tuple[Any, Any]] | None = None
        self._flow_id: Any = None  # run_workflow's id on the Prefect server, once known
        self._tag_limits = TagLimits()
        self._own_runs = OwnFlowRuns()
        self._logs = LogShipper(self._post_logs)

    async def wait_ready(self) -> None:
        if self.runtime is not None:
            await self.runtime.wait_ready()

    # -- flow runs -----------------------------------------------------------------------------
    async def run_flow(self, bodies: ExecutionBodies, *, workflow_id: int, execution_id: int,
                       name: str, flow_run: Any = None) -> None:
        await self.wait_ready()
        token = serving.serve(self, bodies)
        try:
            await self._use_shared_clients()
            from prefect.client.orchestration import get_client
            from prefect.flow_engine import run_flow_async

            from flows.on_prefect.flow import run_workflow

            self._tag_limits.prefetch(get_client())
            params = {"workflow_id": workflow_id, "execution_id": execution_id}
            if flow_run is None:
                # Created here with its name: a run Prefect creates is renamed with one more call.
                flow_run = await self._create_flow_run(name, params)
                self._own_runs.add(flow_run)
                await run_flow_async(run_workflow, flow_run=flow_run, parameters=params)
            else:
                named = run_workflow.with_options(flow_run_name=name)
                await run_flow_async(named, flow_run=flow_run, parameters=params)
        except Exception as exc:
            if _cancelled_run(exc):  # the flow run ended Cancelled: the body said so
                return
            if isinstance(exc, httpx.TransportError):
                raise FlowEngineError(f"the Prefect API at {self.api_url} did not answer "
                                      f"({exc})") from None
            raise
        finally:
            if flow_run is not None:
                self._own_runs.discard(flow_run.id)
            serving.reset(token)

    async def flow_started(self, name: str) -> str | None:
        from prefect.client.orchestration import get_client
        from prefect.context import get_run_context

        flow_run = getattr(get_run_context(), "flow_run", None)
        if flow_run is not None and flow_run.name != name:
            # A run Prefect started (a worker running the deployment): named as the node's are.
            await get_client().update_flow_run(flow_run.id, name=name)
        use_tag_limits(await self._tag_limits.current(get_client()))
        return str(flow_run.id) if flow_run is not None else None

    async def _create_flow_run(self, name: str, params: dict[str, Any]) -> Any:
        """A Pending flow run of ``run_workflow`` named ``name``. Prefect's client asks the
        server for the flow's id before every run; the id is kept here instead, and asked for
        again only when the server no longer knows it (a server reset, a flow deleted)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import FlowRunCreate
        from prefect.client.schemas.objects import FlowRun, FlowRunPolicy
        from prefect.states import Pending, to_state_create

        from flows.on_prefect.flow import run_workflow

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

    async def _use_shared_clients(self) -> None:
        """Make the flow run started from the current task use this engine's API clients."""
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

    # -- task runs -----------------------------------------------------------------------------
    async def run_task(self, node: PlanNode, execution_id: int,
                       upstream: list[NodeOutputs]) -> NodeOutputs:
        try:
            result: NodeOutputs = await self._task_for(node)(execution_id, node.node_id,
                                                             upstream)
        except Exception as exc:
            if _cancelled_run(exc):
                raise JobCancelled("cancelled") from None
            raise
        return result

    def attempt(self) -> Attempt:
        from prefect.context import get_run_context

        task_run = getattr(get_run_context(), "task_run", None)
        if task_run is None:
            return Attempt()
        log = self._task_run_log(task_run)
        return Attempt(int(task_run.run_count), str(task_run.id),
                       log.line if log is not None else None,
                       log.close if log is not None else None)

    def _task_for(self, node: PlanNode) -> Any:
        """``run_job`` with the node's name, retries, timeout and tags; one object per
        distinct set of options, reused across executions."""
        name = node.service_name or f"service-{node.service_id}"
        key = (name, node.service_id, node.peer_id, node.service_type, node.retry_count,
               node.retry_delay, node.timeout)
        runnable = self._tasks.get(key)
        if runnable is None:
            from flows.on_prefect.flow import run_job

            runnable = run_job.with_options(
                name=name,
                task_run_name=f"{node.service_name or node.service_id} @ {node.peer_id[:12]}",
                retries=node.retry_count,
                retry_delay_seconds=node.retry_delay,
                timeout_seconds=node.timeout + TIMEOUT_GRACE,
                tags=[f"peer:{node.peer_id}", f"service-type:{node.service_type or 'REMOTE'}"],
                retry_condition_fn=_may_retry,
            )
            keep_bounded(self._tasks, key, runnable, TASK_CACHE_SIZE)
        return runnable

    # -- job lines as task-run logs ----------------------------------------------------------------
    def _task_run_log(self, task_run: Any) -> TaskRunLog | None:
        if not self._job_log_lines:
            return None
        return TaskRunLog(self._logs.add, flow_run_id=str(task_run.flow_run_id),
                          task_run_id=str(task_run.id), limit=self._job_log_lines)

    async def _post_logs(self, batch: list[dict[str, Any]]) -> None:
        clients = self._clients
        if clients is None or not clients.done() or clients.exception() is not None:
            raise RuntimeError("no Prefect client")
        async_ctx, _ = clients.result()
        await async_ctx.client.request("POST", "/logs/", json=batch)

    async def stop(self) -> None:
        await self._logs.aclose()
        clients, self._clients = self._clients, None
        if clients is not None and clients.done() and not clients.exception():
            async_ctx, sync_ctx = clients.result()
            with contextlib.suppress(Exception):
                await async_ctx.client.__aexit__(None, None, None)
            with contextlib.suppress(Exception):
                sync_ctx.client.__exit__(None, None, None)


def _cancelled_run(exc: BaseException) -> bool:
    """Whether ``exc`` is Prefect's way of saying that the awaited run ended Cancelled."""
    from prefect.exceptions import CancelledRun

    return isinstance(exc, CancelledRun)


def _may_retry(*_: Any) -> bool:
    """Prefect's retry condition: not once the execution has ended (cancelled)."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    execution_id = ctx.parameters.get("execution_id") if ctx is not None else None
    if execution_id is None:
        return True
    _, bodies = serving.current()
    return bodies.may_retry(int(execution_id))
