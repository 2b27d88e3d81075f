"""Retention: old execution records go, and so do the artifacts nothing refers to any more.

A node that runs a workflow every minute keeps every execution, job and output unless something
removes them. Every ``retention_sweep_seconds`` (and a minute after the node starts) the sweep:

1. deletes executions that ended more than ``retention_days`` ago, with their jobs and the records
   of those jobs' inputs and outputs (the database cascades), and the jobs other peers ran here
   that ended as long ago; their flow runs go from the Prefect server the node runs (a Prefect
   server of the user's own keeps its own policy). ``retention_days = 0`` keeps them for ever;
2. removes the artifacts that no job record names and no running job reads, once they are older
   than the artifact grace (an hour, or the retention period where that is shorter): an artifact
   is written before the record naming it, and a running job's inputs may be named by no record
   yet, nor are the clear bytes of a DATA service a running job reads. Deleting a workflow (its
   executions go with it) therefore frees its outputs too.

What is old enough is said by ``_ended_before`` (records) and ``artifact_grace`` (artifacts);
``Retention`` runs the sweeps against the database and the store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, or_
from sqlmodel import col, select

from executors.artifacts import ArtifactStore
from executors.base import utcnow
from orchestrator.background import cancel_and_wait
from orchestrator.db import Database
from orchestrator.models import JobExecution, JobExecutionInterface, WorkflowExecution
from orchestrator.states import TERMINAL

log = logging.getLogger("remote_network.retention")

FIRST_SWEEP_DELAY = 60.0
ARTIFACT_GRACE = 3600.0
# Executions deleted per transaction, so a first sweep of a long history holds no long lock.
BATCH = 500
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class SweepReport:
    executions: int = 0
    jobs: int = 0
    artifacts: int = 0
    artifact_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.executions or self.jobs or self.artifacts)


def artifact_grace(retention_days: float) -> float:
    """How old an unreferenced artifact must be before it is removed, in seconds."""
    if retention_days <= 0:
        return ARTIFACT_GRACE
    return min(ARTIFACT_GRACE, retention_days * 86400)


def stored_artifacts(root: Path) -> Iterator[str]:
    """The digest of every artifact in a store (its ``tmp`` dir holds none)."""
    for shard in root.iterdir():
        if len(shard.name) != 2 or not shard.is_dir():
            continue
        for path in shard.iterdir():
            if _SHA256.match(path.name) and path.name.startswith(shard.name):
                yield path.name


def _ended_before(model: type[WorkflowExecution] | type[JobExecution],
                  cutoff: dt.datetime) -> Any:
    """Ended before ``cutoff``: by its end time, or its creation where no end was recorded."""
    return or_(col(model.completed_at) < cutoff,
               and_(col(model.completed_at).is_(None), col(model.created_at) < cutoff))


class Retention:
    def __init__(self, db: Database, store: ArtifactStore, *, retention_days: float,
                 sweep_seconds: float, in_use: Callable[[], set[str]],
                 forget_flow_runs: Callable[[list[str]], Awaitable[None]] | None = None) -> None:
        self.db = db
        self.store = store
        self.retention_days = retention_days
        self.sweep_seconds = sweep_seconds
        self.in_use = in_use
        self.forget_flow_runs = forget_flow_runs
        self._task: asyncio.Task[None] | None = None

    # -- the loop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(min(FIRST_SWEEP_DELAY, self.sweep_seconds))
        while True:
            try:
                report = await self.sweep()
                if report:
                    log.info("retention: deleted %d execution(s) and %d job(s) of other peers; "
                             "removed %d artifact(s), %d bytes", report.executions, report.jobs,
                             report.artifacts, report.artifact_bytes)
            except Exception:  # a sweep that fails is tried again at the next one
                log.exception("retention sweep failed")
            await asyncio.sleep(self.sweep_seconds)

    async def sweep(self, now: dt.datetime | None = None) -> SweepReport:
        """One sweep: old records first, then the artifacts they held."""
        report = SweepReport()
        if self.retention_days > 0:
            cutoff = (now or utcnow()) - dt.timedelta(days=self.retention_days)
            flow_runs = await asyncio.to_thread(self._delete_records, cutoff, report)
            if flow_runs and self.forget_flow_runs is not None:
                try:
                    await self.forget_flow_runs(flow_runs)
                except Exception as exc:  # Prefect down: its runs stay, ours are gone
                    log.warning("retention: flow runs not deleted from Prefect: %s", exc)
        keep = self.in_use()
        older_than = time.time() - artifact_grace(self.retention_days)
        await asyncio.to_thread(self._remove_artifacts, keep, older_than, report)
        return report

    # -- records -----------------------------------------------------------------------------
    def _delete_records(self, cutoff: dt.datetime, report: SweepReport) -> list[str]:
        """Delete what ended before ``cutoff``; returns the deleted executions' flow-run ids."""
        ended = col(WorkflowExecution.status).in_(list(TERMINAL))
        flow_runs: list[str] = []
        while True:
            with self.db.session() as s:
                rows = s.exec(select(WorkflowExecution.id, WorkflowExecution.prefect_flow_run_id)
                              .where(ended, _ended_before(WorkflowExecution, cutoff))
                              .limit(BATCH)).all()
                if not rows:
                    break
                ids = [r[0] for r in rows]
                s.exec(delete(WorkflowExecution)  # type: ignore[call-overload]
                       .where(col(WorkflowExecution.id).in_(ids)))
                s.commit()
            flow_runs.extend(r[1] for r in rows if r[1])
            report.executions += len(ids)
        with self.db.session() as s:
            # Jobs other peers ran here (no execution of ours): their records and outputs.
            result = s.exec(delete(JobExecution)  # type: ignore[call-overload]
                            .where(col(JobExecution.workflow_execution_id).is_(None),
                                   col(JobExecution.status).in_(list(TERMINAL)),
                                   _ended_before(JobExecution, cutoff)))
            s.commit()
            report.jobs = int(result.rowcount or 0)
        return flow_runs

    # -- artifacts ---------------------------------------------------------------------------
    def referenced(self) -> set[str]:
        with self.db.session() as s:
            return {h for h in s.exec(select(JobExecutionInterface.artifact_hash).distinct())
                    if h}

    def _remove_artifacts(self, in_use: set[str], older_than: float,
                          report: SweepReport) -> None:
        # Listed before the records are read: an artifact written after the listing is not
        # looked at, and one named by a record written meanwhile is kept.
        listed = list(stored_artifacts(self.store.root))
        keep = self.referenced() | in_use | self.store.ephemeral
        for digest in listed:
            if digest in keep:
                continue
            size = self.store.remove_if_older(digest, older_than)
            if size is not None:
                report.artifacts += 1
                report.artifact_bytes += size
