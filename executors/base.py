"""What every executor takes and gives back: one JobSpec in, one JobResult out.

Inputs and outputs travel as content-addressed artifacts (see ``executors.artifacts``): an
executor never receives another job's bytes inline, only references it resolves in the store.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class ArtifactKind(StrEnum):
    FILE = "file"  # raw bytes (stdout, stderr, logs, an uploaded file)
    TAR = "tar"  # a directory, as an uncompressed tar archive


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    sha256: str
    size: int
    kind: ArtifactKind = ArtifactKind.FILE
    # Peer that holds the bytes; empty for this node.
    peer_id: str = ""


@dataclass(frozen=True, slots=True)
class DockerTarget:
    image: str  # "name:tag" or an image id
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None


@dataclass(frozen=True, slots=True)
class StandaloneTarget:
    executable: str  # absolute path
    arguments: list[str] = field(default_factory=list)
    working_directory: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    run_as_user: str = ""  # "user" or "user:group"


@dataclass(frozen=True, slots=True)
class MountInput:
    """An artifact placed at ``path`` before the job starts (a tar is unpacked there)."""

    path: str
    artifact: ArtifactRef


@dataclass(frozen=True, slots=True)
class JobLimits:
    """What one job may use. ``None``: no limit of that kind.

    ``memory_bytes``, ``cpus`` (cores' worth of CPU time) and ``pids`` bound the job's processes
    (a cgroup, or the container); ``output_bytes`` bounds every output it writes (stdout, stderr,
    each output mount), past which the job is stopped and fails saying so.
    """

    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None
    output_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Isolation:
    """How far a job is kept from the node.

    Every job runs sandboxed: it sees none of the node's data dir and writes only its own job
    directory. ``stranger`` marks a job another peer asked for: a standalone one then runs as
    ``unprivileged_user`` when the node runs as root. ``network``: whether the job may reach
    the network at all.
    """

    network: bool = True
    stranger: bool = False
    unprivileged_user: str = "nobody"


@dataclass(frozen=True, slots=True)
class JobSpec:
    job_id: str  # unique on this node; names containers and process groups, used by cancel
    target: DockerTarget | StandaloneTarget
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    stdin: ArtifactRef | bytes | None = None
    input_mounts: list[MountInput] = field(default_factory=list)
    output_mounts: list[str] = field(default_factory=list)  # paths captured as TAR artifacts
    timeout: float = 300.0
    limits: JobLimits = field(default_factory=JobLimits)
    isolation: Isolation = field(default_factory=Isolation)
    # Host paths the job may read (a standalone service's own directory inside the data dir).
    readable_paths: tuple[str, ...] = ()


class JobOutcome(StrEnum):
    COMPLETED = "COMPLETED"  # exit code 0
    FAILED = "FAILED"  # non-zero exit, or could not start
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: str
    outcome: JobOutcome
    exit_code: int | None
    started_at: dt.datetime
    ended_at: dt.datetime
    # "STDOUT", "STDERR", "LOGS", and "MOUNT:<path>" for each output mount.
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    error: str | None = None  # one line saying why, when not COMPLETED
    # What decides the outputs, hashed (``orchestrator.content_identity.job_key``); "" unknown.
    job_key: str = ""
    # The executing peer's signed receipt (``orchestrator.receipts``, a DSSE envelope) of a
    # completed job; None for any other.
    receipt: dict[str, Any] | None = None


class LogSink(Protocol):
    def __call__(self, job_id: str, stream: str, line: str) -> None: ...


class Executor(Protocol):
    async def run(self, spec: JobSpec, *, on_log: LogSink | None = None) -> JobResult: ...

    async def cancel(self, job_id: str) -> bool: ...


def clear_work_dir(work_dir: Path) -> None:
    """Make an executor's job directory, emptied of what an earlier run (or a crash) left."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for leftover in work_dir.iterdir():
        shutil.rmtree(leftover, ignore_errors=True)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def one_line(text: str, limit: int = 500) -> str:
    """An error message squeezed onto one line."""
    return " ".join(text.split())[:limit] or "failed"


def safe_name(job_id: str) -> str:
    """A job id made safe for a file or directory name."""
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in job_id)
    return cleaned[:64] or "job"


def failed_result(spec: JobSpec, started: dt.datetime, error: str,
                  outcome: JobOutcome = JobOutcome.FAILED) -> JobResult:
    """The result of a job that did not run to an exit code."""
    return JobResult(spec.job_id, outcome, None, started, utcnow(), {}, one_line(error))
