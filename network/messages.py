"""Length-prefixed JSON envelopes, the control messages peers exchange over QUIC streams.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The JSON is an
envelope ``{type, version, request_id, source_peer_id, timestamp, data}``. This module is pure:
bytes in, envelopes out (and back); it never touches a socket.

On a request stream the requester sends one envelope of the request's type; the answerer sends
zero or more ``event`` envelopes (progress, log lines, state changes) and then exactly one
``response`` or ``error`` envelope carrying the same ``request_id``. A ``bulk`` envelope is a
header frame after which the stream carries raw bytes (see ``network.bulk``). The two sides of
that exchange are the state machines of ``network.stream_protocol``.

A peer is a stranger: a length prefix over the frame limit is refused before its body is read,
and a body with a number that is not finite (``NaN``, ``Infinity``, ``1e999``), nesting past the
interpreter's recursion limit, or an envelope field of the wrong kind or size is a
``MessageError``.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_ID_CHARS = 128
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}\Z")

# Envelope types that answer a request.
RESPONSE = "response"
ERROR = "error"
EVENT = "event"
BULK = "bulk"


class MessageError(ValueError):
    """The peer sent a frame that is not a valid envelope (size, JSON, fields, version)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    source_peer_id: str = ""
    timestamp: float = 0.0
    version: int = VERSION

    @classmethod
    def new(cls, type_: str, data: dict[str, Any] | None = None, *, source_peer_id: str = "",
            request_id: str | None = None, now: float | None = None) -> Envelope:
        return cls(type_, dict(data or {}), request_id or uuid.uuid4().hex, source_peer_id,
                   time.time() if now is None else now)

    def reply(self, type_: str, data: dict[str, Any] | None = None, *,
              source_peer_id: str = "", now: float | None = None) -> Envelope:
        """An envelope answering this one (same ``request_id``)."""
        return Envelope.new(type_, data, source_peer_id=source_peer_id,
                            request_id=self.request_id, now=now)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "request_id": self.request_id,
                "source_peer_id": self.source_peer_id, "timestamp": self.timestamp,
                "data": self.data}

    @classmethod
    def from_dict(cls, doc: Any) -> Envelope:
        if not isinstance(doc, dict):
            raise MessageError("envelope must be a JSON object")
        kind = doc.get("type")
        if not isinstance(kind, str) or not kind:
            raise MessageError("envelope has no type")
        if not _TYPE.match(kind):
            raise MessageError(f"envelope type {kind[:64]!r} is not a message type name")
        version = doc.get("version")
        if version != VERSION:
            raise MessageError(f"unsupported envelope version {version!r} (expected {VERSION})")
        data = doc.get("data", {})
        if not isinstance(data, dict):
            raise MessageError(f"envelope '{kind}' data must be an object")
        request_id = doc.get("request_id", "")
        source = doc.get("source_peer_id", "")
        stamp = doc.get("timestamp", 0.0)
        if not isinstance(request_id, str) or not isinstance(source, str):
            raise MessageError(f"envelope '{kind}' request_id and source_peer_id must be strings")
        if len(request_id) > MAX_ID_CHARS or len(source) > MAX_ID_CHARS:
            raise MessageError(f"envelope '{kind}' request_id and source_peer_id must be at "
                               f"most {MAX_ID_CHARS} characters")
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            raise MessageError(f"envelope '{kind}' timestamp must be a number")
        if not math.isfinite(stamp) or stamp < 0:
            raise MessageError(f"envelope '{kind}' timestamp must be a finite, non-negative "
                               "number")
        return cls(kind, data, request_id, source, float(stamp), version)


def encode(envelope: Envelope, *, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """One frame holding ``envelope``; raises MessageError when it exceeds ``max_bytes``."""
    try:
        body = json.dumps(envelope.to_dict(), separators=(",", ":"),
                          allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise MessageError(f"envelope '{envelope.type}' is not JSON-serialisable: {exc}") from exc
    if len(body) > max_bytes:
        raise MessageError(f"envelope '{envelope.type}' is {len(body)} bytes, over the "
                           f"{max_bytes}-byte limit")
    return HEADER.pack(len(body)) + body


def _refuse_constant(name: str) -> Any:
    raise MessageError(f"frame holds {name}: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MessageError(f"frame holds {text[:32]}: numbers must be finite")
    return value


def decode_body(body: bytes) -> Envelope:
    try:
        doc = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except MessageError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MessageError(f"frame is not valid JSON: {exc}") from exc
    return Envelope.from_dict(doc)


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, take whole envelopes out.

    After a frame, ``tail()`` gives the bytes that followed it (the raw part of a bulk stream).
    """

    def __init__(self, *, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Envelope]:
        self._buffer += data
        out: list[Envelope] = []
        while True:
            envelope = self.next()
            if envelope is None:
                return out
            out.append(envelope)

    def next(self) -> Envelope | None:
        """The next whole envelope already buffered, or None."""
        if len(self._buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buffer)
        if length > self.max_bytes:
            raise MessageError(f"frame of {length} bytes is over the {self.max_bytes}-byte limit")
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER.size:end])
        del self._buffer[:end]
        return decode_body(body)

    def push(self, data: bytes) -> None:
        """Buffer ``data`` without decoding (use ``next()`` to take one envelope at a time)."""
        self._buffer += data

    def tail(self) -> bytes:
        """The buffered bytes not yet consumed as a frame (and forget them)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    @property
    def pending(self) -> int:
        return len(self._buffer)
