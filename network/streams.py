"""The asyncio glue of the request stream protocol: asking on a stream, answering the streams
peers open.

The protocol itself (framing, order, budgets, errors) is ``network.stream_protocol``; this module
only moves bytes between QUIC streams and those machines. ``call`` asks one request on a fresh
stream of a connection. ``RequestDispatcher`` answers the streams a peer opens, one handler per
message type:

- a request handler is ``async handler(request: IncomingRequest) -> dict``. It may call
  ``request.emit(data)`` any number of times before returning; the requester sees those through
  ``on_event``. Raising ``RequestRejected(msg)`` answers with that message as the error.
- a stream handler takes the stream over after the request and answers, if at all, on it.

A request not whole within the request timeout, or over the connection's share of the request
budget (``TransportLimits.request_bytes_per_connection`` within ``request_bytes_total``), is
answered with an error and its stream given up; after a request, what the peer sends on its
stream is discarded unless a stream handler reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from network import quic
from network.limits import Budget, TransportLimits
from network.messages import Envelope
from network.peer_errors import PeerClosed, PeerError, RequestRejected
from network.stream_protocol import (
    ENDED,
    NEED_DATA,
    Answered,
    EnvelopeReader,
    Progress,
    RequestAnswer,
    RequestCall,
    StreamUsageError,
    Unanswered,
)

log = logging.getLogger("remote_network.transport.streams")

READ_CHUNK = 64 * 1024
EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
# A handler that takes over its stream after the request: (connection, request, reader, writer,
# bytes already read past the request). It answers, if at all, on the stream itself.
StreamHandler = Callable[[quic.PeerConnection, Envelope, asyncio.StreamReader,
                          asyncio.StreamWriter, bytes], Awaitable[None]]


class StreamConfig(Protocol):
    """What answering streams needs of the transport's settings."""

    request_timeout: float
    limits: TransportLimits


@dataclass
class IncomingRequest:
    """One request a peer sent, as its handler sees it."""

    peer_id: str
    envelope: Envelope
    _writer: asyncio.StreamWriter = field(repr=False)
    _answer: RequestAnswer = field(repr=False)
    _conn: quic.PeerConnection | None = field(repr=False, default=None)

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def data(self) -> dict[str, Any]:
        return self.envelope.data

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """The address the request's connection comes from (None: relayed, or not known)."""
        conn = self._conn
        if conn is None or conn.relayed_via is not None:
            return None
        return conn.peer_address

    @property
    def relayed_via(self) -> str | None:
        """The relay the request's connection runs through (None: a direct connection)."""
        return self._conn.relayed_via if self._conn is not None else None

    async def emit(self, data: dict[str, Any]) -> None:
        """Send an intermediate ``event`` frame to the requester (PeerClosed once it is gone)."""
        try:
            frame = self._answer.event(data)
        except StreamUsageError as exc:
            raise PeerClosed(self.peer_id, "the requester went away") from exc
        try:
            self._writer.write(frame)
        except Exception as exc:  # aioquic raises on a closed connection or reset stream
            raise PeerClosed(self.peer_id, "the requester went away") from exc
        if self._conn is not None:
            # A requester that does not read its events must not make the node queue them.
            try:
                await self._conn.drain(self._writer.get_extra_info("stream_id"))
            except ConnectionError as exc:
                raise PeerClosed(self.peer_id, f"the requester stopped reading: {exc}") from exc
        await asyncio.sleep(0)


Handler = Callable[[IncomingRequest], Awaitable[dict[str, Any]]]


async def read_envelope(reader: asyncio.StreamReader,
                        envelopes: EnvelopeReader) -> Envelope | None:
    """The next envelope on a stream; None at a clean end of stream (PeerClosed on junk)."""
    while True:
        got = envelopes.next_envelope()
        if isinstance(got, Envelope):
            return got
        if got is ENDED:
            return None
        envelopes.receive_data(await reader.read(READ_CHUNK))


async def call(conn: quic.PeerConnection, peer_id: str, msg_type: str,
               data: dict[str, Any] | None = None, *, source_peer_id: str,
               on_event: EventCallback | None = None) -> dict[str, Any]:
    """Ask one request on a new stream of ``conn``; its response ``data`` (a PeerError else)."""
    reader, writer = await conn.create_stream()
    request = RequestCall(peer_id, msg_type, data, source_peer_id=source_peer_id)
    writer.write(request.opening())
    writer.write_eof()
    while True:
        event = request.next_event()
        if event is NEED_DATA:
            request.receive_data(await reader.read(READ_CHUNK))
        elif isinstance(event, Progress):
            if on_event is not None:
                await maybe_async(on_event(event.data))
        elif isinstance(event, Answered):
            return event.data
        else:
            assert isinstance(event, Unanswered)
            raise request.unanswered(conn.close_reason)


class RequestDispatcher:
    """Answers the request streams peers open on the connections of one transport."""

    def __init__(self, peer_id: str, config: StreamConfig, *,
                 is_blacklisted: Callable[[str], bool]) -> None:
        self.peer_id = peer_id
        self.config = config
        self._is_blacklisted = is_blacklisted
        self._handlers: dict[str, Handler] = {}
        self._stream_handlers: dict[str, StreamHandler] = {}
        # Stream handlers that answer from the request alone: the rest of their stream is
        # discarded, as after an ordinary request.
        self._closed_streams: set[str] = set()
        self._request_bytes = Budget(config.limits.request_bytes_total)
        self._request_budgets: dict[quic.PeerConnection, Budget] = {}

    def register(self, msg_type: str, handler: Handler) -> None:
        self._handlers[msg_type] = handler

    def register_stream(self, msg_type: str, handler: StreamHandler, *,
                        reads_stream: bool = True) -> None:
        self._stream_handlers[msg_type] = handler
        if reads_stream:
            self._closed_streams.discard(msg_type)
        else:
            self._closed_streams.add(msg_type)

    def forget(self, conn: quic.PeerConnection) -> None:
        """``conn`` is gone: drop its share of the request budget."""
        self._request_budgets.pop(conn, None)

    async def answer(self, conn: quic.PeerConnection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        """Read the request on a stream a peer opened, and answer it."""
        peer_id = conn.peer_id or "?"
        answer = RequestAnswer(peer_id, source_peer_id=self.peer_id,
                               budget=self._request_budget(conn))
        try:
            async with asyncio.timeout(self.config.request_timeout):
                request = await _read_request(reader, answer)
        except (PeerError, TimeoutError) as exc:
            reason = (exc.reason if isinstance(exc, PeerError)
                      else f"no request within {self.config.request_timeout:g}s")
            log.info("dropping a request stream from %s: %s", peer_id, reason)
            with contextlib.suppress(Exception):
                writer.write(answer.error(reason))
                writer.write_eof()
            conn.give_up_stream(writer.get_extra_info("stream_id"), reset_sending=False)
            return
        finally:
            answer.release()
        if request is None:
            return
        stream_handler = self._stream_handlers.get(request.type)
        if stream_handler is None or request.type in self._closed_streams:
            # One request per stream: whatever the peer sends after it is dropped.
            quic.stop_reading(reader)
        frame: Callable[[Any], bytes]
        try:
            if self._is_blacklisted(peer_id):
                raise RequestRejected("peer is blacklisted")
            if stream_handler is not None:
                await stream_handler(conn, request, reader, writer, answer.tail())
                return
            handler = self._handlers.get(request.type)
            if handler is None:
                raise RequestRejected(f"unknown message type '{request.type}'")
            result = await handler(IncomingRequest(peer_id, request, writer, answer, conn))
            frame = answer.response
            body: Any = result
        except RequestRejected as exc:
            frame, body = answer.error, str(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for '%s' from %s failed", request.type, peer_id)
            frame, body = answer.error, f"internal error handling '{request.type}'"
        with contextlib.suppress(Exception):
            writer.write(frame(body))
            writer.write_eof()

    def _request_budget(self, conn: quic.PeerConnection) -> Budget:
        """What requests still being read on ``conn`` may hold (within the node's total)."""
        budget = self._request_budgets.get(conn)
        if budget is None:
            budget = Budget(self.config.limits.request_bytes_per_connection,
                            parent=self._request_bytes)
            if conn.is_open:
                self._request_budgets[conn] = budget
        return budget


async def _read_request(reader: asyncio.StreamReader, answer: RequestAnswer) -> Envelope | None:
    while True:
        got = answer.next_request()
        if isinstance(got, Envelope):
            return got
        if got is not NEED_DATA:
            return None
        answer.receive_data(await reader.read(READ_CHUNK))


async def maybe_async(value: Any) -> Any:
    """``value``, awaited first when it is awaitable (a hook that may be sync or async)."""
    return await value if inspect.isawaitable(value) else value
