"""Shared fixtures: a running node process and a logged-in client."""

from __future__ import annotations

from collections.abc import Iterator
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
