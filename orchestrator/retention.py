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

The records are deleted by the ``ExecutionStore`` (``delete_ended_before``), their only writer;
how old an artifact must be is ``artifact_grace``; ``Retention`` runs the sweeps.
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

from executors.artifacts import ArtifactStore
from executors.base import utcnow
from orchestrator.background import cancel_and_wait
from orchestrator.execution_store import ExecutionStore

log = logging.getLogger("remote_network.retention")

FIRST_SWEEP_DELAY = 60.0
ARTIFACT_GRACE = 3600.0
# Executions deleted per transaction, so a first sweep of a long history holds no long lock.
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


class Retention:
    def __init__(self, records: ExecutionStore, store: ArtifactStore, *, retention_days: float,
                 sweep_seconds: float, in_use: Callable[[], set[str]],
                 forget_flow_runs: Callable[[list[str]], Awaitable[None]] | None = None) -> None:
        self.records = records
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
        deleted = self.records.delete_ended_before(cutoff)
        report.executions += deleted.executions
        report.jobs = deleted.remote_jobs
        return deleted.flow_run_ids

    # -- artifacts ---------------------------------------------------------------------------
    def referenced(self) -> set[str]:
        return self.records.referenced_artifacts()

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
