"""Prefect, behind the node's ``FlowEngine`` (``flows.flow_engine``): everything that imports it.

- ``engine``: ``PrefectEngine``, flow-run creation, shared API clients, task options, retries;
- ``flow``: the flow ``run_workflow`` and its task ``job`` (and the patches of Prefect's
  internals they need); ``bodies``: whom their runs call back;
- ``runtime``: the Prefect server (and its database) the node starts beside itself;
- ``schedules``: cron schedules as Prefect deployments of ``run_workflow``, served by the node;
- ``tag_limits``, ``own_flow_runs``, ``task_run_logs``: what makes runs cheap and visible.

Prefect itself is imported only where a run, a deployment or the server needs it.
"""

from flows.on_prefect.engine import PrefectEngine
from flows.on_prefect.runtime import PrefectRuntime
from flows.on_prefect.schedules import ScheduleService

__all__ = ["PrefectEngine", "PrefectRuntime", "ScheduleService"]
