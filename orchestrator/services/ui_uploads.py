"""The web UI's chunked upload, as a plain state machine: no files, no sockets, no clock.

The UI uploads a batch of files (a *group*, named by its ``upload_group_id``) into a service it
created beforehand (DATA or STANDALONE), one file at a time and in order. ``file.upload.start``
declares a file; the node assigns the session id. Chunks (``file.upload.chunk``) are stored by
index; the file is complete when every chunk is in (there is no end message), and the group is
complete when all of its ``total_files`` files are. This module decides what each message means
and what to answer; the caller stores the bytes (``upload_store``), computes each file's sha256,
processes complete groups, and passes ``now`` (monotonic seconds) to calls.

Rules:
- every declared number is bounded; ``total_chunks`` must be ``ceil(total_size / chunk_size)``
  (0 for an empty file); a chunk's size is exact (``chunk_size``, the last one the rest);
- ``file_path`` is a relative ``/``-separated path of valid names (no ``..``, ``.``, empty
  segment, backslash or control character), bounded in length and depth; its last segment is
  ``filename``; two files of a group never share a path, nor is one's path another's folder;
- a group's files agree on ``service_id`` and ``total_files``, and come in order: file ``i``
  starts once file ``i - 1`` is complete; a new group for a service drops an unfinished one;
- a repeated chunk with the same bytes is not counted again; with other bytes, or out of range,
  or of the wrong size, it fails the file's whole group;
- a group idle for ``ttl`` seconds expires, unless it is being processed.
Whatever fails a group removes it: the caller discards the files of the sessions it names.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.services.uploads import chunk_length
from orchestrator.states import ServiceType

START = "file.upload.start"
CHUNK = "file.upload.chunk"
PAUSE = "file.upload.pause"
RESUME = "file.upload.resume"
PROGRESS = "file.upload.progress"
COMPLETE = "file.upload.complete"
ERROR = "file.upload.error"

MAX_INT = 2**63 - 1


class ErrorCode(StrEnum):
    START_FAILED = "UPLOAD_START_FAILED"
    CHUNK_FAILED = "UPLOAD_CHUNK_FAILED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    INVALID_ENCODING = "INVALID_ENCODING"
    WRITE_FAILED = "WRITE_FAILED"
    PAUSED = "UPLOAD_PAUSED"


class UiUploadError(Exception):
    """A message the protocol refuses. ``discard``: the sessions whose files must go (the failed
    group's, empty when nothing changed)."""

    def __init__(self, message: str, code: ErrorCode, *, session_id: str = "",
                 discard: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.session_id = session_id
        self.discard = discard

    def reply(self) -> dict[str, Any]:
        return {"type": ERROR, "payload": {"session_id": self.session_id, "error": self.message,
                                           "code": str(self.code)}}


@dataclass(frozen=True, slots=True)
class UiUploadLimits:
    max_file_size: int = 2 * 1024**3
    # The sum of a group's declared sizes; the node uses its per-file limit for both.
    max_group_size: int = 2 * 1024**3
    max_chunk_size: int = 4 * 1024 * 1024
    max_files: int = 10_000
    max_groups: int = 16
    max_group_id_length: int = 128
    max_path_length: int = 1024
    max_path_depth: int = 32
    max_name_length: int = 255
    ttl: float = 600.0


@dataclass(frozen=True, slots=True)
class FileStart:
    """What ``file.upload.start`` declared, validated."""

    service_id: int
    group_id: str
    filename: str
    file_path: str
    file_index: int
    total_files: int
    total_size: int
    total_chunks: int
    chunk_size: int

    def expected_size(self, index: int) -> int:
        return chunk_length(index, self.total_size, self.chunk_size, self.total_chunks)


@dataclass
class UiSession:
    session_id: str
    spec: FileStart
    # chunk index -> sha256 of its bytes, for telling identical repeats from conflicts
    received: dict[int, str] = field(default_factory=dict)
    bytes_uploaded: int = 0
    paused: bool = False
    # the whole file's sha256, set by the caller once every chunk is in
    file_hash: str = ""

    @property
    def all_chunks_in(self) -> bool:
        return len(self.received) == self.spec.total_chunks

    @property
    def finished(self) -> bool:
        return bool(self.file_hash)

    def progress(self) -> dict[str, Any]:
        total = self.spec.total_chunks
        count = len(self.received)
        return {"type": PROGRESS, "payload": {
            "session_id": self.session_id, "chunks_received": count,
            "bytes_uploaded": self.bytes_uploaded,
            "percentage": round(100.0 * count / total, 2) if total else 100.0}}

    def complete(self) -> dict[str, Any]:
        return {"type": COMPLETE, "payload": {"session_id": self.session_id,
                                              "file_hash": self.file_hash}}


@dataclass
class UiGroup:
    group_id: str
    service_id: int
    kind: ServiceType
    total_files: int
    last_activity: float
    sessions: list[str] = field(default_factory=list)  # in file_index order
    paths: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    declared_bytes: int = 0
    processing: bool = False


class ChunkVerdict(StrEnum):
    NEW = "new"  # store it
    DUPLICATE = "duplicate"  # identical repeat: nothing to store


def _refuse(message: str) -> UiUploadError:
    return UiUploadError(message, ErrorCode.START_FAILED)


def _int(payload: dict[str, Any], key: str, *, minimum: int, maximum: int = MAX_INT) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(f"{key} must be an integer")
    if not minimum <= value <= maximum:
        raise _refuse(f"{key} must be between {minimum} and {maximum}")
    return value


def _name(value: str, what: str, limits: UiUploadLimits) -> str:
    if not value or value in (".", "..") or len(value) > limits.max_name_length:
        raise _refuse(f"Invalid {what} '{value[:80]}'")
    if value.strip() != value or "/" in value or "\\" in value:
        raise _refuse(f"Invalid {what} '{value[:80]}'")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise _refuse(f"Invalid {what}: control characters")
    return value


def validate_file_path(value: Any, limits: UiUploadLimits) -> str:
    """A relative '/'-separated path of valid names, bounded in length and depth."""
    if not isinstance(value, str) or not value:
        raise _refuse("file_path is required")
    if len(value) > limits.max_path_length:
        raise _refuse(f"file_path is longer than {limits.max_path_length} characters")
    if "\x00" in value or "\\" in value:
        raise _refuse("Invalid file_path: no NUL or backslash allowed")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise _refuse(f"file_path '{value[:80]}' must be a relative path")
    parts = value.split("/")
    if len(parts) > limits.max_path_depth:
        raise _refuse(f"file_path is deeper than {limits.max_path_depth} levels")
    if ".." in parts:
        raise _refuse(f"file_path '{value[:80]}' must not contain '..'")
    for part in parts:
        _name(part, "file_path", limits)
    return value


def parse_start(payload: dict[str, Any], limits: UiUploadLimits) -> FileStart:
    """Validate a ``file.upload.start`` payload."""
    service_id = _int(payload, "service_id", minimum=1)
    group_id = payload.get("upload_group_id")
    if not isinstance(group_id, str) or not group_id.strip():
        raise _refuse("upload_group_id is required")
    if len(group_id) > limits.max_group_id_length or any(
            ord(ch) < 32 or ord(ch) == 127 for ch in group_id):
        raise _refuse(f"upload_group_id must be at most {limits.max_group_id_length} "
                      "printable characters")
    filename = payload.get("filename")
    if not isinstance(filename, str) or not filename:
        raise _refuse("filename is required")
    filename = _name(filename, "filename", limits)
    file_path = validate_file_path(payload.get("file_path"), limits)
    if file_path.rsplit("/", 1)[-1] != filename:
        raise _refuse("file_path must end with filename")
    total_files = _int(payload, "total_files", minimum=1, maximum=limits.max_files)
    file_index = _int(payload, "file_index", minimum=0, maximum=total_files - 1)
    total_size = _int(payload, "total_size", minimum=0, maximum=limits.max_file_size)
    chunk_size = _int(payload, "chunk_size", minimum=1, maximum=limits.max_chunk_size)
    total_chunks = _int(payload, "total_chunks", minimum=0)
    expected = -(-total_size // chunk_size)
    if total_chunks != expected:
        raise _refuse(f"total_chunks {total_chunks} does not match total_size/chunk_size "
                      f"(expected {expected})")
    return FileStart(service_id, group_id, filename, file_path, file_index, total_files,
                     total_size, total_chunks, chunk_size)


def folders_of(path: str) -> list[str]:
    """The folders above a file: ``a/b/c`` -> ``a``, ``a/b``."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class UiUploadProtocol:
    """Every open group and its sessions, and the rules for moving them on."""

    def __init__(self, limits: UiUploadLimits | None = None, *,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.limits = limits or UiUploadLimits()
        self._new_id = new_id
        self._sessions: dict[str, UiSession] = {}
        self._groups: dict[str, UiGroup] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def groups(self) -> int:
        return len(self._groups)

    def get(self, session_id: Any) -> UiSession:
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            shown = session_id if isinstance(session_id, str) else ""
            raise UiUploadError(f"Unknown upload session '{shown[:80]}'",
                                ErrorCode.SESSION_NOT_FOUND, session_id=shown[:128])
        return session

    def group_of(self, session: UiSession) -> UiGroup:
        return self._groups[session.spec.group_id]

    def files(self, group: UiGroup) -> list[UiSession]:
        return [self._sessions[sid] for sid in group.sessions]

    # -- messages -------------------------------------------------------------------------------
    def start(self, spec: FileStart, kind: ServiceType,
              now: float) -> tuple[UiSession, tuple[str, ...]]:
        """Open the file's session -> (session, sessions of a dropped group to discard).

        ``kind``: the type of the service ``spec.service_id`` names, which the caller checked."""
        if kind not in (ServiceType.DATA, ServiceType.STANDALONE):
            raise _refuse("Uploads go to DATA or STANDALONE services only")
        group = self._groups.get(spec.group_id)
        dropped: tuple[str, ...] = ()
        if group is None:
            if spec.file_index != 0:
                raise _refuse(f"file_index {spec.file_index} of an unknown upload group: a "
                              "group starts with file 0")
            if spec.total_size > self.limits.max_group_size:
                raise _refuse(f"The upload group exceeds the limit of "
                              f"{self.limits.max_group_size} bytes")
            other = next((g for g in self._groups.values()
                          if g.service_id == spec.service_id), None)
            if other is not None and other.processing:
                raise _refuse("An upload into this service is being processed; try again later")
            if other is None and len(self._groups) >= self.limits.max_groups:
                raise _refuse("Too many uploads in progress; try again later")
            if other is not None:
                dropped = self._remove(other)
            group = UiGroup(spec.group_id, spec.service_id, kind, spec.total_files, now)
            self._groups[spec.group_id] = group
        else:
            self._check_joins(group, spec, kind)
        session = UiSession(self._new_id(), spec)
        group.sessions.append(session.session_id)
        group.paths.add(spec.file_path)
        group.folders.update(folders_of(spec.file_path))
        group.declared_bytes += spec.total_size
        group.last_activity = now
        self._sessions[session.session_id] = session
        return session, dropped

    def _check_joins(self, group: UiGroup, spec: FileStart, kind: ServiceType) -> None:
        if group.processing:
            raise _refuse("The upload group is complete")
        if spec.service_id != group.service_id or kind is not group.kind:
            raise _refuse("The files of an upload group must go to one service")
        if spec.total_files != group.total_files:
            raise _refuse("The files of an upload group must agree on total_files")
        if spec.file_index != len(group.sessions):
            raise _refuse(f"file_index {spec.file_index} out of order: expected "
                          f"{len(group.sessions)}")
        previous = self._sessions[group.sessions[-1]]
        if not previous.finished:
            raise _refuse("The previous file of the upload group is not complete")
        if spec.file_path in group.paths:
            raise _refuse(f"file_path '{spec.file_path[:80]}' appears twice in the upload group")
        if spec.file_path in group.folders or any(f in group.paths
                                                  for f in folders_of(spec.file_path)):
            raise _refuse(f"file_path '{spec.file_path[:80]}' clashes with a folder or a file "
                          "of the upload group")
        if group.declared_bytes + spec.total_size > self.limits.max_group_size:
            raise _refuse(f"The upload group exceeds the limit of {self.limits.max_group_size} "
                          "bytes")

    def chunk(self, session_id: Any, index: Any, data: bytes, now: float) -> ChunkVerdict:
        session = self.get(session_id)
        spec = session.spec
        if session.paused:
            raise UiUploadError("The upload is paused: resume it first", ErrorCode.PAUSED,
                                session_id=session.session_id)
        if isinstance(index, bool) or not isinstance(index, int) or not (
                0 <= index < spec.total_chunks):
            raise self.fail(session.session_id, f"chunk_index {index!r} out of range 0.."
                            f"{spec.total_chunks - 1}", ErrorCode.CHUNK_FAILED)
        if len(data) != spec.expected_size(index):
            raise self.fail(session.session_id, f"chunk {index} has {len(data)} bytes, expected "
                            f"{spec.expected_size(index)}", ErrorCode.CHUNK_FAILED)
        digest = hashlib.sha256(data).hexdigest()
        self.group_of(session).last_activity = now
        known = session.received.get(index)
        if known is not None:
            if known == digest:
                return ChunkVerdict.DUPLICATE
            raise self.fail(session.session_id, f"chunk {index} was sent twice with different "
                            "content", ErrorCode.CHUNK_FAILED)
        session.received[index] = digest
        session.bytes_uploaded += len(data)
        return ChunkVerdict.NEW

    def file_done(self, session_id: str, file_hash: str, now: float) -> UiGroup | None:
        """Record the whole file's sha256 -> its group, when that completes the group (which is
        then marked as processing: the caller processes it once, then calls ``finish_group``)."""
        session = self.get(session_id)
        if not session.all_chunks_in:
            raise self.fail(session_id, "The file is not complete", ErrorCode.CHUNK_FAILED)
        session.file_hash = file_hash
        group = self.group_of(session)
        group.last_activity = now
        if group.processing or len(group.sessions) < group.total_files:
            return None
        if not all(s.finished for s in self.files(group)):
            return None
        group.processing = True
        return group

    def pause(self, session_id: Any, now: float) -> None:
        session = self.get(session_id)
        session.paused = True
        self.group_of(session).last_activity = now

    def resume(self, session_id: Any, now: float) -> UiSession:
        session = self.get(session_id)
        session.paused = False
        self.group_of(session).last_activity = now
        return session

    # -- ending ---------------------------------------------------------------------------------
    def fail(self, session_id: str, message: str, code: ErrorCode) -> UiUploadError:
        """Remove the session's group; the error to send, naming the sessions to discard."""
        session = self._sessions.get(session_id)
        group = self._groups.get(session.spec.group_id) if session is not None else None
        discard = self._remove(group) if group is not None else ()
        return UiUploadError(message, code, session_id=session_id, discard=discard)

    def finish_group(self, group_id: str) -> tuple[str, ...]:
        """Remove a processed group -> its sessions, whose files the caller discards."""
        group = self._groups.get(group_id)
        return self._remove(group) if group is not None else ()

    def expire(self, now: float) -> tuple[str, ...]:
        """Remove the groups idle past the ttl (not those being processed) -> their sessions."""
        stale = [g for g in self._groups.values()
                 if not g.processing and now - g.last_activity > self.limits.ttl]
        return tuple(sid for group in stale for sid in self._remove(group))

    def _remove(self, group: UiGroup) -> tuple[str, ...]:
        self._groups.pop(group.group_id, None)
        for sid in group.sessions:
            self._sessions.pop(sid, None)
        return tuple(group.sessions)
