"""The one entry point for running a job on this machine: Docker or standalone, by the target."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from executors.artifacts import ArtifactStore
from executors.base import (
    DockerTarget,
    JobResult,
    JobSpec,
    LogSink,
    StandaloneTarget,
    failed_result,
    utcnow,
)
from executors.docker_executor import DockerExecutor
from executors.standalone import StandaloneExecutor

log = logging.getLogger("remote_network.executors")


class LocalExecutor:
    """Runs JobSpecs here, tracks them by job_id for ``cancel``, cancels all on ``shutdown``.

    ``owner`` (the node's peer id) labels this node's containers, so that start-up removes only
    the containers this node left behind, never another node's on the same engine.
    """

    def __init__(self, store: ArtifactStore, work_dir: Path, *, owner: str,
                 docker_host: str | None = None, kill_grace: float = 5.0,
                 labels: dict[str, str] | None = None, data_dir: Path | None = None,
                 sandbox: bool = True) -> None:
        """``data_dir``: the node's, which no job may see; ``sandbox``: False runs standalone
        jobs unsandboxed (an explicit setting)."""
        self.store = store
        self.docker = DockerExecutor(store, Path(work_dir) / "docker", owner=owner,
                                     docker_host=docker_host, kill_timeout=max(kill_grace, 5.0),
                                     labels=labels)
        self.standalone = StandaloneExecutor(store, Path(work_dir) / "standalone",
                                             kill_grace=kill_grace, data_dir=data_dir,
                                             sandbox=sandbox)
        self._tasks: dict[str, asyncio.Task[JobResult]] = {}
        self._cleanup: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Clear what an earlier run left behind; the engine is looked at in the background
        (a slow or absent engine must not hold up the node)."""
        await self.standalone.start()
        self._cleanup = asyncio.ensure_future(self._remove_orphans())

    async def _remove_orphans(self) -> None:
        removed = await self.docker.start()
        if removed:
            log.info("removed %d container(s) left by an earlier run", removed)

    @property
    def running(self) -> list[str]:
        return list(self._tasks)

    async def run(self, spec: JobSpec, *, on_log: LogSink | None = None) -> JobResult:
        if (isinstance(spec.target, DockerTarget) and self._cleanup is not None
                and not self._cleanup.done()):
            # Orphan removal must not catch this job's fresh container or dir.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._cleanup)
        if spec.job_id in self._tasks:
            return failed_result(spec, utcnow(), f"job {spec.job_id} is already running")
        if isinstance(spec.target, DockerTarget):
            coro = self.docker.run(spec, on_log=on_log)
        elif isinstance(spec.target, StandaloneTarget):
            coro = self.standalone.run(spec, on_log=on_log)
        else:
            return failed_result(spec, utcnow(), f"unknown job target {type(spec.target)}")
        task = asyncio.ensure_future(coro)
        self._tasks[spec.job_id] = task
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The caller gave up: stop the job, and let it clean up before we return.
            await self.cancel(spec.job_id)
            await asyncio.wait({task}, timeout=30)
            raise
        finally:
            if task.done():
                self._tasks.pop(spec.job_id, None)
            else:
                task.add_done_callback(lambda _t: self._tasks.pop(spec.job_id, None))

    async def cancel(self, job_id: str) -> bool:
        """Kill a running job (container or process group); False when none runs by that id."""
        if job_id not in self._tasks:
            return False
        for _ in range(10):  # a job just submitted registers on its first step
            if await self.docker.cancel(job_id) or await self.standalone.cancel(job_id):
                return True
            await asyncio.sleep(0)
        return False

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel every running job and wait (bounded) for their cleanup."""
        tasks = list(self._tasks.values())
        await self.docker.cancel_all()
        await self.standalone.cancel_all()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._cleanup is not None and not self._cleanup.done():
            self._cleanup.cancel()
        self.docker.close()
