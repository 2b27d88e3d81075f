"""Executor fixtures: a fresh store and executors per test, each checked to leave nothing behind."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import psutil
import pytest

from executors.artifacts import ArtifactStore
from executors.docker_executor import LABEL_OWNER, DockerExecutor
from executors.local import LocalExecutor
from executors.standalone import StandaloneExecutor
from tests.support.docker_infra import TEST_LABEL


def containers_of(client: docker.DockerClient, owner: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})


def own_children() -> set[int]:
    """Live (non-zombie) descendants of this test process."""
    pids = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.status() != psutil.STATUS_ZOMBIE:
                pids.add(p.pid)
    return pids


def leftover_job_dirs(work_dir: Path) -> list[Path]:
    return list(work_dir.rglob("*")) if work_dir.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def owner() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def docker_exec(store: ArtifactStore, tmp_path: Path, owner: str,
                      docker_client: docker.DockerClient,
                      busybox_image: str) -> AsyncIterator[DockerExecutor]:
    ex = DockerExecutor(store, tmp_path / "jobs", owner=owner, kill_timeout=5,
                        labels={TEST_LABEL: "1"})
    await ex.start()
    try:
        yield ex
    finally:
        ex.close()
        assert containers_of(docker_client, owner) == []
        assert leftover_job_dirs(tmp_path / "jobs") == []
        assert list(store.tmp_dir.iterdir()) == []


@pytest.fixture
async def standalone_exec(store: ArtifactStore,
                          tmp_path: Path) -> AsyncIterator[StandaloneExecutor]:
    ex = StandaloneExecutor(store, tmp_path / "jobs", kill_grace=1.0)
    await ex.start()
    before = own_children()
    yield ex
    assert ex.running == []
    assert own_children() - before == set(), "the test left processes running"
    assert leftover_job_dirs(tmp_path / "jobs") == []
    assert list(store.tmp_dir.iterdir()) == []


@pytest.fixture
async def local_exec(store: ArtifactStore, tmp_path: Path, owner: str,
                     docker_client: docker.DockerClient,
                     busybox_image: str) -> AsyncIterator[LocalExecutor]:
    ex = LocalExecutor(store, tmp_path / "jobs", owner=owner, kill_grace=1.0,
                       labels={TEST_LABEL: "1"})
    await ex.start()
    try:
        yield ex
    finally:
        await ex.shutdown()
        assert containers_of(docker_client, owner) == []
        assert leftover_job_dirs(tmp_path / "jobs" / "docker") == []
        assert leftover_job_dirs(tmp_path / "jobs" / "standalone") == []
