"""The chunked upload protocol as a plain state machine: no files, no sockets, no clock.

A client opens a session (FILE_UPLOAD_START) declaring the file's name, size, chunk size, chunk
count (derived from size and chunk size when left out) and sha256, and the upload type
(``standalone`` when left out); it sends chunks (FILE_UPLOAD_CHUNK) by index, in any order; it
closes the session (FILE_UPLOAD_END). This module decides what each message means; the caller
stores the bytes (``upload_store``) and passes ``now`` (monotonic seconds) to calls.

Rules:
- a chunk's index must be in range and its size exact (``chunk_size``, the last one the rest);
- a repeated chunk with the same bytes is ignored, with different bytes it fails the session;
- END with a chunk missing fails the session; the whole-file sha256 is checked by the caller;
- a session idle for ``ttl`` seconds expires.
Any failure ends the session: the caller discards its files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


class UploadType(StrEnum):
    STANDALONE = "standalone"
    DATA = "data"


class UploadError(Exception):
    """A message the protocol refuses. ``fatal``: the session is over and its files must go."""

    def __init__(self, message: str, *, session_id: str = "", fatal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.session_id = session_id
        self.fatal = fatal


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_file_size: int = 2 * 1024**3
    max_chunk_size: int = 4 * 1024 * 1024
    max_sessions: int = 32
    ttl: float = 600.0


@dataclass(frozen=True, slots=True)
class UploadSpec:
    """What FILE_UPLOAD_START declared, validated."""

    session_id: str
    upload_type: UploadType
    file_name: str
    file_size: int
    chunk_size: int
    total_chunks: int
    sha256: str
    service_name: str
    description: str = ""
    service_id: int | None = None

    def expected_size(self, index: int) -> int:
        return chunk_length(index, self.file_size, self.chunk_size, self.total_chunks)


def chunk_length(index: int, file_size: int, chunk_size: int, total_chunks: int) -> int:
    """The size chunk ``index`` of a file must have: ``chunk_size``, the last one the rest."""
    if index < total_chunks - 1:
        return chunk_size
    return file_size - chunk_size * (total_chunks - 1)


@dataclass
class UploadSession:
    spec: UploadSpec
    last_activity: float
    # chunk index -> sha256 of its bytes, for telling identical repeats from conflicts
    received: dict[int, str] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return self.spec.session_id

    @property
    def complete(self) -> bool:
        return len(self.received) == self.spec.total_chunks

    def missing(self) -> list[int]:
        return [i for i in range(self.spec.total_chunks) if i not in self.received]

    def progress(self) -> dict[str, Any]:
        total = self.spec.total_chunks
        return {
            "session_id": self.session_id,
            "received_chunks": len(self.received),
            "total_chunks": total,
            "percentage": round(100.0 * len(self.received) / total, 1) if total else 100.0,
        }


class ChunkVerdict(StrEnum):
    NEW = "new"  # store it
    DUPLICATE = "duplicate"  # identical repeat: nothing to do


def validate_file_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UploadError("file_name is required")
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise UploadError(f"Invalid file_name '{name}': no path separators or '..' allowed")
    if name.strip() != name or name in (".",) or len(name) > 255:
        raise UploadError(f"Invalid file_name '{name}'")
    if any(ord(ch) < 32 for ch in name):
        raise UploadError("Invalid file_name: control characters")
    return name


def _int(payload: dict[str, Any], key: str, *, minimum: int) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UploadError(f"{key} must be an integer")
    if value < minimum:
        raise UploadError(f"{key} must be at least {minimum}")
    return value


def parse_start(payload: dict[str, Any], limits: UploadLimits) -> UploadSpec:
    """Validate a FILE_UPLOAD_START payload."""
    session_id = payload.get("session_id")
    if not isinstance(session_id, str) or not SESSION_ID_RE.match(session_id):
        raise UploadError("session_id is required: 1-128 characters of letters, digits, '_', "
                          "'.' or '-'")
    try:
        kind = UploadType(str(payload.get("upload_type") or "standalone").strip().lower())
    except ValueError:
        raise UploadError("upload_type must be 'standalone' or 'data'",
                          session_id=session_id) from None
    try:
        file_name = validate_file_name(payload.get("file_name"))
        file_size = _int(payload, "file_size", minimum=1)
        chunk_size = _int(payload, "chunk_size", minimum=1)
        total_chunks = (_int(payload, "total_chunks", minimum=1)
                        if payload.get("total_chunks") is not None else -(-file_size // chunk_size))
    except UploadError as exc:
        raise UploadError(exc.message, session_id=session_id) from None
    if file_size > limits.max_file_size:
        raise UploadError(f"file_size {file_size} exceeds the limit of {limits.max_file_size} "
                          "bytes", session_id=session_id)
    if chunk_size > limits.max_chunk_size:
        raise UploadError(f"chunk_size {chunk_size} exceeds the limit of "
                          f"{limits.max_chunk_size} bytes", session_id=session_id)
    expected_chunks = -(-file_size // chunk_size)
    if total_chunks != expected_chunks:
        raise UploadError(f"total_chunks {total_chunks} does not match file_size/chunk_size "
                          f"(expected {expected_chunks})", session_id=session_id)
    sha = str(payload.get("sha256") or "").strip().lower()
    if not SHA256_RE.match(sha):
        raise UploadError("sha256 of the whole file is required (64 hex digits)",
                          session_id=session_id)
    service_name = payload.get("service_name") or file_name
    if not isinstance(service_name, str) or not service_name.strip():
        raise UploadError("service_name must be a string", session_id=session_id)
    description = payload.get("description") or ""
    if not isinstance(description, str):
        raise UploadError("description must be a string", session_id=session_id)
    service_id = payload.get("service_id")
    if service_id is not None and (isinstance(service_id, bool) or not isinstance(service_id, int)
                                   or service_id <= 0):
        raise UploadError("service_id must be a positive integer", session_id=session_id)
    if service_id is not None and kind is not UploadType.STANDALONE:
        raise UploadError("service_id applies to standalone uploads only", session_id=session_id)
    return UploadSpec(session_id, kind, file_name, file_size, chunk_size, total_chunks, sha,
                      service_name.strip(), description, service_id)


class UploadProtocol:
    """Every open upload session, and the rules for moving them on."""

    def __init__(self, limits: UploadLimits | None = None) -> None:
        self.limits = limits or UploadLimits()
        self._sessions: dict[str, UploadSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: Any) -> UploadSession:
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise UploadError(f"Unknown upload session '{session_id}'",
                              session_id=session_id if isinstance(session_id, str) else "")
        return session

    def start(self, payload: dict[str, Any], now: float) -> UploadSession:
        spec = parse_start(payload, self.limits)
        if spec.session_id in self._sessions:
            raise UploadError(f"Upload session '{spec.session_id}' is already open",
                              session_id=spec.session_id)
        if len(self._sessions) >= self.limits.max_sessions:
            raise UploadError("Too many uploads in progress; try again later",
                              session_id=spec.session_id)
        session = UploadSession(spec, now)
        self._sessions[spec.session_id] = session
        return session

    def chunk(self, session_id: Any, index: Any, data: bytes, now: float) -> ChunkVerdict:
        session = self.get(session_id)
        spec = session.spec
        if isinstance(index, bool) or not isinstance(index, int) or not (
                0 <= index < spec.total_chunks):
            self._fail(session)
            raise UploadError(f"chunk_index {index!r} out of range 0..{spec.total_chunks - 1}",
                              session_id=spec.session_id, fatal=True)
        if len(data) != spec.expected_size(index):
            self._fail(session)
            raise UploadError(f"chunk {index} has {len(data)} bytes, expected "
                              f"{spec.expected_size(index)}", session_id=spec.session_id,
                              fatal=True)
        digest = hashlib.sha256(data).hexdigest()
        session.last_activity = now
        known = session.received.get(index)
        if known is not None:
            if known == digest:
                return ChunkVerdict.DUPLICATE
            self._fail(session)
            raise UploadError(f"chunk {index} was sent twice with different content",
                              session_id=spec.session_id, fatal=True)
        session.received[index] = digest
        return ChunkVerdict.NEW

    def finish(self, session_id: Any, now: float) -> UploadSession:
        """Close a session whose chunks are all in; the caller then checks the whole hash."""
        session = self.get(session_id)
        self._sessions.pop(session.session_id, None)
        if not session.complete:
            missing = session.missing()
            shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10
                                                               else "")
            raise UploadError(f"Upload incomplete: missing chunk(s) {shown}",
                              session_id=session.session_id, fatal=True)
        session.last_activity = now
        return session

    def abort(self, session_id: str) -> UploadSession | None:
        return self._sessions.pop(session_id, None)

    def expire(self, now: float) -> list[UploadSession]:
        """Remove and return the sessions idle for longer than the ttl."""
        stale = [s for s in self._sessions.values()
                 if now - s.last_activity > self.limits.ttl]
        for session in stale:
            del self._sessions[session.session_id]
        return stale

    def _fail(self, session: UploadSession) -> None:
        self._sessions.pop(session.session_id, None)
