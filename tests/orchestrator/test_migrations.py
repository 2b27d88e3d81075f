"""The migrations build exactly the schema the models describe, with WAL and foreign keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import orchestrator.models as m
from orchestrator.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.migrate()
    yield database
    database.close()


def test_models_and_migrations_agree(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "render_as_batch": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == [], f"models differ from migrations (add a migration): {diff}"


def test_every_model_table_exists(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrate_twice_is_harmless(db: Database) -> None:
    db.migrate()
    with db.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    assert len(versions) == 1


def test_wal_and_foreign_keys(db: Database) -> None:
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        # Foreign keys are enforced: an interface of no service is refused.
        with pytest.raises(Exception, match="FOREIGN KEY"):
            conn.execute(text("INSERT INTO service_interfaces (service_id, interface_type, path,"
                              " mount_function, description) VALUES (999, 'STDIN', '', '', '')"))


def test_deleting_a_service_cascades(db: Database) -> None:
    with db.session() as s:
        svc = m.Service(name="s", service_type="DOCKER", type="docker")
        s.add(svc)
        s.flush()
        s.add(m.ServiceInterface(service_id=svc.id, interface_type="STDIN"))
        s.add(m.DockerDetails(service_id=svc.id, image_name="img"))
        data = m.Service(name="d", service_type="DATA", type="storage")
        s.add(data)
        s.flush()
        s.add(m.DataDetails(service_id=data.id, passphrase="p"))
        s.commit()
        ids = (svc.id, data.id)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM services"))
    with db.engine.connect() as conn:
        for table in ("service_interfaces", "docker_service_details", "data_service_details"):
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0, table
    assert all(ids)


def test_deleting_a_workflow_cascades(db: Database) -> None:
    with db.session() as s:
        wf = m.Workflow(name="w")
        s.add(wf)
        s.flush()
        a = m.WorkflowNode(workflow_id=wf.id, service_id=1)
        b = m.WorkflowNode(workflow_id=wf.id, service_id=1)
        s.add_all([a, b])
        s.flush()
        s.add(m.WorkflowConnection(workflow_id=wf.id, source_node_id=a.id, target_node_id=b.id))
        s.add(m.WorkflowUIState(workflow_id=wf.id, ui_state={"zoom": 1}))
        ex = m.WorkflowExecution(workflow_id=wf.id)
        s.add(ex)
        s.flush()
        job = m.JobExecution(workflow_execution_id=ex.id, workflow_id=wf.id)
        s.add(job)
        s.flush()
        s.add(m.JobExecutionInterface(job_execution_id=job.id, interface_type="STDOUT"))
        s.commit()
        wf_id = wf.id
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM workflows WHERE id = :i"), {"i": wf_id})
    with db.engine.connect() as conn:
        for table in ("workflow_nodes", "workflow_connections", "workflow_ui_states",
                      "workflow_executions", "job_executions", "job_execution_interfaces"):
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0, table


def test_deleting_a_node_removes_its_connections(db: Database) -> None:
    with db.session() as s:
        wf = m.Workflow(name="w")
        s.add(wf)
        s.flush()
        a, b = m.WorkflowNode(workflow_id=wf.id), m.WorkflowNode(workflow_id=wf.id)
        s.add_all([a, b])
        s.flush()
        s.add(m.WorkflowConnection(workflow_id=wf.id, source_node_id=a.id, target_node_id=b.id))
        s.commit()
        node_id = a.id
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM workflow_nodes WHERE id = :i"), {"i": node_id})
        assert conn.execute(text("SELECT COUNT(*) FROM workflow_connections")).scalar() == 0
