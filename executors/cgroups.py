"""Per-job control groups: memory, CPU and pids limits, and a kill that reaches every process.

Both kinds of hierarchy are supported. cgroup v2 (one unified tree, at /sys/fs/cgroup or, on a
hybrid system, /sys/fs/cgroup/unified) is used when it offers the memory and pids controllers;
otherwise cgroup v1 (one tree per controller: /sys/fs/cgroup/memory, /pids, /cpu). Each
executor gets its own directory below the node's cgroup (``rn-<tag>``), one child per job; a job's
process is moved in before it runs the job (``procs_files``), so nothing it forks escapes.
``detect`` answers None where no tree is writable: the caller then falls back to rlimits.

The parsing and the values written are plain functions (``parse_mountinfo``, ``limit_values``),
apart from the file system work.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from executors.base import JobLimits

log = logging.getLogger("remote_network.executors.cgroups")

V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
KILL_ROUNDS = 200  # kill passes over a cgroup before giving up (each pass kills what it lists)


class CgroupError(Exception):
    """A job cgroup could not be made or set up."""


@dataclass(frozen=True, slots=True)
class Mount:
    fstype: str  # "cgroup" or "cgroup2"
    root: str  # the hierarchy's path that is mounted (mountinfo field 4)
    point: str
    options: frozenset[str]  # super options: the v1 controllers of that tree


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup mounts named in /proc/self/mountinfo."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        mounts.append(Mount(rest[0], fields[3], point, frozenset(rest[2].split(","))))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the v2 entry under the key ""."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            found[ctrl] = parts[2]
    return found


def limit_values(limits: JobLimits, version: int) -> dict[str, dict[str, str]]:
    """The files to write for ``limits``: {controller: {file: value}} (v2: controller "")."""
    mem, pids, cpus = limits.memory_bytes, limits.pids, limits.cpus
    if version == 2:
        out: dict[str, str] = {}
        if mem is not None:
            out["memory.max"] = str(mem)
            out["memory.swap.max"] = "0"
        if pids is not None:
            out["pids.max"] = str(pids)
        if cpus is not None:
            out["cpu.max"] = f"{max(1000, int(cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}"
        return {"": out}
    v1: dict[str, dict[str, str]] = {}
    if mem is not None:
        v1["memory"] = {"memory.limit_in_bytes": str(mem), "memory.memsw.limit_in_bytes": str(mem),
                        "memory.swappiness": "0"}
    if pids is not None:
        v1["pids"] = {"pids.max": str(pids)}
    if cpus is not None:
        v1["cpu"] = {"cpu.cfs_period_us": str(CPU_PERIOD_US),
                     "cpu.cfs_quota_us": str(max(1000, int(cpus * CPU_PERIOD_US)))}
    return v1


def _under(mount: Mount, own: str) -> Path:
    """The node's own cgroup inside a mounted tree (the mount point when it is not visible)."""
    rel = own
    if mount.root != "/" and (own == mount.root or own.startswith(mount.root + "/")):
        rel = own[len(mount.root):]
    candidate = Path(mount.point) / rel.lstrip("/")
    return candidate if candidate.is_dir() else Path(mount.point)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _writable_dir(parent: Path, name: str) -> Path | None:
    base = parent / name
    try:
        base.mkdir(exist_ok=True)
    except OSError:
        return None
    return base


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where this executor's job cgroups go: v2, one base; v1, a base per controller."""

    version: int
    bases: dict[str, Path]  # controller ("" for v2) -> this executor's directory

    def job(self, name: str) -> JobCgroup:
        return JobCgroup(self, name)

    def clear(self) -> int:
        """Kill and remove job cgroups an earlier run left behind; how many."""
        names: set[str] = set()
        for base in self.bases.values():
            with contextlib.suppress(OSError):
                names.update(p.name for p in base.iterdir() if p.is_dir())
        for name in names:
            cg = self.job(name)
            cg.kill()
            cg.remove()
        for base in self.bases.values():  # made again by the next job
            with contextlib.suppress(OSError):
                base.rmdir()
        return len(names)


def detect(tag: str, *, proc: Path = Path("/proc/self")) -> Hierarchy | None:
    """The hierarchy to put jobs in (a directory ``rn-<tag>`` made below the node's cgroup), or
    None where neither v2 nor v1 is usable."""
    mounts = parse_mountinfo(_read(proc / "mountinfo"))
    own = parse_proc_cgroup(_read(proc / "cgroup"))
    name = f"rn-{tag}"
    for m in mounts:
        if m.fstype == "cgroup2":
            found = _detect_v2(m, own.get("", "/"), name)
            if found is not None:
                return found
    bases: dict[str, Path] = {}
    for ctrl in V1_CONTROLLERS:
        m = next((m for m in mounts if m.fstype == "cgroup" and ctrl in m.options), None)
        if m is None:
            continue
        base = _writable_dir(_under(m, own.get(ctrl, "/")), name)
        if base is not None:
            bases[ctrl] = base
    if "memory" in bases and "pids" in bases:
        return Hierarchy(1, bases)
    return None


def _detect_v2(mount: Mount, own: str, name: str) -> Hierarchy | None:
    wanted = {"memory", "pids", "cpu"}
    # The node's own cgroup holds processes, so (but at the root) it cannot enable controllers
    # for children: the tree's root can, whatever it holds.
    for parent in dict.fromkeys([_under(mount, own), Path(mount.point)]):
        available = set(_read(parent / "cgroup.controllers").split())
        if not {"memory", "pids"} <= available:
            continue
        enabled = set(_read(parent / "cgroup.subtree_control").split())
        try:
            for ctrl in sorted((wanted & available) - enabled):
                _write(parent / "cgroup.subtree_control", f"+{ctrl}")
        except OSError:
            continue
        base = _writable_dir(parent, name)
        if base is None:
            continue
        try:
            enabled = set(_read(base / "cgroup.controllers").split())
            for ctrl in sorted(wanted & enabled
                               - set(_read(base / "cgroup.subtree_control").split())):
                _write(base / "cgroup.subtree_control", f"+{ctrl}")
        except OSError:
            with contextlib.suppress(OSError):
                base.rmdir()
            continue
        return Hierarchy(2, {"": base})
    return None


class JobCgroup:
    """One job's cgroup (a directory per v1 controller, or one v2 directory)."""

    def __init__(self, hierarchy: Hierarchy, name: str) -> None:
        self.hierarchy = hierarchy
        self.name = name
        self.dirs = {ctrl: base / name for ctrl, base in hierarchy.bases.items()}

    def create(self, limits: JobLimits) -> None:
        """Make the cgroup and write the limits; CgroupError (and nothing left) when it fails."""
        values = limit_values(limits, self.hierarchy.version)
        try:
            for d in self.dirs.values():
                try:
                    d.mkdir()
                except FileNotFoundError:  # the executor's directory, removed when idle
                    d.parent.mkdir(exist_ok=True)
                    d.mkdir()
            for ctrl, files in values.items():
                d = self.dirs.get(ctrl)
                if d is None:
                    continue
                for fname, value in files.items():
                    try:
                        _write(d / fname, value)
                    except OSError as exc:
                        # Swap accounting may be off (memsw, swap.max): the limit still holds.
                        if "swap" in fname or "memsw" in fname:
                            continue
                        raise CgroupError(f"cannot set {fname}: {exc.strerror}") from None
        except OSError as exc:
            self.remove()
            raise CgroupError(f"cannot create the job's cgroup: {exc.strerror}") from None
        except CgroupError:
            self.remove()
            raise

    def procs_files(self) -> list[Path]:
        """The files a process writes its pid to, to enter the cgroup (every v1 controller)."""
        return [d / "cgroup.procs" for d in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            for word in _read(d / "cgroup.procs").split():
                if word.isdigit():
                    found.add(int(word))
        return found

    def signal(self, sig: int, *, skip: Iterable[int] = ()) -> None:
        """Send ``sig`` to every process in the cgroup, but those in ``skip``."""
        left_out = set(skip)
        for pid in self.pids() - left_out:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> bool:
        """SIGKILL every process in the cgroup, new ones included; True when it is empty."""
        v2 = self.dirs.get("")
        if v2 is not None and (v2 / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(v2 / "cgroup.kill", "1")
        for _ in range(KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        return not self.pids()

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the job for want of memory."""
        if self.hierarchy.version == 2:
            events = _read(self.dirs[""] / "memory.events")
            return _counter(events, "oom_kill") > 0 or _counter(events, "oom") > 0
        d = self.dirs.get("memory")
        if d is None:
            return False
        if _counter(_read(d / "memory.oom_control"), "oom_kill") > 0:
            return True
        return _read(d / "memory.failcnt").strip() not in ("", "0") and (
            _read(d / "memory.max_usage_in_bytes").strip()
            == _read(d / "memory.limit_in_bytes").strip())

    def pids_exhausted(self) -> bool:
        """Whether a fork of the job was refused by the pids limit."""
        d = self.dirs.get("pids", self.dirs.get(""))
        if d is None:
            return False
        return _counter(_read(d / "pids.events"), "max") > 0

    def remove(self) -> None:
        """Remove the cgroup (after ``kill``), and the executor's directory when that is left
        empty; an exiting process may hold the cgroup a moment."""
        self._remove_dirs()
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                d.parent.rmdir()  # fails while another job's cgroup is in it

    def _remove_dirs(self) -> None:
        for d in self.dirs.values():
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        log.warning("cannot remove cgroup %s: %s", d, exc.strerror)
                        break
                    time.sleep(0.01)


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return 0
