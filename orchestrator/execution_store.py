"""The records of executions: the only reader and writer of workflow executions, jobs (local and
those other peers run here) and job interfaces.

Every change of state goes through ``states.check_transition``, as one guarded UPDATE; the row is
written first, then its event (``EXECUTION_UPDATED`` / ``JOB_UPDATED``, see ``orchestrator.events``)
is published from the same call. What runs the jobs is the business of ``flows.executions``; this
module records what happens, answers what the plan was, and forgets what retention says is old.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, literal, or_, update
from sqlmodel import Session, col, select

from orchestrator.db import Database
from orchestrator.errors import Conflict, NotFound
from orchestrator.events import EXECUTION_UPDATED, JOB_LOG, JOB_UPDATED, EventBus
from orchestrator.graph import Plan
from orchestrator.models import (
    JobExecution,
    JobExecutionInterface,
    Workflow,
    WorkflowExecution,
    utcnow,
)
from orchestrator.states import TERMINAL, TRANSITIONS, RunState, check_transition

log = logging.getLogger("remote_network.executions")

INTERRUPTED = "interrupted: the node stopped while this execution was running"
# Rows deleted per transaction by ``delete_ended_before``.
DELETE_BATCH = 500
# For each state, the states a row may move to it from.
_SOURCES: dict[RunState, list[str]] = {
    target: [str(src) for src, targets in TRANSITIONS.items() if target in targets]
    for target in RunState}
_JOBS = JobExecution.__table__  # type: ignore[attr-defined]
_EXECUTIONS = WorkflowExecution.__table__  # type: ignore[attr-defined]
_INTERFACES = JobExecutionInterface.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class InterfaceRecord:
    """One input or output of a job, as recorded in job_execution_interfaces."""

    interface_type: str
    direction: str
    interface_id: int | None = None
    path: str = ""
    value: str | None = None
    artifact_hash: str = ""
    size: int = 0
    delivered_as: str | None = None  # an output delivered to the requesting node, as this name


@functools.cache
def _transition_statement(table: Any, state: RunState, keys: tuple[str, ...]) -> Any:
    """The UPDATE that moves row ``row_id`` of ``table`` (jobs or executions) to ``state``, only
    from a state allowed to move there, setting the columns ``keys`` from parameters
    ``v_<key>`` and the time columns from ``now``; it returns the row as it is afterwards.
    Built once for each shape."""
    values: dict[str, Any] = {k: bindparam(f"v_{k}", type_=table.c[k].type) for k in keys}
    values["status"] = str(state)
    now = bindparam("now", type_=table.c.started_at.type)
    if state is RunState.RUNNING:
        values["started_at"] = func.coalesce(table.c.started_at, now)
    if state.is_terminal:
        values["completed_at"] = now
    if table is _EXECUTIONS and state is RunState.COMPLETED:
        values["progress"] = 100
    returned = (table.c if table is _JOBS else
                (table.c.id, table.c.workflow_id, table.c.status, table.c.progress,
                 table.c.error))
    return (update(table)
            .where(table.c.id == bindparam("row_id"),
                   table.c.status.in_([literal(s) for s in _SOURCES[state]]))
            .values(**values).returning(*returned))


def _progress_statement() -> Any:
    """Sets an execution's progress (the share of its jobs that have ended) in one statement."""
    done = func.sum(case((_JOBS.c.status.in_([str(t) for t in TERMINAL]), 1), else_=0))
    percent = (select(func.coalesce(100 * done / func.count(), 0))
               .where(_JOBS.c.workflow_execution_id == bindparam("execution_id"))
               .scalar_subquery())
    return (update(_EXECUTIONS).where(_EXECUTIONS.c.id == bindparam("execution_id"))
            .values(progress=percent)
            .returning(_EXECUTIONS.c.workflow_id, _EXECUTIONS.c.status,
                       _EXECUTIONS.c.progress, _EXECUTIONS.c.error))


_PROGRESS = _progress_statement()


def _ended_before(model: type[WorkflowExecution] | type[JobExecution],
                  cutoff: dt.datetime) -> Any:
    """Ended before ``cutoff``: by its end time, or its creation where no end was recorded."""
    return or_(col(model.completed_at) < cutoff,
               and_(col(model.completed_at).is_(None), col(model.created_at) < cutoff))


@dataclass(frozen=True, slots=True)
class Deleted:
    """What ``delete_ended_before`` removed."""

    executions: int
    remote_jobs: int
    flow_run_ids: list[str]


class ExecutionStore:
    def __init__(self, db: Database, bus: EventBus, *, own_peer_id: str) -> None:
        self.db = db
        self.bus = bus
        self.own_peer_id = own_peer_id
        # One state change at a time: a cancel and a job's end do not interleave their reads.
        self._lock = threading.Lock()
        # Executions this store moved to a terminal state, until ``forget``: answers "ended?"
        # for the executions running in this process without a query.
        self._ended: set[int] = set()

    # -- executions ----------------------------------------------------------------------------
    def create_execution(self, plan: Plan, *, trigger: str,
                         resumed_from: int | None = None) -> WorkflowExecution:
        """Record a new PENDING execution of ``plan`` with one PENDING job per plan node
        (``resumed_from``: the execution it carries on from)."""
        execution = WorkflowExecution(workflow_id=plan.workflow_id, status=RunState.PENDING,
                                      plan=plan.to_dict(), trigger=trigger,
                                      resumed_from=resumed_from)
        with self.db.session() as s:
            s.add(execution)
            s.flush()
            now = utcnow()
            s.execute(insert(_JOBS), [
                {"workflow_execution_id": execution.id, "workflow_id": plan.workflow_id,
                 "node_id": n.node_id, "service_id": n.service_id, "peer_id": n.peer_id,
                 "requester_peer_id": self.own_peer_id, "status": str(RunState.PENDING),
                 "attempt": 0, "created_at": now} for n in plan.nodes])
            s.commit()
            s.refresh(execution)
        self._publish_execution(execution)
        return execution

    def execution(self, execution_id: int) -> WorkflowExecution:
        with self.db.session() as s:
            row = s.get(WorkflowExecution, execution_id)
            if row is None:
                raise NotFound("Workflow execution not found")
            return row

    def plan(self, execution_id: int) -> Plan:
        return Plan.from_dict(self.execution(execution_id).plan)

    def status(self, execution_id: int) -> RunState:
        """The execution's state (read alone: cheaper than the whole row with its plan)."""
        with self.db.session() as s:
            status = s.exec(select(WorkflowExecution.status)
                            .where(WorkflowExecution.id == execution_id)).first()
        if status is None:
            raise NotFound("Workflow execution not found")
        return RunState(status)

    def is_finished(self, execution_id: int) -> bool:
        return self.status(execution_id).is_terminal

    def ended_here(self, execution_id: int) -> bool:
        """Whether this store ended the execution (no query; see ``forget``)."""
        return execution_id in self._ended

    def forget(self, execution_id: int) -> None:
        """The execution's run in this process is over: ``ended_here`` no longer needs it."""
        self._ended.discard(execution_id)

    def for_workflow(self, workflow_id: int) -> list[WorkflowExecution]:
        with self.db.session() as s:
            _require_workflow(s, workflow_id)
            return list(s.exec(select(WorkflowExecution)
                               .where(WorkflowExecution.workflow_id == workflow_id)
                               .order_by(col(WorkflowExecution.id))))

    def latest_statuses(self) -> dict[int, str]:
        """The status of each workflow's most recent execution, by workflow id (one query)."""
        latest = (select(func.max(WorkflowExecution.id))
                  .group_by(col(WorkflowExecution.workflow_id)).scalar_subquery())
        with self.db.session() as s:
            rows = s.exec(select(WorkflowExecution.workflow_id, WorkflowExecution.status)
                          .where(col(WorkflowExecution.id).in_(latest)))
            return {int(w): str(status) for w, status in rows}

    def set_execution(self, execution_id: int, state: RunState, *, error: str | None = None,
                      prefect_flow_run_id: str | None = None) -> None:
        """Move an execution to ``state`` (409 when it may not move there from where it is)."""
        fields = {k: v for k, v in (("error", error), ("prefect_flow_run_id", prefect_flow_run_id))
                  if v is not None}
        changed, _ = self._change(_EXECUTIONS, execution_id, state, fields)
        if state.is_terminal:
            self._ended.add(execution_id)
        self._publish_execution(changed)

    def cancel(self, execution_id: int) -> None:
        """Mark the execution and its unfinished jobs CANCELLED (409 when already finished);
        stopping what runs is for the caller."""
        state = self.status(execution_id)
        if state.is_terminal:
            raise Conflict(f"Execution {execution_id} already finished ({state})")
        self.set_execution(execution_id, RunState.CANCELLED, error="cancelled")
        for job in self.jobs(execution_id).values():
            if not RunState(job.status).is_terminal:
                with contextlib.suppress(Conflict, NotFound):  # another change won meanwhile
                    self.set_job(int(job.id or 0), RunState.CANCELLED, error="cancelled")

    def recover_interrupted(self) -> int:
        """Executions and jobs left RUNNING or PENDING by a node that died: FAILED
        ("interrupted"). Returns how many executions."""
        unfinished = (RunState.PENDING, RunState.RUNNING)
        with self.db.session() as s:
            ids = [e for e in s.exec(select(WorkflowExecution.id)
                                     .where(col(WorkflowExecution.status).in_(unfinished)))]
            job_ids = [j for j in s.exec(select(JobExecution.id)
                                         .where(col(JobExecution.status).in_(unfinished)))]
        for job_id in job_ids:
            self.set_job(int(job_id or 0), RunState.FAILED, error=INTERRUPTED)
        for execution_id in ids:
            self.set_execution(int(execution_id or 0), RunState.FAILED, error=INTERRUPTED)
            self.forget(int(execution_id or 0))
        if ids:
            log.warning("marked %d interrupted execution(s) FAILED", len(ids))
        return len(ids)

    # -- jobs ----------------------------------------------------------------------------------
    def jobs(self, execution_id: int) -> dict[int, JobExecution]:
        """The execution's jobs by workflow node id (NotFound when there is no execution)."""
        return {int(j.node_id or 0): j for j in self.job_list(execution_id)}

    def job_list(self, execution_id: int) -> list[JobExecution]:
        """The execution's jobs in the order they were recorded."""
        with self.db.session() as s:
            if s.get(WorkflowExecution, execution_id) is None:
                raise NotFound("Workflow execution not found")
            return list(s.exec(select(JobExecution)
                               .where(JobExecution.workflow_execution_id == execution_id)
                               .order_by(col(JobExecution.id))))

    def jobs_for_workflow(self, workflow_id: int) -> list[JobExecution]:
        with self.db.session() as s:
            _require_workflow(s, workflow_id)
            return list(s.exec(select(JobExecution)
                               .where(JobExecution.workflow_id == workflow_id)
                               .order_by(col(JobExecution.id))))

    def resumed_by(self, execution_id: int) -> list[int]:
        """The executions that carry on from ``execution_id``, oldest first."""
        with self.db.session() as s:
            return [int(i) for i in s.exec(
                select(WorkflowExecution.id).where(
                    WorkflowExecution.resumed_from == execution_id)
                .order_by(col(WorkflowExecution.id)))]

    def receipts(self, execution_id: int) -> list[JobExecution]:
        """The execution's jobs that hold a receipt, in the order they completed (an upstream
        job before the jobs that read it: the chain's order)."""
        return sorted((j for j in self.job_list(execution_id) if j.receipt is not None),
                      key=lambda j: (j.completed_at or j.created_at, j.id or 0))

    def completed_with_key(self, job_key: str, *, limit: int = 8) -> list[JobExecution]:
        """Completed jobs of ``job_key`` that hold a receipt, newest first."""
        with self.db.session() as s:
            return list(s.exec(
                select(JobExecution).where(JobExecution.job_key == job_key,
                                           JobExecution.status == RunState.COMPLETED,
                                           JobExecution.receipt_digest != "")
                .order_by(col(JobExecution.id).desc()).limit(limit)))

    def job(self, job_id: int) -> JobExecution:
        with self.db.session() as s:
            row = s.get(JobExecution, job_id)
            if row is None:
                raise NotFound("Job execution not found")
            return row

    def new_remote_job(self, service_id: int, requester_peer_id: str) -> int:
        """A PENDING job another peer asked this node to run (no execution of ours)."""
        fresh = JobExecution(service_id=service_id, peer_id=self.own_peer_id,
                             requester_peer_id=requester_peer_id, status=RunState.PENDING)
        # One INSERT ... RETURNING on a plain connection: no ORM flush and refresh per job.
        with self._lock, self.db.engine.begin() as conn:
            made = conn.execute(insert(_JOBS).values(**fresh.model_dump(exclude={"id"}))
                                .returning(*_JOBS.c)).one()
        row = JobExecution.model_construct(**made._mapping)
        self._publish_job(row)
        return int(row.id or 0)

    def set_job(self, job_id: int, state: RunState, *,
                records: Iterable[InterfaceRecord] = (), **fields: Any) -> JobExecution:
        """Move a job to ``state`` (fields: attempt, exit_code, error, prefect_task_run_id),
        recording its inputs and outputs (``records``) in the same transaction.

        Every job changes state at least twice on the path from one job to the next: one
        prepared statement guarded by the transition table, on a plain connection."""
        rows = list(records)

        def then(conn: Any, changed: Any) -> dict[str, Any] | None:
            _add_records(conn, job_id, rows)
            if state.is_terminal and changed.workflow_execution_id is not None:
                return _update_progress(conn, changed.workflow_execution_id)
            return None

        changed, progress = self._change(_JOBS, job_id, state, fields, then)
        row = JobExecution.model_construct(**changed._mapping)
        self._publish_job(row)
        if progress is not None and progress["status"] == RunState.RUNNING:
            self.bus.publish(EXECUTION_UPDATED, progress)
        return row

    def close_job(self, job_id: int, state: RunState, error: str) -> None:
        """End a job that has not ended yet (nothing when it has)."""
        with contextlib.suppress(Conflict, NotFound):  # another change won meanwhile
            if not RunState(self.job(job_id).status).is_terminal:
                self.set_job(job_id, state, error=error)

    def record_interfaces(self, job_id: int, records: Iterable[InterfaceRecord]) -> None:
        with self.db.session() as s:
            _add_records(s, job_id, list(records))
            s.commit()

    def job_interfaces(self, job_id: int) -> list[JobExecutionInterface]:
        with self.db.session() as s:
            if s.get(JobExecution, job_id) is None:
                raise NotFound("Job execution not found")
            return list(s.exec(select(JobExecutionInterface)
                               .where(JobExecutionInterface.job_execution_id == job_id)
                               .order_by(col(JobExecutionInterface.id))))

    def delivered(self, execution_id: int) -> list[tuple[JobExecution, JobExecutionInterface]]:
        """The outputs of the execution's jobs delivered to this node, with their jobs, in
        the order they were recorded."""
        with self.db.session() as s:
            return [(job, row) for job, row in s.exec(
                select(JobExecution, JobExecutionInterface)
                .join(JobExecutionInterface,
                      col(JobExecutionInterface.job_execution_id) == col(JobExecution.id))
                .where(JobExecution.workflow_execution_id == execution_id,
                       col(JobExecutionInterface.delivered_as).is_not(None))
                .order_by(col(JobExecutionInterface.id)))]

    def job_interface(self, job_id: int, row_id: int) -> JobExecutionInterface:
        with self.db.session() as s:
            row = s.get(JobExecutionInterface, row_id)
            if row is None or row.job_execution_id != job_id:
                raise NotFound("Job execution interface not found")
            return row

    def publish_log(self, job: JobExecution, stream: str, line: str) -> None:
        self.bus.publish(JOB_LOG, {"job_id": job.id, "execution_id": job.workflow_execution_id,
                                   "node_id": job.node_id, "stream": stream, "line": line})

    # -- retention -----------------------------------------------------------------------------
    def delete_ended_before(self, cutoff: dt.datetime) -> Deleted:
        """Delete the executions (with their jobs and interfaces) and the other peers' jobs that
        ended before ``cutoff``, in batches; the deleted executions' flow-run ids come back."""
        ended = col(WorkflowExecution.status).in_(list(TERMINAL))
        flow_runs: list[str] = []
        executions = 0
        while True:
            with self.db.session() as s:
                rows = s.exec(select(WorkflowExecution.id, WorkflowExecution.prefect_flow_run_id)
                              .where(ended, _ended_before(WorkflowExecution, cutoff))
                              .limit(DELETE_BATCH)).all()
                if not rows:
                    break
                ids = [r[0] for r in rows]
                s.exec(delete(WorkflowExecution)  # type: ignore[call-overload]
                       .where(col(WorkflowExecution.id).in_(ids)))
                s.commit()
            flow_runs.extend(r[1] for r in rows if r[1])
            executions += len(ids)
        with self.db.session() as s:
            result = s.exec(delete(JobExecution)  # type: ignore[call-overload]
                            .where(col(JobExecution.workflow_execution_id).is_(None),
                                   col(JobExecution.status).in_(list(TERMINAL)),
                                   _ended_before(JobExecution, cutoff)))
            s.commit()
        return Deleted(executions, int(result.rowcount or 0), flow_runs)

    def referenced_artifacts(self) -> set[str]:
        """Every artifact digest a job record names."""
        with self.db.session() as s:
            return {h for h in s.exec(select(JobExecutionInterface.artifact_hash).distinct())
                    if h}

    # -- internals -----------------------------------------------------------------------------
    def _change(self, table: Any, row_id: int, state: RunState, fields: dict[str, Any],
                then: Callable[[Any, Any], Any] | None = None) -> tuple[Any, Any]:
        """Apply one state change to a row of ``table`` in its own transaction, and ``then``
        (given the connection and the changed row) in the same one. NotFound for a missing
        row; IllegalTransition (or Conflict, when another change won) for a change the
        transition table does not allow."""
        params: dict[str, Any] = {f"v_{k}": v for k, v in fields.items()}
        params.update(row_id=row_id, now=utcnow())
        with self._lock, self.db.engine.begin() as conn:
            statement = _transition_statement(table, state, tuple(sorted(fields)))
            changed = conn.execute(statement, params).first()
            if changed is None:
                current = conn.execute(select(table.c.status)
                                       .where(table.c.id == row_id)).first()
                if current is None:
                    raise NotFound("Job execution not found" if table is _JOBS
                                   else "Workflow execution not found")
                check_transition(current.status, state)  # raises: the change is not allowed
                raise Conflict(f"{'Job' if table is _JOBS else 'Execution'} {row_id} "
                               "changed state meanwhile")
            extra = then(conn, changed) if then is not None else None
        return changed, extra

    def _publish_execution(self, e: Any) -> None:
        """EXECUTION_UPDATED for an execution (a row, or the columns a state change returns)."""
        self.bus.publish(EXECUTION_UPDATED, {
            "execution_id": e.id, "workflow_id": e.workflow_id, "status": e.status,
            "progress": e.progress, "error": e.error})

    def _publish_job(self, j: JobExecution) -> None:
        payload = {"job_id": j.id, "execution_id": j.workflow_execution_id,
                   "node_id": j.node_id, "workflow_id": j.workflow_id, "status": j.status,
                   "attempt": j.attempt, "exit_code": j.exit_code, "error": j.error}
        if j.workflow_execution_id is None:  # another peer's job: say whose
            payload["requester_peer_id"] = j.requester_peer_id
        self.bus.publish(JOB_UPDATED, payload)


def _update_progress(conn: Any, execution_id: int) -> dict[str, Any] | None:
    """Set the execution's progress from its jobs, in one statement; returns the
    EXECUTION_UPDATED payload (None when the execution is gone)."""
    row = conn.execute(_PROGRESS, {"execution_id": execution_id}).first()
    if row is None:
        return None
    return {"execution_id": execution_id, "workflow_id": row.workflow_id,
            "status": row.status, "progress": row.progress, "error": row.error}


def _add_records(s: Any, job_id: int, records: list[InterfaceRecord]) -> None:
    if not records:
        return
    s.execute(insert(_INTERFACES), [
        {"job_execution_id": job_id, "interface_id": r.interface_id,
         "interface_type": r.interface_type, "direction": r.direction, "path": r.path,
         "value": r.value, "artifact_hash": r.artifact_hash, "size": r.size,
         "delivered_as": r.delivered_as}
        for r in records])


def _require_workflow(s: Session, workflow_id: int) -> Workflow:
    workflow = s.get(Workflow, workflow_id)
    if workflow is None:
        raise NotFound("Workflow not found")
    return workflow
