"""The execution lifecycle in our database: execution and job rows and their state changes.

Every change of state goes through ``states.check_transition``; the row is written first, then
the event (EXECUTION_UPDATED / JOB_UPDATED) is published from the same call. Running the jobs is
``flows``' business; this module only records what happens and answers what the plan is.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, func, insert, literal, update
from sqlmodel import col, select

from orchestrator.db import Database
from orchestrator.errors import Conflict, NotFound
from orchestrator.events import EventBus
from orchestrator.graph import (
    Defaults,
    EdgeSpec,
    InterfaceInfo,
    NodeSpec,
    Plan,
    ServiceInfo,
    compile_plan,
)
from orchestrator.models import (
    JobExecution,
    JobExecutionInterface,
    ServiceInterface,
    Workflow,
    WorkflowExecution,
    utcnow,
)
from orchestrator.registry import ServiceRegistry
from orchestrator.states import TERMINAL, TRANSITIONS, RunState, check_transition
from orchestrator.workflows import WorkflowStore

log = logging.getLogger("remote_network.engine")

EXECUTION_UPDATED = "EXECUTION_UPDATED"
JOB_UPDATED = "JOB_UPDATED"
JOB_LOG = "JOB_LOG"
INTERRUPTED = "interrupted: the node stopped while this execution was running"
# For each state, the states a job may move to it from.
_SOURCES: dict[RunState, list[str]] = {
    target: [str(src) for src, targets in TRANSITIONS.items() if target in targets]
    for target in RunState}
_JOBS = JobExecution.__table__  # type: ignore[attr-defined]
_EXECUTIONS = WorkflowExecution.__table__  # type: ignore[attr-defined]
_INTERFACES = JobExecutionInterface.__table__  # type: ignore[attr-defined]


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


def change_state(db: Database, table: Any, row_id: int, state: RunState, fields: dict[str, Any],
                 then: Callable[[Any, Any], Any] | None = None) -> tuple[Any, Any]:
    """Apply one state change to a row of ``table`` (jobs or executions) in its own transaction,
    and ``then`` (given the connection and the changed row) in the same one; the changed row
    and what ``then`` returned. NotFound for a missing row; IllegalTransition (or Conflict, when
    another change won) for a change the transition table does not allow."""
    params: dict[str, Any] = {f"v_{k}": v for k, v in fields.items()}
    params.update(row_id=row_id, now=utcnow())
    with db.engine.begin() as conn:
        statement = _transition_statement(table, state, tuple(sorted(fields)))
        changed = conn.execute(statement, params).first()
        if changed is None:
            current = conn.execute(select(table.c.status).where(table.c.id == row_id)).first()
            if current is None:
                raise NotFound("Job execution not found" if table is _JOBS
                               else "Workflow execution not found")
            check_transition(current.status, state)  # raises: the change is not allowed
            raise Conflict(f"{'Job' if table is _JOBS else 'Execution'} {row_id} "
                           "changed state meanwhile")
        extra = then(conn, changed) if then is not None else None
    return changed, extra


def change_job_state(db: Database, job_id: int, state: RunState, **fields: Any) -> JobExecution:
    """Move one job row to ``state`` (see ``change_state``); the row as it is afterwards."""
    changed, _ = change_state(db, _JOBS, job_id, state, fields)
    return JobExecution.model_construct(**changed._mapping)


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


class ExecutionEngine:
    def __init__(self, db: Database, bus: EventBus, *, workflows: WorkflowStore,
                 services: ServiceRegistry, own_peer_id: str, defaults: Defaults) -> None:
        self.db = db
        self.bus = bus
        self.workflows = workflows
        self.services = services
        self.own_peer_id = own_peer_id
        self.defaults = defaults
        # Known-peer check for remote workflow nodes; the network replaces it.
        self.is_known_peer: Callable[[str], bool] = lambda _peer: False
        # Executions this engine moved to a terminal state (the runner forgets them once their
        # flow has ended): lets it answer "finished?" for its own executions without a query.
        self.terminal: set[int] = set()
        self._lock = threading.Lock()

    # -- compile -------------------------------------------------------------------------------
    def _service_info(self, service_id: int) -> ServiceInfo | None:
        try:
            view = self.services.snapshot(service_id)
        except NotFound:
            return None
        ifaces = tuple(InterfaceInfo(int(i.id or 0), i.service_id, i.interface_type, i.path,
                                     i.mount_function) for i in view.interfaces)
        timeout = float(view.standalone.timeout_seconds) if view.standalone else None
        return ServiceInfo(int(view.service.id or 0), view.service.name,
                           view.service.service_type, ifaces, timeout)

    def _interface_info(self, interface_id: int) -> InterfaceInfo | None:
        with self.db.session() as s:
            i = s.get(ServiceInterface, interface_id)
            if i is None:
                return None
            return InterfaceInfo(int(i.id or 0), i.service_id, i.interface_type, i.path,
                                 i.mount_function)

    def compile(self, workflow_id: int) -> Plan:
        workflow = self.workflows.get(workflow_id)
        services: dict[int, ServiceInfo | None] = {}
        interfaces: dict[int, InterfaceInfo | None] = {}

        def service(service_id: int) -> ServiceInfo | None:
            if service_id not in services:
                services[service_id] = self._service_info(service_id)
            return services[service_id]

        def interface(interface_id: int) -> InterfaceInfo | None:
            if interface_id not in interfaces:
                # Mostly an interface of a service already read; else (a wrong id) the table.
                known = (i for info in services.values() if info for i in info.interfaces)
                interfaces[interface_id] = next((i for i in known if i.id == interface_id),
                                                None) or self._interface_info(interface_id)
            return interfaces[interface_id]

        nodes = [NodeSpec(int(n.id or 0), n.peer_id, n.service_id, n.service_name,
                          dict(n.config or {})) for n in self.workflows.nodes(workflow_id)]
        edges = [EdgeSpec(int(c.id or 0), c.source_node_id, c.target_node_id,
                          c.source_interface_id, c.target_interface_id)
                 for c in self.workflows.connections(workflow_id)]
        return compile_plan(workflow_id, workflow.name, nodes, edges,
                            own_peer_id=self.own_peer_id, service=service,
                            interface=interface, is_known_peer=self.is_known_peer,
                            defaults=self.defaults)

    # -- create ------------------------------------------------------------------------------
    def create_execution(self, workflow_id: int, *, trigger: str = "api"
                         ) -> tuple[WorkflowExecution, Plan]:
        """Compile and record a new PENDING execution with one PENDING job per plan node."""
        plan = self.compile(workflow_id)
        execution = WorkflowExecution(workflow_id=workflow_id, status=RunState.PENDING,
                                      plan=plan.to_dict(), trigger=trigger)
        with self.db.session() as s:
            s.add(execution)
            s.flush()
            now = utcnow()
            s.execute(insert(_JOBS), [
                {"workflow_execution_id": execution.id, "workflow_id": workflow_id,
                 "node_id": n.node_id, "service_id": n.service_id, "peer_id": n.peer_id,
                 "requester_peer_id": self.own_peer_id, "status": str(RunState.PENDING),
                 "attempt": 0, "created_at": now} for n in plan.nodes])
            s.commit()
            s.refresh(execution)
        self._publish_execution(execution)
        return execution, plan

    # -- read --------------------------------------------------------------------------------
    def execution(self, execution_id: int) -> WorkflowExecution:
        with self.db.session() as s:
            row = s.get(WorkflowExecution, execution_id)
            if row is None:
                raise NotFound("Workflow execution not found")
            return row

    def plan(self, execution_id: int) -> Plan:
        return Plan.from_dict(self.execution(execution_id).plan)

    def workflow_name(self, workflow_id: int) -> str:
        with self.db.session() as s:
            w = s.get(Workflow, workflow_id)
            return w.name if w else f"workflow-{workflow_id}"

    def jobs(self, execution_id: int) -> dict[int, JobExecution]:
        """The execution's jobs by workflow node id."""
        with self.db.session() as s:
            rows = s.exec(select(JobExecution)
                          .where(JobExecution.workflow_execution_id == execution_id)
                          .order_by(col(JobExecution.id)))
            return {int(j.node_id or 0): j for j in rows}

    def job(self, job_id: int) -> JobExecution:
        with self.db.session() as s:
            row = s.get(JobExecution, job_id)
            if row is None:
                raise NotFound("Job execution not found")
            return row

    def job_interface(self, job_id: int, row_id: int) -> JobExecutionInterface:
        with self.db.session() as s:
            row = s.get(JobExecutionInterface, row_id)
            if row is None or row.job_execution_id != job_id:
                raise NotFound("Job execution interface not found")
            return row

    # -- state changes -----------------------------------------------------------------------
    def set_execution(self, execution_id: int, state: RunState, *, error: str | None = None,
                      prefect_flow_run_id: str | None = None) -> None:
        """Move an execution to ``state`` (409 when it may not move there from where it is)."""
        fields = {k: v for k, v in (("error", error), ("prefect_flow_run_id", prefect_flow_run_id))
                  if v is not None}
        changed, _ = self._change(_EXECUTIONS, execution_id, state, fields)
        if state.is_terminal:
            self.terminal.add(execution_id)
        self._publish_execution(changed)

    def _change(self, table: Any, row_id: int, state: RunState, fields: dict[str, Any],
                    then: Callable[[Any, Any], Any] | None = None) -> tuple[Any, Any]:
        with self._lock:
            return change_state(self.db, table, row_id, state, fields, then)

    def set_prefect_flow_run(self, execution_id: int, flow_run_id: str) -> None:
        with self._lock, self.db.session() as s:
            row = s.get(WorkflowExecution, execution_id)
            if row is not None:
                row.prefect_flow_run_id = flow_run_id
                s.add(row)
                s.commit()

    def set_job(self, job_id: int, state: RunState, *,
                records: list[InterfaceRecord] | None = None, **fields: Any) -> JobExecution:
        """Move a job to ``state`` (fields: attempt, exit_code, error, prefect_task_run_id),
        recording its inputs and outputs (``records``) in the same transaction.

        Every job changes state at least twice on the path from one job to the next: one
        prepared statement guarded by the transition table, on a plain connection."""
        def then(conn: Any, changed: Any) -> dict[str, Any] | None:
            self._add_records(conn, job_id, records or [])
            if state.is_terminal and changed.workflow_execution_id is not None:
                return self._update_progress(conn, changed.workflow_execution_id)
            return None

        changed, progress = self._change(_JOBS, job_id, state, fields, then)
        row = JobExecution.model_construct(**changed._mapping)
        self._publish_job(row)
        if progress is not None and progress["status"] == RunState.RUNNING:
            self.bus.publish(EXECUTION_UPDATED, progress)
        return row

    @staticmethod
    def _update_progress(conn: Any, execution_id: int) -> dict[str, Any] | None:
        """Set the execution's progress from its jobs, in one statement; returns the
        EXECUTION_UPDATED payload (None when the execution is gone)."""
        row = conn.execute(_PROGRESS, {"execution_id": execution_id}).first()
        if row is None:
            return None
        return {"execution_id": execution_id, "workflow_id": row.workflow_id,
                "status": row.status, "progress": row.progress, "error": row.error}

    @staticmethod
    def _add_records(s: Any, job_id: int, records: list[InterfaceRecord]) -> None:
        if not records:
            return
        s.execute(insert(_INTERFACES), [
            {"job_execution_id": job_id, "interface_id": r.interface_id,
             "interface_type": r.interface_type, "direction": r.direction, "path": r.path,
             "value": r.value, "artifact_hash": r.artifact_hash, "size": r.size}
            for r in records])

    def record_interfaces(self, job_id: int, records: list[InterfaceRecord]) -> None:
        with self.db.session() as s:
            self._add_records(s, job_id, records)
            s.commit()

    def cancel(self, execution_id: int) -> list[JobExecution]:
        """Mark the execution and its unfinished jobs CANCELLED; returns the jobs that were
        RUNNING (their processes are for the caller to stop). 409 when already finished."""
        with self._lock, self.db.session() as s:
            row = s.get(WorkflowExecution, execution_id)
            if row is None:
                raise NotFound("Workflow execution not found")
            if RunState(row.status).is_terminal:
                raise Conflict(f"Execution {execution_id} already finished ({row.status})")
        running = [j for j in self.jobs(execution_id).values() if j.status == RunState.RUNNING]
        self.set_execution(execution_id, RunState.CANCELLED, error="cancelled")
        for job in self.jobs(execution_id).values():
            if not RunState(job.status).is_terminal:
                self.set_job(int(job.id or 0), RunState.CANCELLED, error="cancelled")
        return running

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

    def recover_interrupted(self) -> int:
        """Executions left RUNNING or PENDING by a node that died: FAILED ("interrupted")."""
        unfinished = (RunState.PENDING, RunState.RUNNING)
        with self.db.session() as s:
            ids = [e.id for e in s.exec(select(WorkflowExecution)
                                        .where(col(WorkflowExecution.status).in_(unfinished)))]
            job_ids = [j.id for j in s.exec(select(JobExecution)
                                            .where(col(JobExecution.status).in_(unfinished)))]
        for job_id in job_ids:
            self.set_job(int(job_id or 0), RunState.FAILED, error=INTERRUPTED)
        for execution_id in ids:
            self.set_execution(int(execution_id or 0), RunState.FAILED, error=INTERRUPTED)
            self.terminal.discard(int(execution_id or 0))
        if ids:
            log.warning("marked %d interrupted execution(s) FAILED", len(ids))
        return len(ids)

    # -- events ------------------------------------------------------------------------------
    def _publish_execution(self, e: Any) -> None:
        """EXECUTION_UPDATED for an execution (a row, or the columns a state change returns)."""
        self.bus.publish(EXECUTION_UPDATED, {
            "execution_id": e.id, "workflow_id": e.workflow_id, "status": e.status,
            "progress": e.progress, "error": e.error})

    def _publish_job(self, j: JobExecution) -> None:
        self.bus.publish(JOB_UPDATED, {
            "job_id": j.id, "execution_id": j.workflow_execution_id, "node_id": j.node_id,
            "workflow_id": j.workflow_id, "status": j.status, "attempt": j.attempt,
            "exit_code": j.exit_code, "error": j.error})

    def publish_log(self, job: JobExecution, stream: str, line: str) -> None:
        self.bus.publish(JOB_LOG, {"job_id": job.id, "execution_id": job.workflow_execution_id,
                                   "node_id": job.node_id, "stream": stream, "line": line})
