"""Limits set through settings, on one node of this module's own: the upload ttl (abandoned
sessions and leftovers of earlier runs are removed) and the build timeout of from-git."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.support.git_server import GitServer, git_server_fixture  # noqa: F401
from tests.support.node_process import ApiClient, NodeProcess, logged_in
from tests.support.upload_client import UploadSocket


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, ApiClient]]:
    node = NodeProcess(tmp_path_factory.mktemp("tuned") / "node",
                       env={"RN_UPLOAD_TTL_SECONDS": "1", "RN_BUILD_TIMEOUT_SECONDS": "1"})
    leftover = node.data_dir / "uploads" / "from-a-crash"
    leftover.mkdir(parents=True)
    (leftover / "00000000.chunk").write_bytes(b"x")
    staging = node.data_dir / "services" / ".staging" / "half-done"
    staging.mkdir(parents=True)
    with logged_in(node) as running:
        yield running


def test_leftovers_of_earlier_runs_removed_at_start(tuned: tuple[NodeProcess, ApiClient]) -> None:
    node, _ = tuned
    assert list((node.data_dir / "uploads").iterdir()) == []
    assert not (node.data_dir / "services" / ".staging").exists()


async def test_abandoned_upload_expires(tuned: tuple[NodeProcess, ApiClient]) -> None:
    node, client = tuned
    async with UploadSocket(client) as ws:
        sid, _ = await ws.start(b"0123456789", file_name="a.bin", chunk_size=5)
        await ws.chunk(sid, 0, b"01234")
        session_dir = node.data_dir / "uploads" / sid
        assert session_dir.is_dir()
        deadline = time.monotonic() + 20
        while session_dir.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not session_dir.exists()
        late = await ws.chunk(sid, 1, b"56789")
        assert late["type"] == "FILE_UPLOAD_ERROR"
        assert "Unknown upload session" in late["payload"]["error"]
    assert client.get("/api/services").json()["total"] == 0


def test_from_git_build_timeout(tuned: tuple[NodeProcess, ApiClient],
                                git_server: GitServer) -> None:
    node, client = tuned
    url = git_server.create_repo("slow", {"tool": "#!/bin/sh\n"})
    resp = client.post("/api/services/standalone/from-git", json={
        "service_name": "slow", "repo_url": url, "executable_path": "tool",
        "build_command": "sleep 30"})
    assert resp.status_code == 500
    assert "timed out after 1" in resp.json()["error"]
    assert client.get("/api/services").json()["total"] == 0
    services = node.data_dir / "services"
    assert [p.name for p in services.iterdir() if p.name != ".staging"] == []
