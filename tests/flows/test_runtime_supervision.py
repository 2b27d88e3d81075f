"""The node starts its Prefect server again when it exits, and gives up on one that keeps exiting.

Real child processes stand in for the server (one that exits at once, one that stays up); the
restart pauses are set to zero.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from flows.on_prefect import runtime
from flows.on_prefect.runtime import PrefectRuntime
from orchestrator.config import Settings

API = "http://127.0.0.1:1/api"


def supervised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               codes: list[int | None]) -> tuple[PrefectRuntime, list[int]]:
    """A runtime whose server starts are child processes exiting with ``codes`` in turn (None:
    one that stays up); the pids started are recorded."""
    monkeypatch.setattr(runtime, "configure_prefect", lambda _settings: API)
    monkeypatch.setattr(runtime, "RESTART_DELAYS", (0.0, 0.0, 0.0))
    rt = PrefectRuntime(Settings(data_dir=tmp_path))
    pids: list[int] = []

    async def start_server(_db_url: str) -> None:
        code = codes.pop(0)
        script = "import time; time.sleep(60)" if code is None else f"raise SystemExit({code})"
        rt._server = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        pids.append(rt._server.pid)

    rt._start_server = start_server  # type: ignore[method-assign]
    return rt, pids


async def test_a_server_that_exits_is_started_again(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    rt, pids = supervised(tmp_path, monkeypatch, [None, None])
    await rt._start_server("db")
    rt._ready.set()
    watch = asyncio.create_task(rt._watch())
    try:
        assert rt._server is not None
        rt._server.kill()
        for _ in range(100):  # bounded: 10 s
            if len(pids) == 2 and rt.ready:
                break
            await asyncio.sleep(0.1)
        assert len(pids) == 2 and pids[0] != pids[1]
        assert rt.ready and rt.error is None
        assert rt._server.returncode is None
        assert rt.server_pid == pids[1]  # the server that runs now
    finally:
        await rt.stop()
        watch.cancel()
    assert rt._server.returncode is not None  # stop ends it, and the watcher lets it go
    assert rt.server_pid is None


async def test_a_server_that_keeps_exiting_is_given_up(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rt, pids = supervised(tmp_path, monkeypatch, [3, 3, 3, 3, 3])
    await rt._start_server("db")
    await asyncio.wait_for(rt._watch(), 20)
    assert len(pids) == 4  # the first start and three restarts
    assert not rt.ready
    assert rt.error is not None
    assert "the Prefect server exited with code 3, 4 times in 10 minutes" in rt.error
