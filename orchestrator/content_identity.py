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
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from executors.base import ArtifactRef, DockerTarget, JobSpec
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


def spec_job_key(view: ServiceView, spec: JobSpec) -> str:
    """The key of the job ``spec`` runs on the service ``view``: its command (a Docker
    entrypoint and cmd, or a standalone executable's arguments: the executable itself is in
    the service digest), its environment, its arguments, and the hash of its stdin and of each
    mounted input by path."""
    target = spec.target
    if isinstance(target, DockerTarget):
        command = [*(target.entrypoint or []), *(target.cmd or [])]
        env = dict(spec.env)
    else:
        command = list(target.arguments)
        env = {**target.environment, **spec.env}
    inputs = {f"MOUNT:{m.path}": m.artifact.sha256 for m in spec.input_mounts}
    if isinstance(spec.stdin, ArtifactRef):
        inputs["STDIN"] = spec.stdin.sha256
    elif isinstance(spec.stdin, bytes):
        inputs["STDIN"] = hashlib.sha256(spec.stdin).hexdigest()
    return job_key(service_digest(view), command=command, env=env, args=spec.args,
                   inputs=inputs)
