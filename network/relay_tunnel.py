"""QUIC datagrams through a relay: framing on a byte stream, and a datagram transport over it.

A peer behind NAT cannot be dialled, but it keeps a QUIC connection to a relay. To reach it, a
peer asks the relay for a tunnel: a QUIC stream to the relay, which the relay splices to a stream
of its own connection to the peer behind NAT. The two ends then run an ordinary QUIC connection
(TLS, identity exchange and all) whose UDP datagrams travel as frames on that spliced stream, so
the relay carries only encrypted packets it cannot read, and counts their bytes.

``encode_datagram`` and ``DatagramDecoder`` are the framing (2-byte big-endian length, then the
datagram), pure. ``StreamDatagramTransport`` is what a QUIC protocol object sends through: the
``asyncio.DatagramTransport`` interface over a stream writer. ``pump`` feeds the datagrams read
from the stream to that protocol. ``network.tunnels`` dials and serves the QUIC connections that
run over a tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from typing import Any

MAX_DATAGRAM = 65535
_LENGTH = struct.Struct("!H")
READ_CHUNK = 64 * 1024
# Bytes a tunnel lets wait for the other end before it drops datagrams.
DEFAULT_BACKLOG = 4 * 1024 * 1024


class TunnelError(Exception):
    pass


def encode_datagram(datagram: bytes) -> bytes:
    if len(datagram) > MAX_DATAGRAM:
        raise TunnelError(f"datagram of {len(datagram)} bytes is over {MAX_DATAGRAM}")
    return _LENGTH.pack(len(datagram)) + datagram


class DatagramDecoder:
    """Bytes of the stream in, whole datagrams out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            out.append(bytes(self._buffer[_LENGTH.size:end]))
            del self._buffer[:end]
        return out

    @property
    def pending(self) -> int:
        return len(self._buffer)


class StreamDatagramTransport(asyncio.DatagramTransport):
    """Datagrams sent as frames on ``writer``; ``peer`` is the address QUIC sees for the other
    end (a name for the tunnel, not a socket address).

    ``backlog()`` tells how many bytes written on the stream the other end has not taken yet;
    over ``limit`` a datagram is dropped, as a full router queue would (QUIC resends what it
    needs), so a tunnel whose other end stops reading never queues without bound."""

    def __init__(self, writer: asyncio.StreamWriter, peer: tuple[str, int], *,
                 backlog: Callable[[], int] = lambda: 0,
                 limit: int = DEFAULT_BACKLOG) -> None:
        super().__init__()
        self._writer = writer
        self._peer = peer
        self._closing = False
        self._backlog = backlog
        self._limit = limit
        self.dropped = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:  # type: ignore[override]
        if self._closing:
            return
        if self._backlog() > self._limit:
            self.dropped += 1
            return
        self._writer.write(encode_datagram(bytes(data)))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            self._writer.write_eof()
        with contextlib.suppress(Exception):
            self._writer.close()

    def abort(self) -> None:
        self.close()


async def pump(reader: asyncio.StreamReader, protocol: asyncio.DatagramProtocol,
               peer: tuple[str, int], first: bytes = b"") -> None:
    """Hand every datagram read from ``reader`` to ``protocol`` until the stream ends; then
    tell the protocol its transport is gone."""
    decoder = DatagramDecoder()
    try:
        data = first
        while True:
            for datagram in decoder.feed(data):
                protocol.datagram_received(datagram, peer)
            data = await reader.read(READ_CHUNK)
            if not data:
                break
    finally:
        with contextlib.suppress(Exception):
            protocol.connection_lost(None)
