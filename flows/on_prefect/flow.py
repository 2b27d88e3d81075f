"""A workflow execution as a Prefect flow run: the flow ``run_workflow`` and the per-node task.

One flow run per execution (named "<workflow name> #<execution id>"); one task run per plan node
(named "<service> @ <peer>"), with the node's retries, timeout and tags (the peer id and the
service type). Both call back the execution owner they are served by (``bodies``); a job or an
execution that ends cancelled ends Cancelled in Prefect too. Outputs travel between tasks as
artifact references, never as bytes.

Flows and tasks are async: a sync flow run costs over a second in Prefect 3.
"""

from __future__ import annotations

import contextlib
from typing import Any

import prefect.flow_engine
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Completed, State

from flows.on_prefect import tag_limits
from flows.on_prefect.bodies import current
from flows.scheduling import JobCancelled, NodeOutputs
from orchestrator.states import RunState

# The node owns SIGTERM (a graceful stop); Prefect would swap in its own handler for as long as a
# flow runs in the main thread and turn the node's stop into a crash of that flow.
prefect.flow_engine.capture_sigterm = contextlib.nullcontext  # type: ignore[assignment]
# Tagged task runs ask for tag concurrency slots only where such a limit exists.
tag_limits.install()

# Nothing is persisted, but without a storage of its own every flow run asks the API for the
# server's default one, twice, with a blocking request on the event loop.
RESULTS = get_current_settings().results.local_storage_path


@task(name="job", cache_policy=NO_CACHE, persist_result=False)
async def run_job(execution_id: int, node_id: int,
                  upstream: list[NodeOutputs]) -> NodeOutputs | State[Any]:
    engine, bodies = current()
    try:
        outputs = await bodies.task_body(execution_id, node_id, upstream, engine.attempt())
    except JobCancelled as exc:
        # The task run ends Cancelled (not Failed); awaiting it raises CancelledRun, which the
        # engine turns back into JobCancelled for the scheduler.
        return Cancelled(message=str(exc))
    if outputs.reused_from:
        # Not run: taken from an earlier job (a resumed execution's, a cached result). Prefect
        # shows it as its own cache hits are shown.
        return Completed(data=outputs, name="Cached", message=outputs.reused_from)
    return outputs


@flow(name="run_workflow", persist_result=False, validate_parameters=False,
      result_storage=RESULTS)
async def run_workflow(workflow_id: int,
                       execution_id: int | None = None) -> dict[str, Any] | State[Any]:
    """Run one execution of a workflow (a new one, trigger "schedule", when no id is given)."""
    _, bodies = current()
    end = await bodies.flow_body(workflow_id, execution_id)
    if end.status == RunState.CANCELLED:
        return Cancelled(message=f"execution {end.execution_id} cancelled")
    return {"execution_id": end.execution_id, "status": end.status}


@task(name="warm-up", cache_policy=NO_CACHE, persist_result=False)
async def _noop() -> int:
    return 1


@flow(name="warm-up", flow_run_name="node start", persist_result=False,
      result_storage=RESULTS)
async def _warm_up_flow() -> int:
    return await _noop()


async def warm_up() -> None:
    """One tiny flow run: imports, API client and server caches are hot afterwards. It shows in
    the Prefect UI as the flow run "node start" of the flow "warm-up"."""
    await _warm_up_flow()
