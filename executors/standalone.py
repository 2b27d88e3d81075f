"""Running one job as a local process (a standalone service's executable).

The process runs in its own session and process group, in a per-job root directory: an input or
output MOUNT path P is placed at ``<job root>/<P without leading slash>``, the working directory is
the job root unless the service sets one, and ``RN_JOB_DIR`` names the root. Its environment is
built from scratch (PATH, HOME, then the service's env, then the job's): the node's own environment
never leaks into it. Timeout and cancel kill the whole group: SIGTERM, then SIGKILL after a grace
period; whatever the group left running when the main process exits is killed too.

``run_as_user`` ("user" or "user:group", names or numbers) switches uid and gid for real and drops
supplementary groups; the job root is then created under the system temp dir (so the user can reach
it) and chowned to that user, so the job can write its outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import logging
import os
import pwd
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from executors.artifacts import ArtifactError, ArtifactStore
from executors.base import (
    ArtifactRef,
    JobOutcome,
    JobResult,
    JobSpec,
    LogSink,
    StandaloneTarget,
    clear_work_dir,
    failed_result,
    one_line,
    safe_name,
    utcnow,
)
from executors.capture import OutputCapture

log = logging.getLogger("remote_network.executors.standalone")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_CHUNK = 1 << 16


class JobSetupError(Exception):
    """The job could not be started; the message is the one line a user sees."""


@dataclass(frozen=True, slots=True)
class RunAs:
    uid: int
    gid: int
    name: str


def resolve_user(spec: str) -> RunAs:
    """Parse "user" or "user:group" (names or numeric ids) into uid/gid."""
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid, name = pw.pw_uid, pw.pw_gid, pw.pw_name
    except KeyError:
        if not user.isdigit():
            raise JobSetupError(f"run_as_user: no such user {user!r}") from None
        uid, gid, name = int(user), int(user), user
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise JobSetupError(f"run_as_user: no such group {group!r}") from None
    return RunAs(uid, gid, name)


def mount_location(job_root: Path, path: str) -> Path:
    """Where a MOUNT path lands under the job root; rejects paths that would leave it."""
    rel = PurePosixPath(path.lstrip("/"))
    if not rel.parts or ".." in rel.parts:
        raise JobSetupError(f"invalid mount path {path!r}")
    return job_root.joinpath(*rel.parts)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also reports the moment the process exits.

    ``Process.wait()`` only returns once every pipe is closed, which a background child holding
    stdout can delay forever; ``exited`` resolves on the exit itself.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=READ_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _spawn(program: str, *args: str, **kwargs: Any,
                 ) -> tuple[asyncio.subprocess.Process, _ExitProtocol]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(lambda: _ExitProtocol(loop), program,
                                                     *args, **kwargs)
    assert isinstance(protocol, _ExitProtocol)
    return asyncio.subprocess.Process(transport, protocol, loop), protocol


@dataclass
class _Job:
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    pid: int | None = None


class StandaloneExecutor:
    """Runs JobSpecs whose target is a StandaloneTarget."""

    def __init__(self, store: ArtifactStore, work_dir: Path, *, kill_grace: float = 5.0) -> None:
        self.store = store
        self.work_dir = Path(work_dir)
        self.kill_grace = kill_grace
        self._jobs: dict[str, _Job] = {}

    @property
    def running(self) -> list[str]:
        return list(self._jobs)

    async def start(self) -> None:
        """Remove job dirs left behind (e.g. after a crash)."""
        clear_work_dir(self.work_dir)

    async def cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None:
            return False
        job.cancelled.set()
        return True

    async def cancel_all(self) -> None:
        for job in list(self._jobs.values()):
            job.cancelled.set()

    async def run(self, spec: JobSpec, *, on_log: LogSink | None = None) -> JobResult:
        started = utcnow()
        if not isinstance(spec.target, StandaloneTarget):
            return failed_result(spec, started, "not a standalone job")
        if spec.job_id in self._jobs:
            return failed_result(spec, started, f"job {spec.job_id} is already running")
        job = _Job()
        self._jobs[spec.job_id] = job
        job_root: Path | None = None
        try:
            target = spec.target
            try:
                _check_executable(target.executable)
                run_as = resolve_user(target.run_as_user) if target.run_as_user else None
                if run_as is not None and os.geteuid() != 0 and run_as.uid != os.geteuid():
                    raise JobSetupError(
                        f"cannot run as {target.run_as_user}: the node is not running as root")
                job_root = self._make_root(spec, run_as)
                if spec.input_mounts or spec.output_mounts or run_as is not None:
                    outputs = await asyncio.to_thread(self._prepare, spec, job_root, run_as)
                else:
                    outputs = []
            except JobSetupError as exc:
                return failed_result(spec, started, str(exc))
            except (ArtifactError, OSError) as exc:
                return failed_result(spec, started, one_line(f"could not prepare the job: {exc}"))
            return await self._execute(spec, job, job_root, outputs, run_as, on_log, started)
        finally:
            self._jobs.pop(spec.job_id, None)
            if job_root is not None:
                try:
                    job_root.rmdir()  # the common case: the job left its root empty
                except OSError:
                    await asyncio.to_thread(shutil.rmtree, job_root, True)

    # -- setup -------------------------------------------------------------------------------
    def _make_root(self, spec: JobSpec, run_as: RunAs | None) -> Path:
        prefix = f"rn-job-{safe_name(spec.job_id)}-"
        if run_as is not None:
            # The node's data dir may be closed to other users; the system temp dir is not.
            return Path(tempfile.mkdtemp(prefix=prefix))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.work_dir, prefix=prefix))

    def _prepare(self, spec: JobSpec, job_root: Path,
                 run_as: RunAs | None) -> list[tuple[str, Path]]:
        for m in spec.input_mounts:
            self.store.materialize(m.artifact, mount_location(job_root, m.path))
        outputs = []
        for path in spec.output_mounts:
            where = mount_location(job_root, path)
            where.mkdir(parents=True, exist_ok=True)
            outputs.append((path, where))
        if run_as is not None:
            _chown_tree(job_root, run_as.uid, run_as.gid)
        return outputs

    def _environment(self, spec: JobSpec, job_root: Path) -> dict[str, str]:
        target = spec.target
        assert isinstance(target, StandaloneTarget)
        env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOME": str(job_root)}
        for key in ("LANG", "LC_ALL", "TZ"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(target.environment)
        env.update(spec.env)
        env["RN_JOB_DIR"] = str(job_root)
        return env

    # -- the process -------------------------------------------------------------------------
    async def _execute(self, spec: JobSpec, job: _Job, job_root: Path,
                       outputs: list[tuple[str, Path]], run_as: RunAs | None,
                       on_log: LogSink | None, started: dt.datetime) -> JobResult:
        target = spec.target
        assert isinstance(target, StandaloneTarget)
        cwd = job_root
        if target.working_directory:
            cwd = job_root / target.working_directory  # an absolute path replaces the root
        stdin_file: IO[bytes] | None = None
        if isinstance(spec.stdin, ArtifactRef):
            try:
                stdin_file = self.store.open(spec.stdin)
            except ArtifactError as exc:
                return failed_result(spec, started, str(exc))
        kwargs: dict[str, Any] = {}
        if run_as is not None:
            kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
        capture = OutputCapture(self.store, spec.job_id, on_log)
        try:
            try:
                proc, protocol = await _spawn(
                    target.executable, *target.arguments, *spec.args,
                    stdin=(stdin_file if stdin_file is not None
                           else asyncio.subprocess.PIPE if spec.stdin is not None
                           else asyncio.subprocess.DEVNULL),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    cwd=cwd, env=self._environment(spec, job_root), start_new_session=True,
                    **kwargs)
            except FileNotFoundError as exc:
                missing = exc.filename or target.executable
                what = "working directory" if str(missing) == str(cwd) else "executable"
                return failed_result(spec, started, f"{what} not found: {missing}")
            except PermissionError as exc:
                return failed_result(spec, started, one_line(
                    f"permission denied starting {target.executable}: {exc.strerror}"))
            except OSError as exc:
                return failed_result(spec, started, one_line(
                    f"could not start {target.executable}: {exc}"))
            finally:
                if stdin_file is not None:
                    stdin_file.close()
            job.pid = proc.pid
            outcome, error = await self._supervise(spec, job, proc, protocol, capture)
            refs = capture.finish()
            for path, where in outputs:
                refs[f"MOUNT:{path}"] = await asyncio.to_thread(self.store.put_dir, where)
            code = proc.returncode
            exit_code = code if code is None or code >= 0 else 128 - code
            if outcome is None:
                outcome = JobOutcome.COMPLETED if code == 0 else JobOutcome.FAILED
                if code is not None and code < 0:
                    error = f"killed by signal {signal.Signals(-code).name}"
                elif code != 0:
                    error = capture.exit_error(code)
            return JobResult(spec.job_id, outcome, exit_code, started, utcnow(), refs, error)
        finally:
            capture.abort()

    async def _supervise(self, spec: JobSpec, job: _Job, proc: asyncio.subprocess.Process,
                         protocol: _ExitProtocol,
                         capture: OutputCapture) -> tuple[JobOutcome | None, str | None]:
        exited = protocol.exited
        assert proc.stdout is not None and proc.stderr is not None
        readers = [asyncio.ensure_future(_read(proc.stdout, "stdout", capture)),
                   asyncio.ensure_future(_read(proc.stderr, "stderr", capture))]
        feeder = None
        if isinstance(spec.stdin, bytes) and proc.stdin is not None:
            feeder = asyncio.ensure_future(_feed(proc.stdin, spec.stdin))
        cancel_wait = asyncio.ensure_future(job.cancelled.wait())
        outcome: JobOutcome | None = None
        error: str | None = None
        try:
            done, _ = await asyncio.wait({exited, cancel_wait}, timeout=spec.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if exited not in done:
                if job.cancelled.is_set():
                    outcome, error = JobOutcome.CANCELLED, "cancelled"
                else:
                    outcome, error = (JobOutcome.TIMED_OUT,
                                      f"timed out after {spec.timeout:g}s")
                await self._terminate(proc, exited)
        finally:
            cancel_wait.cancel()
            # Whatever the group still runs (background children, or everything when run()
            # itself was cancelled) goes with the main process.
            _killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(exited), self.kill_grace + 5)
            if feeder is not None:
                feeder.cancel()
            try:
                await asyncio.wait_for(asyncio.gather(*readers), self.kill_grace + 5)
            except (TimeoutError, asyncio.CancelledError):
                for r in readers:
                    r.cancel()
            if protocol.transport is not None:
                protocol.transport.close()
        return outcome, error

    async def _terminate(self, proc: asyncio.subprocess.Process,
                         exited: asyncio.Future[None]) -> None:
        """SIGTERM the group; SIGKILL it when it has not exited after the grace period."""
        _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), self.kill_grace)
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)


async def _read(stream: asyncio.StreamReader, name: str, capture: OutputCapture) -> None:
    while chunk := await stream.read(READ_CHUNK):
        capture.feed(name, chunk)


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    try:
        pipe.write(data)
        await pipe.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        pipe.close()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _check_executable(path: str) -> None:
    p = Path(path)
    if not p.is_absolute():
        raise JobSetupError(f"executable path is not absolute: {path}")
    if not p.exists():
        raise JobSetupError(f"executable not found: {path}")
    if not p.is_file() or not os.access(p, os.X_OK):
        raise JobSetupError(f"not an executable file: {path}")
