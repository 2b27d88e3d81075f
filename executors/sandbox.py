"""The command line that runs a standalone job in a bubblewrap sandbox (pure functions).

What the job sees: the host's root read-only; a private /tmp, /run and /var/run (so no socket of
the host's daemons, the Docker engine's among them, can be reached); a minimal /dev; the /proc
of its own PID namespace; the node's data dir (and the artifact store and the executor's job
dirs) hidden under an empty tmpfs, with only ``readable`` paths bound back read-only; and its
own job directory, the one path it may write, bound back last. It runs in a new session, dies with
the node (``--die-with-parent``), and everything it forks lives in its PID namespace, so killing
the sandbox kills them all, ``setsid()`` or not. Without network it gets an empty network
namespace.

When the node runs as root the sandbox drops every capability; a job that must run as another
user keeps only CAP_SETUID/CAP_SETGID (and CAP_DAC_READ_SEARCH, to enter the job directory that
user owns), which ``setpriv`` spends at once switching to that user (changing uid from root
clears them all). The job's environment goes to bwrap as
``--setenv`` pairs on a file descriptor (``--args``): never in the environment of bwrap itself
(which runs as root, so no ``LD_PRELOAD`` of a service reaches it), never on a command line
other users of the host can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

PRIVATE_DIRS = ("/tmp", "/run", "/var/run")

# Enters the job's cgroup(s), bounds the size of any file it writes (512-byte blocks, "-" for
# none), then becomes the sandbox:  sh -c ENTER rn-enter <fsize> <procs file>... -- <argv>
ENTER_SCRIPT = ('fsize="$1"; shift; '
                '[ "$fsize" = - ] || ulimit -f "$fsize" || exit 125; '
                'for f do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; '
                'shift; exec "$@"')


class SandboxError(Exception):
    """The sandbox cannot be set up as asked; the message is the one line a user sees."""


@dataclass(frozen=True, slots=True)
class SandboxPlan:
    job_root: PurePosixPath  # the one writable path
    cwd: PurePosixPath
    hidden: tuple[PurePosixPath, ...] = ()  # the node's data dir, store, job dirs
    readable: tuple[PurePosixPath, ...] = ()  # bound back read-only
    private: tuple[PurePosixPath, ...] = tuple(PurePosixPath(p) for p in PRIVATE_DIRS)
    network: bool = True
    privileged: bool = False  # bwrap runs as root
    switch_to: tuple[int, int] | None = None  # (uid, gid) the job runs as, via setpriv
    env: dict[str, str] = field(default_factory=dict)


def is_within(path: PurePosixPath, parent: PurePosixPath) -> bool:
    return path == parent or parent in path.parents


def _outermost(paths: list[PurePosixPath],
               covered: tuple[PurePosixPath, ...] = ()) -> list[PurePosixPath]:
    """The paths not inside another of them (nor inside ``covered``), shortest first."""
    out: list[PurePosixPath] = []
    for p in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(is_within(p, q) for q in (*covered, *out)):
            out.append(p)
    return out


def check_readable(readable: tuple[PurePosixPath, ...],
                   hidden: tuple[PurePosixPath, ...]) -> None:
    """A readable path must not hold a hidden one (binding it would show the node's files)."""
    for r in readable:
        if not r.is_absolute():
            raise SandboxError(f"readable path is not absolute: {r}")
        for h in hidden:
            if is_within(h, r):
                raise SandboxError(f"readable path {r} would expose the node's data dir")


def _parents(dest: PurePosixPath, shadow: list[PurePosixPath],
             made: set[PurePosixPath]) -> list[str]:
    """Directories (0755, so any user can pass) leading to a bind inside an empty tmpfs."""
    top = next((s for s in shadow if is_within(dest, s)), None)
    if top is None:
        return []
    opts: list[str] = []
    for parent in reversed(dest.parents):
        if parent != top and is_within(parent, top) and parent not in made:
            made.add(parent)
            opts += ["--perms", "0755", "--dir", str(parent)]
    return opts


def bwrap_options(plan: SandboxPlan) -> list[str]:
    """Every bwrap option of ``plan``, in the order they must apply (no program)."""
    check_readable(plan.readable, plan.hidden)
    opts = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for p in plan.private:
        opts += ["--perms", "1777" if p == PurePosixPath("/tmp") else "0755", "--tmpfs", str(p)]
    shadow = [*plan.private]
    for h in _outermost(list(plan.hidden), tuple(plan.private)):
        opts += ["--perms", "0755", "--tmpfs", str(h)]
        shadow.append(h)
    made: set[PurePosixPath] = set()
    # Readable paths already visible through the read-only root need no bind of their own.
    for r in _outermost([r for r in plan.readable if any(is_within(r, s) for s in shadow)]):
        opts += [*_parents(r, shadow, made), "--ro-bind", str(r), str(r)]
    opts += _parents(plan.job_root, shadow, made)
    opts += ["--bind", str(plan.job_root), str(plan.job_root)]
    opts += ["--chdir", str(plan.cwd), "--unshare-pid", "--unshare-ipc", "--unshare-uts",
             "--die-with-parent", "--new-session"]
    if not plan.network:
        opts.append("--unshare-net")
    if plan.privileged:
        opts += ["--cap-drop", "ALL"]
        if plan.switch_to is not None:
            # Switching user, and entering the job dir (the user's own, closed to others).
            opts += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                     "--cap-add", "CAP_DAC_READ_SEARCH"]
    opts.append("--clearenv")
    for key, value in plan.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SandboxError(f"invalid environment variable {key[:80]!r}")
        opts += ["--setenv", key, value]
    return opts


def encode_args(options: list[str]) -> bytes:
    """Options as bwrap reads them from ``--args FD``: each ended by a NUL byte."""
    for o in options:
        if "\0" in o:
            raise SandboxError("a sandbox option holds a NUL byte")
    return b"".join(o.encode() + b"\0" for o in options)


def program(plan: SandboxPlan, argv: list[str], setpriv: str | None) -> list[str]:
    """What bwrap runs in the sandbox: ``argv``, behind setpriv when the user changes."""
    if plan.switch_to is None:
        return list(argv)
    if setpriv is None:
        raise SandboxError("cannot switch user in the sandbox: setpriv is not installed")
    uid, gid = plan.switch_to
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


def sandboxed(bwrap: str, args_fd: int, plan: SandboxPlan, argv: list[str], *,
              setpriv: str | None) -> list[str]:
    """bwrap reading its options from ``args_fd`` (``encode_args(bwrap_options(plan))``),
    then the program."""
    return [bwrap, "--args", str(args_fd), "--", *program(plan, argv, setpriv)]


def enter(argv: list[str], *, procs_files: list[str] | tuple[str, ...] = (),
          fsize_blocks: int | None = None, shell: str = "/bin/sh") -> list[str]:
    """``argv`` run once the process is in the job's cgroup(s), with the file size bound."""
    fsize = "-" if fsize_blocks is None else str(max(1, fsize_blocks))
    return [shell, "-c", ENTER_SCRIPT, "rn-enter", fsize, *procs_files, "--", *argv]


def fsize_blocks(output_bytes: int | None) -> int | None:
    """The largest file a job may write, in the 512-byte blocks of ``ulimit -f``."""
    if output_bytes is None:
        return None
    return output_bytes // 512 + 1
