"""Running one job as a local process (a standalone service's executable).

The process runs in its own session and process group, in a per-job root directory: an input or
output MOUNT path P is placed at ``<job root>/<P without leading slash>``, the working directory is
the job root unless the service sets one, and ``RN_JOB_DIR`` names the root. Its environment is
built from scratch (PATH, HOME, then the service's env, then the job's): the node's own environment
never leaks into it. Timeout and cancel kill the whole group: SIGTERM, then SIGKILL after a grace
period; whatever the group left running when the main process exits is killed too.

``run_as_user`` ("user" or "user:group", names or numbers) switches uid and gid for real and drops
supplementary groups; the job root is chowned to that user, so the job can write its outputs. A job
of another peer (``isolation.stranger``) runs as ``isolation.unprivileged_user`` when the node runs
as root (unless the service names a user other than root).

Every job runs in a bubblewrap sandbox (``executors.sandbox``): it sees none of the node's data dir
but ``readable_paths``, and writes only its job root. It runs in its own cgroup
(``executors.cgroups``) with the job's memory, CPU and pids limits; timeout and cancel kill every
process of it, one that called ``setsid()`` included. Where no cgroup is writable, rlimits bound
memory (address space) instead. Any file it writes, and each of stdout and stderr, is bounded by the
output limit, as is each output mount (watched while it runs, and checked when stored).
With ``sandbox=False`` (an explicit setting) jobs run as plain processes, as they did before
sandboxing: the job root then lives in the system temp dir when the user changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import hashlib
import logging
import os
import pwd
import shutil
import signal
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import psutil

from executors import cgroups, sandbox
from executors.artifacts import ArtifactError, ArtifactStore
from executors.base import (
    ArtifactRef,
    JobLimits,
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
from executors.capture import WATCH_SECONDS, OutputCapture, tree_size

log = logging.getLogger("remote_network.executors.standalone")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_CHUNK = 1 << 16
SANDBOX_UNAVAILABLE = "the job sandbox is unavailable: bubblewrap (bwrap) is not installed"


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


def real_parent(job_root: Path, where: Path, path: str) -> None:
    """Make ``where``'s parents under the job root, refusing any that is a symlink (an earlier
    input may have placed one): the node never writes through a link."""
    here = job_root
    for part in where.relative_to(job_root).parts[:-1]:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            raise JobSetupError(f"mount path {path!r} passes through a link or a file")
        if not here.exists():
            here.mkdir()
    if where.is_symlink():
        raise JobSetupError(f"mount path {path!r} is a link")


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
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)  # set by any stop
    pid: int | None = None
    # Why the job was stopped, when it was (cancel, a limit).
    stopped: tuple[JobOutcome, str] | None = None

    def stop(self, outcome: JobOutcome, error: str) -> None:
        if self.stopped is None:
            self.stopped = (outcome, error)
        self.cancelled.set()


@dataclass
class _Launch:
    """How one job's process is started."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    kwargs: dict[str, Any]
    args_fd: int | None = None
    cgroup: cgroups.JobCgroup | None = None


class StandaloneExecutor:
    """Runs JobSpecs whose target is a StandaloneTarget."""

    def __init__(self, store: ArtifactStore, work_dir: Path, *, kill_grace: float = 5.0,
                 data_dir: Path | None = None, sandbox: bool = True) -> None:
        """``data_dir``: the node's, hidden from every job (as are the store and ``work_dir``);
        ``sandbox``: False runs jobs as plain processes (an explicit setting)."""
        self.store = store
        self.work_dir = Path(work_dir)
        self.kill_grace = kill_grace
        self.sandbox = sandbox
        hidden = [Path(store.root), self.work_dir, *([Path(data_dir)] if data_dir else [])]
        self.hidden = tuple(dict.fromkeys(Path(os.path.realpath(p)) for p in hidden))
        self._jobs: dict[str, _Job] = {}
        self._cgroups: cgroups.Hierarchy | None = None
        self._cgroups_detected = False

    @property
    def running(self) -> list[str]:
        return list(self._jobs)

    async def start(self) -> None:
        """Remove job dirs and job cgroups left behind (e.g. after a crash)."""
        clear_work_dir(self.work_dir)
        hierarchy = self._hierarchy()
        if hierarchy is not None:
            removed = await asyncio.to_thread(hierarchy.clear)
            if removed:
                log.info("removed %d job cgroup(s) left by an earlier run", removed)

    def _hierarchy(self) -> cgroups.Hierarchy | None:
        if not self._cgroups_detected:
            self._cgroups_detected = True
            tag = hashlib.sha256(str(os.path.realpath(self.work_dir)).encode()).hexdigest()[:12]
            self._cgroups = cgroups.detect(tag)
            if self._cgroups is None:
                log.warning("no writable cgroup: job memory is bounded by rlimits, and CPU and "
                            "pids limits are not enforced")
            else:
                log.info("job limits enforced by cgroup v%d", self._cgroups.version)
        return self._cgroups

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
                if spec.isolation.stranger and os.geteuid() == 0 and (
                        run_as is None or run_as.uid == 0):
                    run_as = resolve_user(spec.isolation.unprivileged_user)
                if run_as is not None and os.geteuid() != 0 and run_as.uid != os.geteuid():
                    raise JobSetupError(
                        f"cannot run as {target.run_as_user}: the node is not running as root")
                if self.sandbox and shutil.which("bwrap") is None:
                    raise JobSetupError(SANDBOX_UNAVAILABLE)
                job_root = self._make_root(spec, run_as)
                if spec.input_mounts or spec.output_mounts or run_as is not None:
                    outputs = await asyncio.to_thread(self._prepare, spec, job_root, run_as)
                else:
                    outputs = []
            except (JobSetupError, sandbox.SandboxError) as exc:
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
        if run_as is not None and not self.sandbox:
            # The node's data dir may be closed to other users; the system temp dir is not.
            return Path(tempfile.mkdtemp(prefix=prefix))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.work_dir, prefix=prefix))

    def _prepare(self, spec: JobSpec, job_root: Path,
                 run_as: RunAs | None) -> list[tuple[str, Path]]:
        for m in spec.input_mounts:
            where = mount_location(job_root, m.path)
            real_parent(job_root, where, m.path)
            self.store.materialize(m.artifact, where)
        outputs = []
        for path in spec.output_mounts:
            where = mount_location(job_root, path)
            real_parent(job_root, where, path)
            where.mkdir(exist_ok=True)
            if where.is_symlink() or not where.is_dir():
                raise JobSetupError(f"output mount path {path!r} is not a directory")
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
    def _launch(self, spec: JobSpec, job_root: Path, run_as: RunAs | None) -> _Launch:
        """The command line, environment and cgroup of one job (made here, removed by the
        caller through ``_Launch.cgroup``)."""
        target = spec.target
        assert isinstance(target, StandaloneTarget)
        cwd = job_root
        if target.working_directory:
            cwd = job_root / target.working_directory  # an absolute path replaces the root
        env = self._environment(spec, job_root)
        argv = [target.executable, *target.arguments, *spec.args]
        kwargs: dict[str, Any] = {}
        launch_env, args_fd = env, None
        if self.sandbox:
            if not cwd.is_dir():
                raise JobSetupError(f"working directory not found: {cwd}")
            plan = self._plan(spec, job_root, Path(os.path.normpath(cwd)), run_as, env)
            setpriv = shutil.which("setpriv") if plan.switch_to is not None else None
            bwrap = shutil.which("bwrap")
            if bwrap is None:
                raise JobSetupError(SANDBOX_UNAVAILABLE)
            args_fd = os.memfd_create("rn-sandbox-args")
            try:
                data = sandbox.encode_args(sandbox.bwrap_options(plan))
                view = memoryview(data)
                while view:
                    view = view[os.write(args_fd, view):]
                os.lseek(args_fd, 0, os.SEEK_SET)
                argv = sandbox.sandboxed(bwrap, args_fd, plan, argv, setpriv=setpriv)
            except BaseException:
                os.close(args_fd)
                raise
            launch_env = {"PATH": DEFAULT_PATH}
            kwargs["pass_fds"] = (args_fd,)
            spawn_cwd = job_root
            if run_as is not None and os.geteuid() != 0:
                run_as = None  # the node's own user: nothing to switch
        else:
            spawn_cwd = cwd
            if run_as is not None:
                kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
        cgroup = None
        hierarchy = self._hierarchy()
        limits = spec.limits
        try:
            if hierarchy is not None:
                cgroup = hierarchy.job(f"{safe_name(spec.job_id)}-{uuid.uuid4().hex[:8]}")
                cgroup.create(limits)
                if not self.sandbox and run_as is not None:
                    for f in cgroup.procs_files():
                        os.chown(f, run_as.uid, run_as.gid)
            else:
                argv = _rlimited(argv, limits)
        except cgroups.CgroupError as exc:
            if args_fd is not None:
                os.close(args_fd)
            raise JobSetupError(str(exc)) from None
        argv = sandbox.enter(argv, procs_files=[str(f) for f in
                                                (cgroup.procs_files() if cgroup else [])],
                             fsize_blocks=sandbox.fsize_blocks(limits.output_bytes))
        return _Launch(argv, launch_env, spawn_cwd, kwargs, args_fd, cgroup)

    def _plan(self, spec: JobSpec, job_root: Path, cwd: Path, run_as: RunAs | None,
              env: dict[str, str]) -> sandbox.SandboxPlan:
        target = spec.target
        assert isinstance(target, StandaloneTarget)
        hidden = tuple(PurePosixPath(p) for p in self.hidden)
        readable = [PurePosixPath(os.path.realpath(p)) for p in spec.readable_paths]
        sandbox.check_readable(tuple(readable), hidden)
        root = PurePosixPath(job_root)
        # The service's own executable (its directory when that shows nothing of the node)
        # and working directory are the owner's choice: the job may read them.
        # The path as named (a link, e.g. a virtual environment's python under /tmp) and the
        # file it resolves to must both be there.
        named = PurePosixPath(os.path.normpath(target.executable))
        for exe in dict.fromkeys((PurePosixPath(os.path.realpath(target.executable)), named)):
            for candidate in (exe.parent, exe):
                if not any(sandbox.is_within(h, candidate) or sandbox.is_within(candidate, h)
                           for h in hidden):
                    readable.append(candidate)
                    break
            else:
                readable.append(exe)  # inside the data dir: the file itself, nothing beside it
        where = PurePosixPath(cwd)
        if not sandbox.is_within(where, root):
            if any(sandbox.is_within(where, h) or sandbox.is_within(h, where) for h in hidden) \
                    and not any(sandbox.is_within(where, r) for r in readable):
                raise JobSetupError(f"working directory {cwd} is inside the node's data dir")
            if not any(sandbox.is_within(where, r) for r in readable):
                readable.append(where)
        private = tuple(PurePosixPath(p) for p in sandbox.PRIVATE_DIRS
                        if os.path.isdir(p) and not os.path.islink(p))
        switch = (run_as.uid, run_as.gid) if run_as is not None and os.geteuid() == 0 else None
        return sandbox.SandboxPlan(
            job_root=root, cwd=where, hidden=hidden, readable=tuple(readable), private=private,
            network=spec.isolation.network, privileged=os.geteuid() == 0, switch_to=switch,
            env=env)

    async def _execute(self, spec: JobSpec, job: _Job, job_root: Path,
                       outputs: list[tuple[str, Path]], run_as: RunAs | None,
                       on_log: LogSink | None, started: dt.datetime) -> JobResult:
        target = spec.target
        assert isinstance(target, StandaloneTarget)
        try:
            launch = self._launch(spec, job_root, run_as)
        except (JobSetupError, sandbox.SandboxError) as exc:
            return failed_result(spec, started, str(exc))
        except OSError as exc:
            return failed_result(spec, started, one_line(f"could not prepare the job: {exc}"))
        try:
            return await self._execute_launched(spec, job, job_root, outputs, launch, on_log,
                                                started)
        finally:
            if launch.args_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(launch.args_fd)
            if launch.cgroup is not None:
                await asyncio.to_thread(_drop_cgroup, launch.cgroup)

    async def _execute_launched(self, spec: JobSpec, job: _Job, job_root: Path,
                                outputs: list[tuple[str, Path]], launch: _Launch,
                                on_log: LogSink | None, started: dt.datetime) -> JobResult:
        target = spec.target
        assert isinstance(target, StandaloneTarget)
        stdin_file: IO[bytes] | None = None
        if isinstance(spec.stdin, ArtifactRef):
            try:
                stdin_file = self.store.open(spec.stdin)
            except ArtifactError as exc:
                return failed_result(spec, started, str(exc))
        limit = spec.limits.output_bytes
        capture = OutputCapture(self.store, spec.job_id, on_log, limit=limit,
                                on_exceeded=lambda error: job.stop(JobOutcome.FAILED, error))
        try:
            try:
                proc, protocol = await _spawn(
                    *launch.argv,
                    stdin=(stdin_file if stdin_file is not None
                           else asyncio.subprocess.PIPE if spec.stdin is not None
                           else asyncio.subprocess.DEVNULL),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    cwd=launch.cwd, env=launch.env, start_new_session=True, **launch.kwargs)
            except FileNotFoundError as exc:
                missing = exc.filename or target.executable
                what = "working directory" if str(missing) == str(launch.cwd) else "executable"
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
                if launch.args_fd is not None:
                    os.close(launch.args_fd)
                    launch.args_fd = None
            job.pid = proc.pid
            watcher = None
            if limit is not None and outputs:
                watcher = asyncio.ensure_future(self._watch(spec, job, job_root, outputs))
            try:
                outcome, error = await self._supervise(spec, job, proc, protocol, capture,
                                                       launch.cgroup)
            finally:
                if watcher is not None:
                    watcher.cancel()
            refs = capture.finish()
            code = proc.returncode
            exit_code = code if code is None or code >= 0 else 128 - code
            if outcome is None and launch.cgroup is not None and code != 0 \
                    and spec.limits.memory_bytes is not None \
                    and await asyncio.to_thread(launch.cgroup.oom_killed):
                outcome = JobOutcome.FAILED
                error = (f"killed for using more than its memory limit of "
                         f"{spec.limits.memory_bytes} bytes")
            for path, where in outputs:
                try:
                    refs[f"MOUNT:{path}"] = await asyncio.to_thread(
                        self.store.put_dir, where, max_bytes=limit, within=job_root)
                except ArtifactError as exc:
                    if outcome is None or outcome == JobOutcome.COMPLETED:
                        outcome = JobOutcome.FAILED
                        error = one_line(f"output mount {path}: {exc}")
            if outcome is None:
                outcome = JobOutcome.COMPLETED if code == 0 else JobOutcome.FAILED
                if code is not None and code < 0:
                    error = f"killed by signal {signal.Signals(-code).name}"
                elif code != 0:
                    error = capture.exit_error(code)
            return JobResult(spec.job_id, outcome, exit_code, started, utcnow(), refs, error)
        finally:
            capture.abort()

    async def _watch(self, spec: JobSpec, job: _Job, job_root: Path,
                     outputs: list[tuple[str, Path]]) -> None:
        """Stop the job once an output mount holds more than the output limit."""
        limit = spec.limits.output_bytes
        assert limit is not None
        while not job.cancelled.is_set():
            await asyncio.sleep(WATCH_SECONDS)
            for path, where in outputs:
                size = await asyncio.to_thread(tree_size, where)
                if size is None or size > limit:
                    job.stop(JobOutcome.FAILED,
                             f"output limit of {limit} bytes exceeded on output mount {path}")
                    return

    async def _supervise(self, spec: JobSpec, job: _Job, proc: asyncio.subprocess.Process,
                         protocol: _ExitProtocol, capture: OutputCapture,
                         cgroup: cgroups.JobCgroup | None,
                         ) -> tuple[JobOutcome | None, str | None]:
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
                    outcome, error = job.stopped or (JobOutcome.CANCELLED, "cancelled")
                else:
                    outcome, error = (JobOutcome.TIMED_OUT,
                                      f"timed out after {spec.timeout:g}s")
                await self._terminate(proc, exited, cgroup)
            elif job.stopped is not None and job.stopped[0] == JobOutcome.FAILED:
                outcome, error = job.stopped  # a limit, hit as the job ended
        finally:
            cancel_wait.cancel()
            # Whatever the job still runs (background children, or everything when run()
            # itself was cancelled) goes with the main process.
            _killpg(proc.pid, signal.SIGKILL)
            if cgroup is not None:
                await asyncio.to_thread(cgroup.kill)
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

    async def _terminate(self, proc: asyncio.subprocess.Process, exited: asyncio.Future[None],
                         cgroup: cgroups.JobCgroup | None) -> None:
        """SIGTERM the job; SIGKILL it when it has not exited after the grace period."""
        if cgroup is None:
            _killpg(proc.pid, signal.SIGTERM)
        else:
            # The job's processes, not the sandbox's own (which would die at once, killing
            # the job without its grace period).
            skip = {proc.pid, *_children(proc.pid)} if self.sandbox else set()
            await asyncio.to_thread(cgroup.signal, signal.SIGTERM, skip=skip)
        try:
            await asyncio.wait_for(asyncio.shield(exited), self.kill_grace)
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            if cgroup is not None:
                await asyncio.to_thread(cgroup.kill)


def _children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _drop_cgroup(cgroup: cgroups.JobCgroup) -> None:
    cgroup.kill()
    cgroup.remove()


def _rlimited(argv: list[str], limits: JobLimits) -> list[str]:
    """``argv`` behind prlimit, bounding the address space, where no cgroup is available."""
    prlimit = shutil.which("prlimit")
    if prlimit is None or limits.memory_bytes is None:
        return argv
    return [prlimit, f"--as={limits.memory_bytes}", "--", *argv]


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
