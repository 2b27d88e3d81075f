"""What a service is, by content: a digest that is the same on every peer offering the same
thing, and the key of a job run on it.

- A Docker service: its image id (``sha256:...``, the digest of the image's configuration,
  which is the same wherever the same image was pulled or built).
- A standalone service: the sha256 of its executable; for one uploaded or cloned into an
  install directory, of that tree (each file's path relative to the root and its sha256, sorted).
- A DATA service: the sha256 of its clear file, taken as it was uploaded.

``job_key`` hashes a canonical encoding of what decides a job's outputs: the service digest,
the command, the environment, the arguments and the hash of each input by interface.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.job_request import JobRequest
from orchestrator.registry import ServiceView

PREFIX = "sha256:"
JOB_KEY_VERSION = 1
_CHUNK = 1024 * 1024


class _FileDigests:
    """sha256 of files, remembered by path, size and modification time."""

    def __init__(self, limit: int = 4096) -> None:
        self._known: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def of(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            return known
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            if len(self._known) >= self._limit:
                self._known.clear()
            self._known[key] = digest
        return digest


_files = _FileDigests()


def tree_digest(root: Path) -> str:
    """sha256 over ``<relative path> <sha256>`` lines of every regular file under ``root``,
    sorted by path (symlinks are named by their target, not followed)."""
    lines = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                lines.append(f"{rel} -> {os.readlink(path)}")
            elif path.is_file():
                lines.append(f"{rel} {_files.of(path)}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def service_digest(view: ServiceView) -> str:
    """The service's content digest (``sha256:<hex>``), or "" while there is nothing to hash
    (an image not pulled yet, an executable that is missing)."""
    if view.docker is not None:
        image_id = view.docker.image_id or ""
        return image_id if image_id.startswith(PREFIX) else ""
    if view.data is not None:
        return PREFIX + view.data.file_hash if view.data.file_hash else ""
    if view.standalone is not None:
        details = view.standalone
        try:
            if details.install_dir and Path(details.install_dir).is_dir():
                return PREFIX + tree_digest(Path(details.install_dir))
            exe = details.executable_path
            found = exe if os.path.isabs(exe) else shutil.which(exe) if exe else None
            if found and Path(found).is_file():
                return PREFIX + _files.of(Path(found).resolve())
        except OSError:
            return ""
    return ""


def job_key(service: str, *, command: Sequence[str] = (), env: Mapping[str, str] | None = None,
            args: Sequence[str] = (), inputs: Mapping[str, str] | None = None) -> str:
    """The key of a job: the same for the same service content, command, environment,
    arguments and input hashes (``interface -> sha256``), whatever their order."""
    canonical = json.dumps({
        "v": JOB_KEY_VERSION, "service": service, "command": list(command),
        "env": dict(sorted((env or {}).items())), "args": list(args),
        "inputs": dict(sorted((inputs or {}).items())),
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def _words(value: str | None) -> list[str]:
    return shlex.split(value) if value and value.strip() else []


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """What decides a job's outputs, resolved on the executing peer; ``key`` hashes it."""

    service: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    args: tuple[str, ...]
    inputs: Mapping[str, str]  # "<type>:<path>" -> sha256

    @property
    def key(self) -> str:
        return job_key(self.service, command=self.command, env=self.env, args=self.args,
                       inputs=self.inputs)


def job_identity(view: ServiceView, request: JobRequest, *,
                 clear_digest: Callable[[int], str]) -> JobIdentity:
    """What decides the outputs of the job ``request`` asks of the service ``view``, as the
    executing peer resolves it before running (the same key answers a dry run, names the
    receipt and finds a cached result).

    The command is the request's entrypoint and cmd, or the service's own (a standalone
    executable's arguments: the executable is in the service digest); the environment is the
    service's with the request's over it; each input is hashed by interface
    (``<type>:<path>``): an artifact by its sha256 (this node's DATA file by its clear
    digest, ``clear_digest(service id)``), a text by the sha256 of its bytes."""
    command: list[str]
    env = dict(request.env)
    if view.docker is not None:
        d = view.docker
        command = [*(request.entrypoint or _words(d.entrypoint)),
                   *(request.cmd or _words(d.cmd))]
    elif view.standalone is not None:
        s = view.standalone
        arguments = list(s.arguments or [])
        head: list[str] = []
        if request.entrypoint:
            head = list(request.entrypoint)
            arguments = []
        if request.cmd:
            arguments = list(request.cmd)
        command = [*head, *arguments]
        env = {**(s.environment_variables or {}), **env}
    else:
        command = []
    interfaces = {int(i.id or 0): i for i in view.interfaces}
    named: list[tuple[str, str]] = []
    if request.stdin_text is not None:
        named.append(("STDIN", hashlib.sha256(request.stdin_text.encode()).hexdigest()))
    for inp in request.inputs:
        kind, path = inp.interface_type, inp.path
        if kind is None:
            iface = interfaces.get(inp.interface_id or -1)
            kind, path = (iface.interface_type, iface.path) if iface is not None else (
                f"#{inp.interface_id}", "")
        if inp.artifact is not None:
            sha = (clear_digest(inp.data_service_id) if inp.data_service_id is not None
                   else inp.artifact.sha256)
        else:
            sha = hashlib.sha256((inp.text or "").encode()).hexdigest()
        named.append((f"{kind}:{path}" if path else str(kind), sha))
    inputs: dict[str, str] = {}
    for name, sha in sorted(named):  # one name twice (two ARG inputs): numbered
        key, n = name, 1
        while key in inputs:
            n += 1
            key = f"{name}#{n}"
        inputs[key] = sha
    return JobIdentity(service_digest(view), tuple(command), env, tuple(request.args), inputs)
