"""The request stream protocol as two state machines: bytes in, frames and events out.

Every request between peers has a QUIC stream of its own::

    requester -> answerer   one envelope of the request's type, then end of stream
    answerer  -> requester  zero or more ``event`` envelopes (progress of a long job), then
                            exactly one ``response`` or ``error`` envelope with the same
                            ``request_id``, then end of stream

``RequestCall`` is the requester's side, ``RequestAnswer`` the answerer's; both read through
an ``EnvelopeReader``, which takes one envelope at a time so that the bytes after it stay raw
(``tail()``: the body of a ``bulk`` stream, the datagrams of a relay tunnel) and, with a
``Budget``, holds the bytes of a frame not yet whole against it. Nothing here touches a socket
or an event loop (``network.streams`` is the asyncio glue), so tests wire the two sides together
in memory.

Two kinds of error, as in the identity exchange: a ``PeerError`` (``PeerClosed``,
``RemoteError``) when the peer sent junk, ended early or answered with an error, and
``StreamUsageError`` when the caller drove a machine out of order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from network.limits import Budget
from network.messages import (
    ERROR,
    EVENT,
    MAX_FRAME_BYTES,
    RESPONSE,
    Envelope,
    FrameDecoder,
    MessageError,
    encode,
)
from network.peer_errors import PeerClosed, RemoteError


class StreamUsageError(RuntimeError):
    """The caller drove a stream machine out of order (a bug here, not the peer's fault)."""


class Signal(enum.Enum):
    """What a reader has when it has no envelope to give."""

    NEED_DATA = "need_data"    # the next envelope is not whole yet: feed more bytes
    ENDED = "ended"            # the stream ended cleanly, between envelopes


NEED_DATA = Signal.NEED_DATA
ENDED = Signal.ENDED


@dataclass(frozen=True, slots=True)
class Progress:
    """An ``event`` envelope before the answer (a state change, a log line)."""

    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answered:
    """The ``response`` that ends the request."""

    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Unanswered:
    """The stream ended cleanly before any answer."""


CallEvent = Progress | Answered | Unanswered


class EnvelopeReader:
    """Envelopes out of one stream's bytes, one at a time.

    ``receive_data(b"")`` marks the end of the stream. With ``budget``, every byte received is
    held against it until ``release()`` (a peer over it is ``PeerClosed``)."""

    def __init__(self, peer_id: str, *, budget: Budget | None = None,
                 max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.peer_id = peer_id
        self.budget = budget
        self.held = 0
        self.ended = False
        self._decoder = FrameDecoder(max_bytes=max_bytes)

    def receive_data(self, data: bytes) -> None:
        if self.ended:
            raise StreamUsageError("bytes received after the end of the stream")
        if not data:
            self.ended = True
            return
        if self.budget is not None:
            if not self.budget.take(len(data)):
                raise PeerClosed(self.peer_id, f"requests being read hold over "
                                 f"{self.budget.limit} bytes on this connection, or the "
                                 "node's total is reached")
            self.held += len(data)
        self._decoder.push(data)

    def next_envelope(self) -> Envelope | Signal:
        """The next whole envelope, ``NEED_DATA``, or ``ENDED``; PeerClosed on junk."""
        try:
            envelope = self._decoder.next()
        except MessageError as exc:
            raise PeerClosed(self.peer_id, f"sent a bad frame: {exc}") from exc
        if envelope is not None:
            return envelope
        if not self.ended:
            return NEED_DATA
        if self._decoder.pending:
            raise PeerClosed(self.peer_id, "stream ended inside a frame")
        return ENDED

    def release(self) -> None:
        """Give back to the budget every byte held so far."""
        if self.budget is not None:
            self.budget.give(self.held)
        self.held = 0

    def tail(self) -> bytes:
        """The bytes received past the envelopes taken (and forget them)."""
        return self._decoder.tail()


def result_of(peer_id: str, msg_type: str, reply: Envelope) -> dict[str, Any]:
    """The ``data`` of a ``response``; an ``error`` is a RemoteError, anything else PeerClosed."""
    if reply.type == RESPONSE:
        return reply.data
    if reply.type == ERROR:
        raise RemoteError(peer_id, str(reply.data.get("error") or f"'{msg_type}' failed"))
    raise PeerClosed(peer_id, f"answered '{msg_type}' with unexpected '{reply.type}'")


class CallState(enum.Enum):
    WAITING = "waiting"        # the request is written; events may come, then the answer
    ANSWERED = "answered"
    FAILED = "failed"


class RequestCall:
    """The requester's side of one request stream."""

    def __init__(self, peer_id: str, msg_type: str, data: dict[str, Any] | None = None, *,
                 source_peer_id: str = "", now: float | None = None) -> None:
        self.peer_id = peer_id
        self.msg_type = msg_type
        self.request = Envelope.new(msg_type, data, source_peer_id=source_peer_id, now=now)
        self.state = CallState.WAITING
        self._reader = EnvelopeReader(peer_id)

    def opening(self) -> bytes:
        """The frame to write before ending the requester's half of the stream."""
        return encode(self.request)

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the stream; ``b""`` at its end."""
        self._reader.receive_data(data)

    def next_event(self) -> CallEvent | Signal:
        """The next event, or ``NEED_DATA``; a PeerError when the peer failed the request."""
        if self.state is not CallState.WAITING:
            raise StreamUsageError(f"the request is {self.state.value}")
        try:
            reply = self._reader.next_envelope()
            if reply is NEED_DATA:
                return NEED_DATA
            if reply is ENDED:
                self.state = CallState.FAILED
                return Unanswered()
            assert isinstance(reply, Envelope)
            if reply.type == EVENT:
                return Progress(reply.data)
            data = result_of(self.peer_id, self.msg_type, reply)
        except BaseException:
            self.state = CallState.FAILED
            raise
        self.state = CallState.ANSWERED
        return Answered(data)

    def unanswered(self, why: str = "") -> PeerClosed:
        """The error for a stream that ended before its answer (``why``: the connection's)."""
        return PeerClosed(self.peer_id, f"'{self.msg_type}' closed before an answer"
                          + (f" ({why})" if why else ""))


class AnswerState(enum.Enum):
    READING = "reading"        # the request is not whole yet
    ANSWERING = "answering"    # events may go out, then one response or error
    DONE = "done"


class RequestAnswer:
    """The answerer's side of one request stream."""

    def __init__(self, peer_id: str, *, source_peer_id: str = "",
                 budget: Budget | None = None) -> None:
        self.peer_id = peer_id
        self.source_peer_id = source_peer_id
        self.state = AnswerState.READING
        self.request: Envelope | None = None
        self._reader = EnvelopeReader(peer_id, budget=budget)

    def receive_data(self, data: bytes) -> None:
        """Bytes of the request; ``b""`` at the end of the stream. PeerClosed over budget."""
        if self.state is not AnswerState.READING:
            raise StreamUsageError("the request was already read")
        self._reader.receive_data(data)

    def next_request(self) -> Envelope | Signal:
        """The request once whole, ``NEED_DATA``, or ``ENDED`` (no request); PeerClosed on junk.

        Once the request is whole (or the stream ended), its bytes leave the budget."""
        if self.state is not AnswerState.READING:
            raise StreamUsageError("the request was already read")
        try:
            request = self._reader.next_envelope()
        except BaseException:
            self._reader.release()
            raise
        if request is NEED_DATA:
            return NEED_DATA
        self._reader.release()
        if request is ENDED:
            self.state = AnswerState.DONE
            return ENDED
        assert isinstance(request, Envelope)
        self.request = request
        self.state = AnswerState.ANSWERING
        return request

    def release(self) -> None:
        """Give back what the request held, when reading it stopped early (a timeout)."""
        self._reader.release()

    def tail(self) -> bytes:
        """The bytes that followed the request (a stream handler's own protocol)."""
        return self._reader.tail()

    def event(self, data: dict[str, Any]) -> bytes:
        """An ``event`` frame; only between the request and its answer."""
        return encode(self._answering().reply(EVENT, data, source_peer_id=self.source_peer_id))

    def response(self, data: dict[str, Any]) -> bytes:
        """The ``response`` frame that ends the answer."""
        request = self._answering()
        self.state = AnswerState.DONE
        return encode(request.reply(RESPONSE, data, source_peer_id=self.source_peer_id))

    def error(self, message: str) -> bytes:
        """The ``error`` frame that ends the answer (to a request that could not be read as
        well: then it carries no request id)."""
        request = self.request
        if self.state is AnswerState.DONE:
            raise StreamUsageError("the request was already answered")
        self.state = AnswerState.DONE
        body = {"error": message}
        if request is None:
            return encode(Envelope.new(ERROR, body, source_peer_id=self.source_peer_id))
        return encode(request.reply(ERROR, body, source_peer_id=self.source_peer_id))

    def _answering(self) -> Envelope:
        if self.state is not AnswerState.ANSWERING or self.request is None:
            raise StreamUsageError(f"cannot answer while {self.state.value}")
        return self.request
