"""ExecutionStore's state changes, as prepared statements, on SQLite (and on PostgreSQL from
``test_postgres_database.py``, which calls ``exercise_state_changes`` with its database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from orchestrator.db import Database
from orchestrator.errors import NotFound
from orchestrator.events import EXECUTION_UPDATED, JOB_UPDATED, EventBus
from orchestrator.execution_store import ExecutionStore, InterfaceRecord
from orchestrator.graph import Defaults
from orchestrator.models import JobExecutionInterface, StandaloneDetails
from orchestrator.plan_compiler import PlanCompiler
from orchestrator.registry import ServiceRegistry
from orchestrator.states import IllegalTransition, InterfaceType, RunState, ServiceType
from orchestrator.wiring import Interface
from orchestrator.workflows import WorkflowStore

PEER = "a" * 40


class Recorder(EventBus):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict]] = []

    def publish(self, type_: str, payload: dict | None = None) -> None:  # type: ignore[override]
        self.seen.append((type_, dict(payload or {})))
        super().publish(type_, payload)


def exercise_state_changes(db: Database) -> None:
    bus = Recorder()
    registry = ServiceRegistry(db, bus)
    svc = registry.create(name="cat", service_type=ServiceType.STANDALONE,
                          interfaces=[Interface(InterfaceType.STDIN),
                                      Interface(InterfaceType.STDOUT)],
                          details=StandaloneDetails(executable_path="/bin/cat"))
    sid = int(svc.service.id or 0)
    stdin, stdout = (int(i.id or 0) for i in svc.interfaces)
    store = WorkflowStore(db, bus, own_peer_id=PEER, services=registry)
    wf = int(store.create("two").id or 0)
    a = store.add_node(wf, service_id=sid)
    b = store.add_node(wf, service_id=sid)
    store.add_connection(wf, {"source_node_id": a.id, "source_interface_id": stdout,
                              "target_node_id": b.id, "target_interface_id": stdin})
    compiler = PlanCompiler(store, registry, own_peer_id=PEER, defaults=Defaults(),
                            is_known_peer=lambda _peer: False)
    engine = ExecutionStore(db, bus, own_peer_id=PEER)

    plan = compiler.compile(wf)
    execution = engine.create_execution(plan, trigger="api")
    eid = int(execution.id or 0)
    assert [n.node_id for n in plan.nodes] == [a.id, b.id]
    jobs = engine.jobs(eid)
    assert {j.status for j in jobs.values()} == {"PENDING"}
    assert all(j.created_at is not None and j.requester_peer_id == PEER for j in jobs.values())

    engine.set_execution(eid, RunState.RUNNING, prefect_flow_run_id="flow-run-1")
    first, second = int(jobs[a.id].id or 0), int(jobs[b.id].id or 0)
    running = engine.set_job(first, RunState.RUNNING, attempt=1, prefect_task_run_id="task-1")
    assert running.status == "RUNNING" and running.attempt == 1 and running.started_at
    started = running.started_at
    # A retry keeps the first start time.
    again = engine.set_job(first, RunState.RUNNING, attempt=2, error=None)
    assert again.started_at == started and again.attempt == 2

    done = engine.set_job(first, RunState.COMPLETED, exit_code=0, records=[
        InterfaceRecord("STDOUT", "output", interface_id=stdout, value="hi\n",
                        artifact_hash="0" * 64, size=3)])
    assert done.status == "COMPLETED" and done.exit_code == 0 and done.completed_at
    assert engine.execution(eid).progress == 50
    with db.session() as session:
        recorded = session.exec(select(JobExecutionInterface)
                                .where(JobExecutionInterface.job_execution_id == first)).all()
    assert [(r.interface_type, r.value, r.size) for r in recorded] == [("STDOUT", "hi\n", 3)]

    with pytest.raises(IllegalTransition):
        engine.set_job(first, RunState.RUNNING)
    with pytest.raises(NotFound):
        engine.set_job(10_000, RunState.RUNNING)

    engine.set_job(second, RunState.RUNNING, attempt=1)
    engine.set_job(second, RunState.FAILED, exit_code=3, error="exit code 3")
    engine.set_execution(eid, RunState.FAILED, error="node b failed")
    row = engine.execution(eid)
    assert (row.status, row.error, row.prefect_flow_run_id) == ("FAILED", "node b failed",
                                                                "flow-run-1")
    assert row.started_at and row.completed_at and engine.ended_here(eid)
    with pytest.raises(IllegalTransition):
        engine.set_execution(eid, RunState.COMPLETED)

    executions = [p for t, p in bus.seen if t == EXECUTION_UPDATED and p["execution_id"] == eid]
    # Created, started, then progress after each job ended, then the end.
    assert [(p["status"], p["progress"]) for p in executions] == [
        ("PENDING", 0), ("RUNNING", 0), ("RUNNING", 50), ("RUNNING", 100), ("FAILED", 100)]
    job_states = [(p["job_id"], p["status"]) for t, p in bus.seen if t == JOB_UPDATED]
    assert job_states == [(first, "RUNNING"), (first, "RUNNING"), (first, "COMPLETED"),
                          (second, "RUNNING"), (second, "FAILED")]

    # Each workflow's latest execution, for the original UI's workflow list.
    assert engine.latest_statuses() == {wf: "FAILED"}
    engine.create_execution(plan, trigger="api")
    assert engine.latest_statuses() == {wf: "PENDING"}

    # Another peer's job: made with one INSERT ... RETURNING, defaults and all.
    remote = engine.new_remote_job(sid, "b" * 40)
    row = engine.job(remote)
    assert (row.status, row.requester_peer_id, row.peer_id, row.workflow_execution_id) == (
        "PENDING", "b" * 40, PEER, None)
    assert row.created_at is not None
    assert [p for t, p in bus.seen if t == JOB_UPDATED][-1]["job_id"] == remote


def test_state_changes_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    db.migrate()
    try:
        exercise_state_changes(db)
    finally:
        db.close()
