"""Shared fixtures: a running node process and a logged-in client; the ``slow`` mark.

Tests that start node processes, Prefect servers or Docker containers are marked ``slow``
where they are collected (by what their module uses), so ``pytest -m "not slow"`` is the fast
subset of unit tests and in-process tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

# Docker engine, busybox image and local registries (session fixtures).
from tests.support.docker_infra import (  # noqa: F401
    auth_registry,
    busybox_image,
    docker_client,
    registry,
)
from tests.support.node_process import ApiClient, NodeProcess

# What a test module uses that makes its tests slow: real node processes, a Prefect server,
# the Docker engine or registries.
SLOW_FIXTURES = frozenset({"node_proc", "client", "fresh_node", "docker_client",
                           "busybox_image", "registry", "auth_registry"})
SLOW_NAMES = ("NodeProcess", "side_by_side", "PrefectRuntime", "prefect_test_harness",
              "pytest.mark.docker")


@cache
def _module_is_slow(path: str) -> bool:
    text = Path(path).read_text(errors="replace")
    return any(name in text for name in SLOW_NAMES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or _module_is_slow(str(item.path)) \
                or item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def node_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node process shared by the tests of a session that only read or add resources."""
    node = NodeProcess(tmp_path_factory.mktemp("node")).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def client(node_proc: NodeProcess) -> Iterator[ApiClient]:
    c = node_proc.client()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def fresh_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node of the test's own, for tests that restart, kill or reconfigure it."""
    node = NodeProcess(tmp_path / "node")
    try:
        yield node
    finally:
        node.stop()
