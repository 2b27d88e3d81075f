"""The retention sweep on a real database (SQLite, migrated) and a real artifact store."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from executors.artifacts import ArtifactStore
from executors.base import utcnow
from orchestrator.db import Database
from orchestrator.events import EventBus
from orchestrator.execution_store import ExecutionStore
from orchestrator.models import JobExecution, JobExecutionInterface, Workflow, WorkflowExecution
from orchestrator.retention import Retention, artifact_grace

NOW = utcnow()
LONG_AGO = NOW - dt.timedelta(days=40)
YESTERDAY = NOW - dt.timedelta(days=1)
HOURS_AGO = time.time() - 3 * 3600
FLOW_RUN = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def aged(store: ArtifactStore, data: bytes, when: float = HOURS_AGO) -> str:
    """An artifact of ``data`` last written at ``when``."""
    digest = store.put_bytes(data).sha256
    os.utime(store.path(digest), (when, when))
    return digest


def job_with_output(db: Database, job: JobExecution, output: str) -> int:
    """Record ``job`` with one STDOUT output, the artifact ``output``; returns its id."""
    with db.session() as s:
        s.add(job)
        s.commit()
        s.add(JobExecutionInterface(job_execution_id=int(job.id or 0), interface_type="STDOUT",
                                    artifact_hash=output, size=1))
        s.commit()
        return int(job.id or 0)


def execution(db: Database, workflow_id: int, status: str, completed: dt.datetime | None,
              output: str, flow_run: str) -> int:
    """An execution with one job whose STDOUT is the artifact ``output``."""
    with db.session() as s:
        row = WorkflowExecution(workflow_id=workflow_id, status=status, completed_at=completed,
                                prefect_flow_run_id=flow_run)
        s.add(row)
        s.commit()
    job_with_output(db, JobExecution(workflow_execution_id=row.id, workflow_id=workflow_id,
                                     status=status, completed_at=completed), output)
    return int(row.id or 0)


def peer_job(db: Database, completed: dt.datetime, output: str) -> int:
    """A job another peer ran here (no execution of ours)."""
    return job_with_output(db, JobExecution(status="COMPLETED", completed_at=completed,
                                            requester_peer_id="ab"), output)


def records(db: Database) -> ExecutionStore:
    return ExecutionStore(db, EventBus(), own_peer_id="")


def ids(db: Database, model: type) -> set[int]:
    with db.session() as s:
        return {int(r.id) for r in s.exec(select(model))}


async def test_old_records_and_the_outputs_only_they_held_go(db: Database,
                                                             store: ArtifactStore) -> None:
    with db.session() as s:
        wf = Workflow(name="w")
        s.add(wf)
        s.commit()
        wf_id = int(wf.id or 0)
    old_out, new_out, running_out, peer_old_out, peer_new_out = (
        aged(store, f"output {i}".encode()) for i in range(5))
    shared = aged(store, b"shared by an old and a new execution")
    in_use = aged(store, b"read by a running job, named by no record yet")
    fresh = aged(store, b"just written, its record not yet", time.time())
    stored_again = aged(store, b"stored again by a job now")
    store.put_bytes(b"stored again by a job now")  # the same bytes: written now

    old = execution(db, wf_id, "COMPLETED", LONG_AGO, old_out, FLOW_RUN)
    old_failed = execution(db, wf_id, "FAILED", LONG_AGO, shared, "")
    recent = execution(db, wf_id, "COMPLETED", YESTERDAY, new_out, "")
    still_running = execution(db, wf_id, "RUNNING", None, running_out, "")
    no_end = execution(db, wf_id, "FAILED", None, old_out, "")  # created now, no end time
    with db.session() as s:
        row = s.get(WorkflowExecution, no_end)
        assert row is not None
        row.created_at = LONG_AGO  # an interrupted one from long ago
        s.add(row)
        s.commit()
    recent_shared = execution(db, wf_id, "CANCELLED", YESTERDAY, shared, "")
    peer_old, peer_new = peer_job(db, LONG_AGO, peer_old_out), peer_job(db, YESTERDAY,
                                                                         peer_new_out)
    forgotten: list[list[str]] = []

    async def forget(flow_runs: list[str]) -> None:
        forgotten.append(flow_runs)

    retention = Retention(records(db), store, retention_days=30, sweep_seconds=3600,
                          in_use=lambda: {in_use}, forget_flow_runs=forget)
    report = await retention.sweep(NOW)

    assert ids(db, WorkflowExecution) == {recent, still_running, recent_shared}
    assert old not in ids(db, WorkflowExecution) and old_failed not in ids(db, WorkflowExecution)
    jobs = ids(db, JobExecution)
    assert peer_new in jobs and peer_old not in jobs
    with db.session() as s:  # the deleted jobs' records went with them
        named = {r.artifact_hash for r in s.exec(select(JobExecutionInterface))}
    assert named == {new_out, running_out, shared, peer_new_out}
    assert forgotten == [[FLOW_RUN]]
    gone = {old_out, peer_old_out}
    for digest in (new_out, running_out, peer_new_out, shared, in_use, fresh, stored_again):
        assert store.has(digest), digest
    for digest in gone:
        assert not store.has(digest), digest
    assert no_end not in ids(db, WorkflowExecution)
    assert (report.executions, report.jobs, report.artifacts) == (3, 1, 2)
    assert report.artifact_bytes == sum(len(f"output {i}".encode()) for i in (0, 3))
    # A second sweep finds nothing more.
    assert not await retention.sweep(NOW)


async def test_zero_days_keeps_records_but_still_frees_unreferenced_outputs(
        db: Database, store: ArtifactStore) -> None:
    with db.session() as s:
        wf = Workflow(name="w")
        s.add(wf)
        s.commit()
        wf_id = int(wf.id or 0)
    kept = aged(store, b"an output of an execution from long ago")
    orphan = aged(store, b"an output of a deleted workflow's execution")
    execution(db, wf_id, "COMPLETED", LONG_AGO, kept, "")
    retention = Retention(records(db), store, retention_days=0, sweep_seconds=3600,
                          in_use=set)
    report = await retention.sweep(NOW)
    assert len(ids(db, WorkflowExecution)) == 1
    assert store.has(kept) and not store.has(orphan)
    assert (report.executions, report.artifacts) == (0, 1)


def test_artifact_grace_is_an_hour_or_the_retention_period() -> None:
    assert artifact_grace(0) == 3600
    assert artifact_grace(30) == 3600
    assert artifact_grace(0.01) == pytest.approx(864)
