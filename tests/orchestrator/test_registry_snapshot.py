"""ServiceRegistry.snapshot: cached views that no change to a service leaves stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.db import Database
from orchestrator.errors import NotFound
from orchestrator.events import EventBus
from orchestrator.models import StandaloneDetails
from orchestrator.registry import ServiceRegistry
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import Interface


@pytest.fixture
def registry(tmp_path: Path) -> ServiceRegistry:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    db.migrate()
    return ServiceRegistry(db, EventBus())


def make(registry: ServiceRegistry, name: str) -> int:
    view = registry.create(
        name=name, service_type=ServiceType.STANDALONE,
        interfaces=[Interface(InterfaceType.STDIN), Interface(InterfaceType.STDOUT)],
        details=StandaloneDetails(executable_path="/bin/cat"))
    return int(view.service.id or 0)


def test_snapshot_is_cached_until_a_change(registry: ServiceRegistry) -> None:
    sid = make(registry, "cat")
    first = registry.snapshot(sid)
    assert first.service.name == "cat" and first.standalone is not None
    assert registry.snapshot(sid) is first

    registry.update(sid, {"name": "renamed"})
    assert registry.snapshot(sid).service.name == "renamed"

    registry.update_details(sid, executable_path="/bin/echo")
    details = registry.snapshot(sid).standalone
    assert details is not None and details.executable_path == "/bin/echo"

    registry.replace_interfaces(sid, [Interface(InterfaceType.STDOUT)])
    assert [i.interface_type for i in registry.snapshot(sid).interfaces] == ["STDOUT"]


def test_change_to_another_service_drops_the_cache(registry: ServiceRegistry) -> None:
    a, b = make(registry, "a"), make(registry, "b")
    view_a = registry.snapshot(a)
    registry.update(b, {"description": "changed"})
    assert registry.snapshot(a) is not view_a


def test_deleted_service_is_not_found(registry: ServiceRegistry) -> None:
    sid = make(registry, "gone")
    registry.snapshot(sid)
    registry.delete(sid)
    with pytest.raises(NotFound):
        registry.snapshot(sid)
