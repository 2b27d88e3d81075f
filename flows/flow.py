"""A workflow execution as a Prefect flow run: the flow ``run_workflow`` and the per-node task.

One flow run per execution (named "<workflow name> #<execution id>"); one task run per plan node
(named "<service> @ <peer>"), started as soon as its upstream tasks have finished, so independent
branches overlap. Retries and timeout come from the node's plan (``retry_count``, ``timeout``);
tags carry the peer id and the service type. The task records its job in our tables (state,
attempt, exit code, error, the Prefect task-run id, every input and output) and dispatches the job
through ``flows.dispatch``; outputs travel between tasks as artifact references, never as bytes.

Flows and tasks are async: a sync flow run costs over a second in Prefect 3.
"""

from __future__ import annotations

import contextlib
from typing import Any

import prefect.flow_engine
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings
from prefect.states import State

from flows import tag_limits
from flows.runner import NodeOutputs, current_runner

# The node owns SIGTERM (a graceful stop); Prefect would swap in its own handler for as long as a
# flow runs in the main thread and turn the node's stop into a crash of that flow.
prefect.flow_engine.capture_sigterm = contextlib.nullcontext  # type: ignore[assignment]
# Tagged task runs ask for tag concurrency slots only where such a limit exists.
tag_limits.install()

# Nothing is persisted, but without a storage of its own every flow run asks the API for the
# server's default one, twice, with a blocking request on the event loop.
RESULTS = get_current_settings().results.local_storage_path

# -- the Prefect flow and task ------------------------------------------------------------------
@task(name="job", cache_policy=NO_CACHE, persist_result=False)
async def run_job(execution_id: int, node_id: int,
                  upstream: list[NodeOutputs]) -> NodeOutputs | State[Any]:
    return await current_runner().run_node(execution_id, node_id, upstream)


@flow(name="run_workflow", persist_result=False, validate_parameters=False,
      result_storage=RESULTS)
async def run_workflow(workflow_id: int,
                       execution_id: int | None = None) -> dict[str, Any] | State[Any]:
    """Run one execution of a workflow (a new one, trigger "schedule", when no id is given)."""
    return await current_runner().flow_body(workflow_id, execution_id)


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
