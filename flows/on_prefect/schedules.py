"""Cron schedules of workflows: Prefect deployments of the one flow ``run_workflow``, served here.

Each schedule is a row in ``workflow_schedules`` and a Prefect deployment named
``workflow-<id>-schedule-<id>`` with the cron schedule and the parameter ``workflow_id``. Prefect's
scheduler creates the upcoming flow runs; the node serves them: it polls for runs of its
deployments that are due, claims each (PENDING) and runs it in-process as a normal execution with
trigger "schedule". ``run_now`` asks Prefect for a run of the deployment at once (as
``prefect deployment run`` would), which the node then serves the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zoneinfo
from typing import Any, Protocol

from sqlmodel import col, select

from flows.on_prefect.runtime import PrefectRuntime
from orchestrator.background import cancel_and_wait
from orchestrator.db import Database
from orchestrator.errors import InvalidInput, NotFound, Unavailable
from orchestrator.models import Workflow, WorkflowSchedule

log = logging.getLogger("remote_network.schedules")


def validate_cron(cron: Any, timezone: Any) -> tuple[str, str]:
    """The cron expression and timezone, normalised; InvalidInput when Prefect would refuse."""
    if not isinstance(cron, str) or not cron.strip():
        raise InvalidInput("cron is required")
    cron = " ".join(cron.split())
    tz = timezone if timezone not in (None, "") else "UTC"
    if not isinstance(tz, str):
        raise InvalidInput("timezone must be a string")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"Unknown timezone '{tz}'") from None
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=tz)
    except ValueError:
        raise InvalidInput(f"Invalid cron expression '{cron}'") from None
    return cron, tz


def deployment_name(schedule: WorkflowSchedule) -> str:
    return f"workflow-{schedule.workflow_id}-schedule-{schedule.id}"


DEPLOYMENT_NAME = re.compile(r"^workflow-\d+-schedule-\d+$")


class ScheduledRuns(Protocol):
    """Who runs a due flow run of a schedule as an execution (``flows.executions``)."""

    def execute_flow_run(self, workflow_id: int, flow_run: Any) -> object: ...


class ScheduleService:
    def __init__(self, db: Database, runner: ScheduledRuns, runtime: PrefectRuntime, *,
                 poll_seconds: float = 2.0) -> None:
        self.db = db
        self.runner = runner
        self.runtime = runtime
        self.poll_seconds = poll_seconds
        self._serve_task: asyncio.Task[None] | None = None
        self._claimed: set[str] = set()

    # -- records -------------------------------------------------------------------------------
    def list(self, workflow_id: int) -> list[WorkflowSchedule]:
        with self.db.session() as s:
            if s.get(Workflow, workflow_id) is None:
                raise NotFound("Workflow not found")
            return list(s.exec(select(WorkflowSchedule)
                               .where(WorkflowSchedule.workflow_id == workflow_id)
                               .order_by(col(WorkflowSchedule.id))))

    def _all(self) -> list[WorkflowSchedule]:
        with self.db.session() as s:
            return list(s.exec(select(WorkflowSchedule).order_by(col(WorkflowSchedule.id))))

    def _get(self, workflow_id: int, schedule_id: int) -> WorkflowSchedule:
        with self.db.session() as s:
            if s.get(Workflow, workflow_id) is None:
                raise NotFound("Workflow not found")
            row = s.get(WorkflowSchedule, schedule_id)
            if row is None or row.workflow_id != workflow_id:
                raise NotFound("Schedule not found")
            return row

    async def create(self, workflow_id: int, cron: Any, timezone: Any = "UTC",
                     active: bool = True) -> WorkflowSchedule:
        cron, tz = validate_cron(cron, timezone)
        row = WorkflowSchedule(workflow_id=workflow_id, cron=cron, timezone=tz,
                               active=bool(active))
        with self.db.session() as s:
            if s.get(Workflow, workflow_id) is None:
                raise NotFound("Workflow not found")
            s.add(row)
            s.commit()
            s.refresh(row)
        if self.runtime.ready:
            await self._deploy(row)
        return self._get(workflow_id, int(row.id or 0))

    async def delete(self, workflow_id: int, schedule_id: int) -> None:
        row = self._get(workflow_id, schedule_id)
        if row.deployment_id and self.runtime.ready:
            with contextlib.suppress(Exception):
                from prefect.client.orchestration import get_client

                async with get_client() as client:
                    await client.delete_deployment(row.deployment_id)
        with self.db.session() as s:
            found = s.get(WorkflowSchedule, schedule_id)
            if found is not None:
                s.delete(found)
                s.commit()

    def on_workflow_deleted(self, workflow_id: int) -> None:
        """Remove the Prefect deployments of a workflow that is being deleted (its schedule rows
        go with it). Blocking: the delete endpoint runs in a worker thread. When Prefect is not
        up, what is left behind goes at the next start (``sync``)."""
        ids = [r.deployment_id for r in self._all()
               if r.workflow_id == workflow_id and r.deployment_id]
        if not ids or not self.runtime.ready:
            return
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            for deployment_id in ids:
                with contextlib.suppress(ObjectNotFound):
                    client.delete_deployment(deployment_id)

    async def run_now(self, workflow_id: int, schedule_id: int) -> str:
        """Ask Prefect for a run of the schedule's deployment now; returns the flow run id."""
        row = self._get(workflow_id, schedule_id)
        await self.runtime.wait_ready(timeout=20)
        if not row.deployment_id:
            row = await self._deploy(row)
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(row.deployment_id)
        return str(flow_run.id)

    # -- Prefect deployments ---------------------------------------------------------------------
    async def _deploy(self, row: WorkflowSchedule) -> WorkflowSchedule:
        from prefect.schedules import Cron

        from flows.on_prefect.flow import run_workflow

        try:
            deployment = await run_workflow.ato_deployment(
                name=deployment_name(row), schedule=Cron(row.cron, timezone=row.timezone),
                parameters={"workflow_id": row.workflow_id}, paused=not row.active,
                tags=[f"workflow:{row.workflow_id}"])
            deployment_id = str(await deployment.aapply())
        except Exception as exc:
            raise Unavailable(f"Cannot register the schedule with Prefect: {exc}") from None
        with self.db.session() as s:
            found = s.get(WorkflowSchedule, row.id)
            if found is not None:
                found.deployment_id = deployment_id
                s.add(found)
                s.commit()
                s.refresh(found)
                return found
        return row

    async def sync(self) -> None:
        """Register every schedule's deployment (Prefect's database may be new), remove those
        whose schedule is gone, then serve."""
        for row in self._all():
            try:
                await self._deploy(row)
            except Exception as exc:
                log.warning("schedule %s not registered: %s", row.id, exc)
        if not self.runtime.external:  # a shared server may hold other nodes' deployments
            try:
                await self._remove_orphans()
            except Exception as exc:
                log.warning("stale schedule deployments not removed: %s", exc)
        if self._serve_task is None:
            self._serve_task = asyncio.create_task(self._serve(), name="schedules")

    async def _remove_orphans(self) -> None:
        """Delete deployments of ``run_workflow`` named like ours whose schedule is gone (a
        workflow or schedule deleted while Prefect was down)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName
        from prefect.exceptions import ObjectNotFound

        known = {r.deployment_id for r in self._all() if r.deployment_id}
        async with get_client() as client:
            deployments = await client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["run_workflow"])))
            for d in deployments:
                if DEPLOYMENT_NAME.match(d.name) and str(d.id) not in known:
                    with contextlib.suppress(ObjectNotFound):
                        await client.delete_deployment(d.id)
                    log.info("removed deployment %s: its schedule is gone", d.name)

    async def _serve(self) -> None:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            while True:
                try:
                    await self._serve_due(client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("serving scheduled runs failed: %s", exc)
                await asyncio.sleep(self.poll_seconds)

    async def _serve_due(self, client: Any) -> None:
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterNextScheduledStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.states import Pending
        from prefect.types._datetime import now

        by_deployment = {r.deployment_id: r for r in self._all() if r.deployment_id}
        if not by_deployment:
            return
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(
                any_=list(by_deployment))),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                    before_=now("UTC"))),
            limit=50)
        for run in runs:
            key = str(run.id)
            schedule = by_deployment.get(str(run.deployment_id))
            if schedule is None or key in self._claimed:
                continue
            result = await client.set_flow_run_state(run.id, Pending())
            if result.status.value != "ACCEPT":
                continue
            self._claimed.add(key)
            fresh = await client.read_flow_run(run.id)
            try:
                self.runner.execute_flow_run(schedule.workflow_id, fresh)
            except Exception as exc:
                from prefect.states import Failed

                log.warning("scheduled run of workflow %s not started: %s",
                            schedule.workflow_id, exc)
                await client.set_flow_run_state(run.id, Failed(message=str(exc)), force=True)

    async def stop(self) -> None:
        await cancel_and_wait(self._serve_task)
        self._serve_task = None
