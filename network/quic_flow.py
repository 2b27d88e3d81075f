"""QUIC flow control that follows the reader: aioquic's windows, moved by what the node read.

aioquic 1.7.2 doubles a stream's receive window (and the connection's) whenever the peer has
sent more than half of it, whether or not anything read those bytes, and the asyncio glue puts
every received byte in a ``StreamReader`` that never pushes back. A peer could therefore make
the node buffer without bound by sending to a stream the node no longer reads.

Here the two aioquic methods that raise the limits are replaced, so that a limit is
``bytes consumed + window`` (``network.limits.ReceiveWindows``), and each stream's reader
reports what it hands to the application (``CountingReader``). Unread bytes are then at most a
window per stream and a connection window per connection, and QUIC itself (FLOW_CONTROL_ERROR)
closes a peer that sends past them. The rest of aioquic is used as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
)
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

from network.limits import ReceiveWindows, TransportLimits


class CountingReader(asyncio.StreamReader):
    """A stream reader that tells ``on_consumed(n)`` how many bytes the application took.

    ``discard()`` turns it into a sink: what arrives afterwards is dropped (and counted as
    consumed), for a stream whose request has been read in full.
    """

    def __init__(self, on_consumed: Callable[[int], None]) -> None:
        super().__init__(limit=2 ** 16)
        self._on_consumed = on_consumed
        self._held = 0
        self.discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed_data(self, data: bytes) -> None:
        if self.discarding:
            self._on_consumed(len(data))
            return
        super().feed_data(data)
        self._held = len(self._buffer)

    def discard(self) -> None:
        """Drop what is buffered and whatever comes later."""
        self.discarding = True
        self._buffer.clear()
        self._report()

    def _maybe_resume_transport(self) -> None:
        # asyncio calls this after every read that took bytes out of the buffer.
        super()._maybe_resume_transport()
        self._report()

    def _report(self) -> None:
        taken = self._held - len(self._buffer)
        self._held = len(self._buffer)
        if taken > 0:
            self._on_consumed(taken)


class FlowControlledConnection(QuicConnection):
    """A QuicConnection whose receive limits advance with ``windows`` (see module doc).

    Use ``adopt`` on a connection aioquic made (its server builds plain QuicConnections).
    """

    windows: ReceiveWindows

    @classmethod
    def adopt(cls, quic: QuicConnection, limits: TransportLimits) -> FlowControlledConnection:
        """Make ``quic`` (not yet started) one of these, with ``limits`` applied."""
        quic.__class__ = cls
        flow: FlowControlledConnection = quic  # type: ignore[assignment]
        flow.windows = ReceiveWindows(limits.stream_window, limits.connection_window)
        flow._local_max_data.value = flow._local_max_data.sent = limits.connection_window
        flow._local_max_stream_data_bidi_local = limits.stream_window
        flow._local_max_stream_data_bidi_remote = limits.stream_window
        flow._local_max_stream_data_uni = limits.stream_window
        # Concurrent streams the peer may open (QUIC raises the count as each one finishes);
        # this protocol uses bidirectional streams only.
        bidi = flow._local_max_streams_bidi
        bidi.value = bidi.sent = limits.max_incoming_streams
        uni = flow._local_max_streams_uni
        uni.value = uni.sent = 0
        return flow

    def window_update_due(self, stream_id: int) -> bool:
        stream = self._streams.get(stream_id)
        current = stream.max_stream_data_local if stream is not None else 0
        if stream is None or not current:
            return self.windows.connection_limit(self._local_max_data.value) \
                != self._local_max_data.value
        return self.windows.due(stream_id, current, self._local_max_data.value)

    def forget_stream(self, stream_id: int) -> None:
        self.windows.forget(stream_id)

    # -- the two aioquic methods that raise limits --------------------------------------------
    def _write_connection_limits(self, builder: QuicPacketBuilder,
                                 space: QuicPacketSpace) -> None:
        max_data = self._local_max_data
        max_data.value = self.windows.connection_limit(max_data.value)
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue  # batch MAX_STREAMS frames, as aioquic does
            if limit.value != limit.sent:
                buf = builder.start_frame(limit.frame_type,
                                          capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
                                          handler=self._on_connection_limit_delivery,
                                          handler_args=(limit,))
                buf.push_uint_var(limit.value)
                limit.sent = limit.value

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                             stream: QuicStream) -> None:
        if stream.max_stream_data_local:
            stream.max_stream_data_local = self.windows.stream_limit(
                stream.stream_id, stream.max_stream_data_local)
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA,
                                      capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                      handler=self._on_max_stream_data_delivery,
                                      handler_args=(stream,))
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

