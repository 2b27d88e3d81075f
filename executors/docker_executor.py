"""Running one job in a Docker container, through the Docker SDK (never the CLI).

One job: inputs placed in a per-job dir and bind-mounted (read-only), output mounts bound to empty
per-job dirs, the container created (the image pulled when missing), attached through the raw
attach socket (stdin written then half-closed, stdout/stderr read as multiplexed frames), started,
awaited with the job's timeout, and always removed. Containers carry labels naming the job and the
owning node, so that containers left by a crashed node are removed when its executor starts.

Blocking SDK and socket work runs in worker threads; the asyncio side only waits, times out and
cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.types import Mount
from docker.utils import parse_repository_tag

from executors.artifacts import CHUNK, ArtifactError, ArtifactStore
from executors.base import (
    ArtifactKind,
    ArtifactRef,
    DockerTarget,
    JobOutcome,
    JobResult,
    JobSpec,
    LogSink,
    clear_work_dir,
    failed_result,
    one_line,
    safe_name,
    utcnow,
)
from executors.capture import WATCH_SECONDS, OutputCapture, tree_size
from executors.docker_engine import (
    EngineError,
    EngineUnavailable,
    FrameDecoder,
    ImageNotFound,
    connect,
    map_docker_errors,
)

log = logging.getLogger("remote_network.executors.docker")

LABEL_JOB = "remote-network.job"
LABEL_OWNER = "remote-network.owner"
T = TypeVar("T")


@dataclass
class _Job:
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)  # set by any stop
    container_id: str | None = None
    limit_error: str | None = None  # a limit the job went past (it is then stopped)

    def stop(self, error: str) -> None:
        if self.limit_error is None:
            self.limit_error = error
        self.cancelled.set()


@dataclass
class _Prepared:
    mounts: list[Mount]
    outputs: list[tuple[str, Path]]  # (container path, host dir)


@dataclass
class _Launched:
    api: docker.APIClient
    prepared: _Prepared
    sock: Any  # the attach socket
    waiter: Any  # the open response of the wait for removal


class DockerExecutor:
    """Runs JobSpecs whose target is a DockerTarget."""

    def __init__(self, store: ArtifactStore, work_dir: Path, *, owner: str,
                 docker_host: str | None = None, kill_timeout: float = 10.0,
                 max_threads: int = 64, labels: dict[str, str] | None = None) -> None:
        self.store = store
        self.work_dir = Path(work_dir)
        self.owner = owner
        self.docker_host = docker_host
        self.kill_timeout = kill_timeout
        self.labels = dict(labels or {})  # extra labels on every container (e.g. for tests)
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        # Own pool: attach pumps block for a job's whole life and must not starve to_thread users.
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="rn-docker")

    # -- plumbing ----------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _api(self) -> docker.APIClient:
        with self._client_lock:
            if self._client is None:
                self._client = connect(self.docker_host, timeout=120)
            return self._client.api

    @property
    def running(self) -> list[str]:
        return list(self._jobs)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> int:
        """Remove containers and job dirs this node left behind (e.g. after a crash)."""
        clear_work_dir(self.work_dir)
        try:
            return await self._call(self._remove_orphans)
        except (EngineUnavailable, EngineError) as exc:
            log.warning("could not look for orphan containers: %s", exc)
            return 0

    def _remove_orphans(self) -> int:
        api = self._api()
        with map_docker_errors("list containers"):
            found = api.containers(all=True, filters={"label": f"{LABEL_OWNER}={self.owner}"})
        for c in found:
            log.info("removing orphan container %s of job %s", c["Id"][:12],
                     c.get("Labels", {}).get(LABEL_JOB, "?"))
            self._remove(api, c["Id"])
        return len(found)

    async def cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancelled.set()
        return True

    async def cancel_all(self) -> None:
        for job in list(self._jobs.values()):
            job.cancelled.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- one job -----------------------------------------------------------------------------
    async def run(self, spec: JobSpec, *, on_log: LogSink | None = None) -> JobResult:
        started = utcnow()
        if not isinstance(spec.target, DockerTarget):
            return failed_result(spec, started, "not a Docker job")
        if spec.job_id in self._jobs:
            return failed_result(spec, started, f"job {spec.job_id} is already running")
        job = _Job()
        self._jobs[spec.job_id] = job
        try:
            return await self._run(spec, job, on_log, started)
        finally:
            self._jobs.pop(spec.job_id, None)

    async def _run(self, spec: JobSpec, job: _Job, on_log: LogSink | None,
                   started: dt.datetime) -> JobResult:
        target = spec.target
        assert isinstance(target, DockerTarget)
        loop = asyncio.get_running_loop()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        job_dir = Path(tempfile.mkdtemp(dir=self.work_dir, prefix=f"{safe_name(spec.job_id)}-"))
        capture = OutputCapture(
            self.store, spec.job_id, _threadsafe_sink(loop, on_log),
            limit=spec.limits.output_bytes,
            on_exceeded=lambda error: loop.call_soon_threadsafe(job.stop, error))
        launched: _Launched | None = None
        pump: asyncio.Future[None] | None = None
        removed = False
        try:
            try:
                # One hop to a worker thread for the whole launch: every hop costs latency.
                launched = await self._call(self._launch, spec, job, job_dir)
            except ImageNotFound:
                return failed_result(spec, started, f"image not found: {target.image}")
            except EngineUnavailable:
                return failed_result(spec, started, "Docker engine unavailable")
            except (EngineError, ArtifactError, OSError) as exc:
                return failed_result(spec, started, one_line(str(exc)))

            pump = loop.run_in_executor(self._pool, self._pump, launched.sock, capture,
                                        spec.stdin)
            watcher = None
            if spec.limits.output_bytes is not None and launched.prepared.outputs:
                watcher = asyncio.ensure_future(self._watch(spec, job, launched.prepared))
            try:
                outcome, error = await self._await_exit(spec, job, launched, pump)
            finally:
                if watcher is not None:
                    watcher.cancel()
            exit_code, oom, outputs, output_error = await self._call(
                self._collect, spec, job, launched, capture)
            removed = _auto_remove(spec)  # auto-removed: the wait was for "removed"
            if outcome is None and oom:
                outcome = JobOutcome.FAILED
                error = (f"killed for using more than its memory limit of "
                         f"{spec.limits.memory_bytes} bytes")
            if outcome is None and output_error is not None:
                outcome, error = JobOutcome.FAILED, output_error
            if outcome is None:
                outcome = JobOutcome.COMPLETED if exit_code == 0 else JobOutcome.FAILED
                error = None if exit_code == 0 else capture.exit_error(exit_code)
            return JobResult(spec.job_id, outcome, exit_code, started, utcnow(), outputs, error)
        except (EngineUnavailable, EngineError) as exc:
            return failed_result(spec, started, one_line(str(exc)))
        finally:
            if launched is not None:
                _close_socket(launched.sock)
                launched.waiter.close()
            if pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pump, self.kill_timeout)
            capture.abort()
            if job.container_id is not None and not removed:
                try:
                    await self._call(self._remove, self._api(), job.container_id)
                except (EngineUnavailable, EngineError) as exc:
                    log.warning("could not remove container of job %s: %s", spec.job_id, exc)
            try:
                job_dir.rmdir()  # the common case: no mounts, nothing inside
            except OSError:
                await self._call(shutil.rmtree, job_dir, True)

    async def _await_exit(self, spec: JobSpec, job: _Job, launched: _Launched,
                          pump: asyncio.Future[None]) -> tuple[JobOutcome | None, str | None]:
        """Wait for the output stream to end (the container exited), the timeout or a cancel."""
        cancel_wait = asyncio.ensure_future(job.cancelled.wait())
        try:
            done, _ = await asyncio.wait({pump, cancel_wait}, timeout=spec.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel_wait.cancel()
        if pump in done:
            pump.result()
            if job.limit_error is not None:  # went past a limit as it ended
                return JobOutcome.FAILED, job.limit_error
            return None, None
        if job.limit_error is not None:
            outcome, error = JobOutcome.FAILED, job.limit_error
        elif job.cancelled.is_set():
            outcome, error = JobOutcome.CANCELLED, "cancelled"
        else:
            outcome, error = JobOutcome.TIMED_OUT, f"timed out after {spec.timeout:g}s"
        assert job.container_id is not None
        await self._call(self._kill, launched.api, job.container_id)
        try:
            await asyncio.wait_for(asyncio.shield(pump), self.kill_timeout)
        except TimeoutError:
            _close_socket(launched.sock)
            with contextlib.suppress(Exception):
                await pump
        return outcome, error

    async def _watch(self, spec: JobSpec, job: _Job, prepared: _Prepared) -> None:
        """Stop the job once an output mount holds more than the output limit."""
        limit = spec.limits.output_bytes
        assert limit is not None
        while not job.cancelled.is_set():
            await asyncio.sleep(WATCH_SECONDS)
            for path, host_dir in prepared.outputs:
                size = await asyncio.to_thread(tree_size, host_dir)
                if size is None or size > limit:
                    job.stop(f"output limit of {limit} bytes exceeded on output mount {path}")
                    return

    # -- blocking steps (worker threads) -----------------------------------------------------
    def _launch(self, spec: JobSpec, job: _Job, job_dir: Path) -> _Launched:
        """Inputs in place, container created (image pulled if missing), attached, a wait for
        its removal registered, started."""
        api = self._api()
        prepared = self._prepare(spec, job_dir)
        job.container_id = self._create(api, spec, prepared)
        sock = waiter = None
        try:
            sock = self._attach(api, job.container_id, spec.stdin is not None)
            waiter = self._begin_wait(api, job.container_id,
                                      spec.timeout + self.kill_timeout + 60,
                                      "removed" if _auto_remove(spec) else "next-exit")
            self._start(api, job.container_id)
        except BaseException:
            if sock is not None:
                _close_socket(sock)
            if waiter is not None:
                waiter.close()
            raise
        return _Launched(api, prepared, sock, waiter)

    def _collect(self, spec: JobSpec, job: _Job, launched: _Launched,
                 capture: OutputCapture) -> tuple[int, bool, dict[str, ArtifactRef], str | None]:
        """The exit code (once the container exited), whether it was killed for memory, every
        output as an artifact, and the error of an output over its limit."""
        with map_docker_errors("wait"):
            status = launched.waiter.json()
        oom = False
        if not _auto_remove(spec) and job.container_id is not None:
            with contextlib.suppress(EngineError):
                with map_docker_errors("inspect container"):
                    state = launched.api.inspect_container(job.container_id).get("State", {})
                oom = bool(state.get("OOMKilled"))
        outputs = capture.finish()
        error = None
        for path, host_dir in launched.prepared.outputs:
            try:
                outputs[f"MOUNT:{path}"] = self.store.put_dir(
                    host_dir, max_bytes=spec.limits.output_bytes, within=host_dir)
            except ArtifactError as exc:
                error = error or one_line(f"output mount {path}: {exc}")
        return int(status.get("StatusCode", -1)), oom, outputs, error

    def _prepare(self, spec: JobSpec, job_dir: Path) -> _Prepared:
        mounts: list[Mount] = []
        for i, m in enumerate(spec.input_mounts):
            mounts.append(Mount(m.path, str(self._input_source(m.artifact, job_dir, i)),
                                type="bind", read_only=True))
        outputs: list[tuple[str, Path]] = []
        for i, path in enumerate(spec.output_mounts):
            host = job_dir / "out" / str(i)
            host.mkdir(parents=True)
            host.chmod(0o777)  # the image's user may not be root
            mounts.append(Mount(path, str(host), type="bind", read_only=False))
            outputs.append((path, host))
        return _Prepared(mounts, outputs)

    def _input_source(self, ref: ArtifactRef, job_dir: Path, index: int) -> Path:
        if ref.kind == ArtifactKind.TAR:
            dest = job_dir / "in" / str(index)
            self.store.extract_tar(ref, dest)
            return dest
        # Stored artifacts are immutable (0444): bind the stored file itself, no copy.
        path = self.store.path(ref.sha256)
        if not path.is_file():
            raise ArtifactError(f"input artifact {ref.sha256} is not in the store")
        return path

    def _create(self, api: docker.APIClient, spec: JobSpec, prepared: _Prepared) -> str:
        target = spec.target
        assert isinstance(target, DockerTarget)
        try:
            return self._create_once(api, spec, prepared)
        except ImageNotFound:
            self._pull(api, target.image)
            return self._create_once(api, spec, prepared)

    def _command(self, api: docker.APIClient, spec: JobSpec) -> list[str] | None:
        target = spec.target
        assert isinstance(target, DockerTarget)
        if not spec.args:
            return list(target.cmd) if target.cmd is not None else None
        if target.cmd is not None:
            base = list(target.cmd)
        elif target.entrypoint is not None:
            base = []  # a new entrypoint drops the image's Cmd
        else:
            with map_docker_errors(f"inspect image {target.image}"):
                base = list(api.inspect_image(target.image)["Config"].get("Cmd") or [])
        return base + list(spec.args)

    def _create_once(self, api: docker.APIClient, spec: JobSpec, prepared: _Prepared) -> str:
        target = spec.target
        assert isinstance(target, DockerTarget)
        stdin = spec.stdin is not None
        with map_docker_errors(f"create container from {target.image}"):
            # auto_remove: the engine removes the container as it exits (as `docker run --rm`);
            # not with a memory limit, whose OOM kill is read from the exited container.
            host_config = api.create_host_config(mounts=prepared.mounts,
                                                 auto_remove=_auto_remove(spec),
                                                 **limit_options(spec))
            created = api.create_container(
                target.image,
                command=self._command(api, spec),
                entrypoint=list(target.entrypoint) if target.entrypoint is not None else None,
                environment=dict(spec.env),
                labels={**self.labels, LABEL_JOB: spec.job_id, LABEL_OWNER: self.owner},
                host_config=host_config,
                stdin_open=stdin,
                tty=False,
                detach=not stdin,  # attached with stdin open also sets StdinOnce
            )
        return str(created["Id"])

    def _pull(self, api: docker.APIClient, image: str) -> None:
        repo, tag = parse_repository_tag(image)
        log.info("pulling image %s", image)
        try:
            with map_docker_errors(f"pull {image}"):
                for line in api.pull(repo, tag or "latest", stream=True, decode=True):
                    if "error" in line:
                        raise EngineError(f"pull {image}: {line['error']}")
        except EngineError as exc:
            text = str(exc).lower()
            if "not found" in text or "manifest unknown" in text or "does not exist" in text:
                raise ImageNotFound(f"image not found: {image}") from exc
            raise

    def _attach(self, api: docker.APIClient, container_id: str, stdin: bool) -> Any:
        params = {"stdout": 1, "stderr": 1, "stream": 1, "stdin": 1 if stdin else 0}
        with map_docker_errors("attach"):
            return api.attach_socket(container_id, params=params)

    def _begin_wait(self, api: docker.APIClient, container_id: str, timeout: float,
                    condition: str = "removed") -> Any:
        """Open a wait for the container's removal; returns once the engine has registered it
        (it sends the headers at once), so the exit cannot be missed. The body, read later, holds
        the exit code."""
        with map_docker_errors("wait"):
            res = api._post(api._url("/containers/{0}/wait", container_id),
                            params={"condition": condition}, stream=True, timeout=timeout)
            api._raise_for_status(res)
        return res

    def _start(self, api: docker.APIClient, container_id: str) -> None:
        with map_docker_errors("start container"):
            api.start(container_id)

    def _kill(self, api: docker.APIClient, container_id: str) -> None:
        try:
            with map_docker_errors("kill container"):
                api.kill(container_id)
        except EngineError as exc:  # already exited
            log.debug("kill %s: %s", container_id[:12], exc)

    def _remove(self, api: docker.APIClient, container_id: str) -> None:
        try:
            with map_docker_errors("remove container"):
                api.remove_container(container_id, force=True, v=True)
        except EngineError as exc:
            if "no such container" not in str(exc).lower():
                raise

    def _pump(self, sock: Any, capture: OutputCapture,
              stdin: ArtifactRef | bytes | None) -> None:
        """Feed stdin (then half-close) and read the output frames until the stream ends."""
        raw = _raw_socket(sock)
        raw.settimeout(None)
        feeder = None
        if stdin is not None:
            feeder = threading.Thread(target=self._feed, args=(raw, stdin), daemon=True,
                                      name="rn-docker-stdin")
            feeder.start()
        decoder = FrameDecoder()
        while True:
            try:
                data = raw.recv(CHUNK)
            except OSError:
                break
            if not data:
                break
            for stream, payload in decoder.feed(data):
                capture.feed(stream, payload)
            # Past the output limit the capture drops what comes; the stream is still drained
            # (an unread attach stream holds up the engine's kill) until the container is gone.
        if feeder is not None:
            feeder.join(self.kill_timeout)

    def _feed(self, raw: socket.socket, stdin: ArtifactRef | bytes) -> None:
        try:
            if isinstance(stdin, bytes):
                raw.sendall(stdin)
            else:
                with self.store.open(stdin) as f:
                    while chunk := f.read(CHUNK):
                        raw.sendall(chunk)
            raw.shutdown(socket.SHUT_WR)
        except (OSError, ArtifactError) as exc:  # the container stopped reading, or was killed
            log.debug("stdin feed ended: %s", exc)


def _auto_remove(spec: JobSpec) -> bool:
    return spec.limits.memory_bytes is None


def limit_options(spec: JobSpec) -> dict[str, Any]:
    """The container's host config for the job's limits and isolation: memory (no swap
    beyond it), CPU, pids, no network when it may have none, no privilege gained by exec."""
    limits = spec.limits
    opts: dict[str, Any] = {"security_opt": ["no-new-privileges"]}
    if limits.memory_bytes is not None:
        opts["mem_limit"] = limits.memory_bytes
        opts["memswap_limit"] = limits.memory_bytes
    if limits.cpus is not None:
        opts["nano_cpus"] = int(limits.cpus * 1e9)
    if limits.pids is not None:
        opts["pids_limit"] = limits.pids
    if not spec.isolation.network:
        opts["network_mode"] = "none"
    return opts


def _raw_socket(sock: Any) -> socket.socket:
    return sock._sock if hasattr(sock, "_sock") else sock


def _close_socket(sock: Any) -> None:
    raw = _raw_socket(sock)
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _threadsafe_sink(loop: asyncio.AbstractEventLoop,
                     on_log: LogSink | None) -> Callable[[str, str, str], None] | None:
    if on_log is None:
        return None

    def sink(job_id: str, stream: str, line: str) -> None:
        loop.call_soon_threadsafe(on_log, job_id, stream, line)

    return sink
