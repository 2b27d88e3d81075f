"""The aioquic glue: endpoints, one protocol object per connection, the handshake on stream 0.

Everything protocol-shaped lives elsewhere (``network.handshake``, ``network.messages``); this
module only moves bytes between aioquic streams and those state machines, and tells its host
(the ``PeerTransport``) when a connection is verified, when it closes, and when a stream opens.

What a peer can make a connection hold is bounded here: receive windows that advance only as the
node reads (``network.quic_flow``), a cap on the streams it may open at once, an admission check
by the host before and at the identity exchange, and ``drain`` for writers that must wait for a
peer that reads slowly. A stream whose request has been read is switched to discarding, so what
a peer sends after it is never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import socket
import ssl
from pathlib import Path
from typing import Any, Protocol

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio.protocol import QuicStreamAdapter
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from cryptography.hazmat.primitives.serialization import Encoding

from network.handshake import Handshake, HandshakeFailed, PeerVerified
from network.identity import Identity
from network.limits import TransportLimits
from network.quic_flow import CountingReader, FlowControlledConnection
from network.udp_endpoint import SharedEndpoint

log = logging.getLogger("remote_network.quic")
# aioquic logs every connection's version and ALPN negotiation at INFO; keep its warnings only.
logging.getLogger("quic").setLevel(logging.WARNING)

ALPN = "remote-network-p2p"
# Application error codes on a stream this node gives up (STOP_SENDING / RESET_STREAM).
STREAM_REFUSED = 0x101
STREAM_STALLED = 0x102


class ConnectionHost(Protocol):
    """What a connection needs from the transport that owns it."""

    identity: Identity

    def is_blacklisted(self, peer_id: str) -> bool: ...
    def admit(self, conn: PeerConnection) -> str | None: ...
    def refusal(self, conn: PeerConnection, peer_id: str) -> str | None: ...
    def connection_verified(self, conn: PeerConnection) -> None: ...
    def connection_lost(self, conn: PeerConnection) -> None: ...
    def stream_opened(self, conn: PeerConnection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None: ...


def configuration(*, is_client: bool, cert_path: Path, key_path: Path,
                  idle_timeout: float, limits: TransportLimits | None = None) -> QuicConfiguration:
    limits = limits or TransportLimits()
    config = QuicConfiguration(alpn_protocols=[ALPN], is_client=is_client,
                               idle_timeout=idle_timeout, max_data=limits.connection_window,
                               max_stream_data=limits.stream_window)
    if is_client:
        # Self-signed per node: who the peer is gets proved by the identity exchange, which
        # also binds the certificate actually seen into both signatures.
        config.verify_mode = ssl.CERT_NONE
    else:
        config.load_cert_chain(str(cert_path), str(key_path))
    return config


def cert_fingerprint(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


class PeerConnection(QuicConnectionProtocol):
    """One QUIC connection to a peer, verified by the identity exchange before any other use."""

    def __init__(self, quic: QuicConnection, stream_handler: Any = None, *,
                 host: ConnectionHost, handshake_timeout: float,
                 limits: TransportLimits | None = None) -> None:
        self.limits = limits or TransportLimits()
        self._flow = FlowControlledConnection.adopt(quic, self.limits)
        super().__init__(quic, stream_handler=self._on_stream)
        self.host = host
        self.handshake_timeout = handshake_timeout
        self.is_client = quic.configuration.is_client
        self.peer_id: str | None = None
        self.peer_address: tuple[str, int] | None = None
        # The relay this connection's packets go through (None: direct).
        self.relayed_via: str | None = None
        # Dialled from a socket of its own, not the node's QUIC port (network.udp_endpoint).
        self.own_socket = False
        self.close_reason = ""
        self.verified: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.verified.add_done_callback(_consume)
        self._first_stream = True
        self._tasks: set[asyncio.Task[Any]] = set()
        # Set after each batch of packets: writers waiting in ``drain`` look again.
        self._progress = asyncio.Event()
        self._sweep_at = 2 * self.limits.max_incoming_streams
        self.refused = ""
        if not self.is_client:
            # A client that never starts the identity exchange is not kept around.
            asyncio.get_running_loop().call_later(handshake_timeout, self._expire_unverified)

    # -- facts about the connection --------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def peer_cert_fingerprint(self) -> bytes:
        """SHA-256 of the server certificate of this connection, as this end saw it."""
        if self.is_client:
            cert = getattr(self._quic.tls, "_peer_certificate", None)
        else:
            cert = self._quic.configuration.certificate
        if cert is None:
            return b""
        return cert_fingerprint(cert.public_bytes(Encoding.DER))

    def binding(self) -> bytes:
        """What both ends know of this connection only: its first connection id, the cert."""
        return hashlib.sha256(self._quic.original_destination_connection_id
                              + self.peer_cert_fingerprint()).digest()

    # -- the identity exchange -------------------------------------------------------------
    async def client_handshake(self, expected_peer_id: str | None) -> str:
        """Run the exchange as the dialling side; returns the verified peer id."""
        machine = Handshake(self.host.identity, is_client=True, binding=self.binding(),
                            is_blacklisted=self.host.is_blacklisted,
                            expected_peer_id=expected_peer_id,
                            refusal=functools.partial(self.host.refusal, self))
        self._first_stream = False
        reader, writer = await self.create_stream()
        machine.initiate()
        await self._run_handshake(machine, reader, writer)
        return await self.verified

    def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._first_stream and not self.is_client:
            self._first_stream = False
            machine = Handshake(self.host.identity, is_client=False, binding=self.binding(),
                                is_blacklisted=self.host.is_blacklisted,
                                refusal=functools.partial(self.host.refusal, self))
            self._spawn(self._run_handshake(machine, reader, writer))
        else:
            self._spawn(self._serve_stream(reader, writer))

    async def _run_handshake(self, machine: Handshake, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.handshake_timeout):
                while True:
                    out = machine.data_to_send()
                    if out:
                        writer.write(out)
                    if machine.done:
                        break
                    chunk = await reader.read(4096)
                    if not chunk:
                        self._fail("the peer closed the identity exchange")
                        return
                    for event in machine.receive(chunk):
                        if isinstance(event, PeerVerified):
                            self._verify(event.peer_id)
                        elif isinstance(event, HandshakeFailed):
                            out = machine.data_to_send()
                            if out:
                                writer.write(out)
                            self._fail(event.reason)
                            return
        except TimeoutError:
            self._fail(f"identity exchange timed out after {self.handshake_timeout:g}s")
        except ConnectionError:
            self._fail("connection lost during the identity exchange")
        else:
            with contextlib.suppress(Exception):
                writer.write_eof()
        finally:
            stop_reading(reader)

    def _expire_unverified(self) -> None:
        if not self.verified.done():
            self._fail(f"no identity exchange within {self.handshake_timeout:g}s")

    async def _keepalive(self) -> None:
        """PING a third of the idle timeout: a long quiet request (a job without output) keeps
        its connection, and a peer that died is noticed when the idle timeout passes."""
        interval = max(self._quic.configuration.idle_timeout / 3, 0.05)
        while self.is_open:
            await asyncio.sleep(interval)
            if self.is_open:
                self._quic.send_ping(0)
                self.transmit()

    def _verify(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self._spawn(self._keepalive())
        if self.peer_address is None and self.relayed_via is None:
            with contextlib.suppress(Exception):
                addr = self._quic._network_paths[0].addr
                self.peer_address = (str(addr[0]), int(addr[1]))
        if not self.verified.done():
            self.verified.set_result(peer_id)
        self.host.connection_verified(self)

    def _fail(self, reason: str) -> None:
        self.close_reason = reason
        if not self.verified.done():
            self.verified.set_exception(ConnectionRefusedError(reason))
        # Let the reject frame go out before the close.
        asyncio.get_running_loop().call_later(0.05, self.close_with, reason)

    # -- after the exchange ----------------------------------------------------------------
    async def _serve_stream(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.handshake_timeout):
                await asyncio.shield(self.verified)
        except (TimeoutError, ConnectionRefusedError):
            with contextlib.suppress(Exception):
                writer.close()
            return
        self.host.stream_opened(self, reader, writer)

    # -- bounds ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.is_client:
            self.refused = self.host.admit(self) or ""

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self.refused and self.is_open:
            # Refused at admission: the first packets are processed so the peer can read why.
            self.close_with(self.refused)

    def transmit(self) -> None:
        super().transmit()
        self._progress.set()
        if len(self._stream_readers) > self._sweep_at:
            self._sweep_readers()

    def _create_stream(self, stream_id: int) -> tuple[asyncio.StreamReader,
                                                       asyncio.StreamWriter]:
        # As aioquic's own, with a reader that reports what the application consumes.
        adapter = _StreamAdapter(self, stream_id)
        counting = CountingReader(functools.partial(self._consumed, stream_id))
        protocol = asyncio.streams.StreamReaderProtocol(counting)
        writer = asyncio.StreamWriter(adapter, protocol, counting, self._loop)
        self._stream_readers[stream_id] = counting
        self._flow.windows.open(stream_id)
        return counting, writer

    def _consumed(self, stream_id: int, n: int) -> None:
        self._flow.windows.consumed(stream_id, n)
        if self.is_open and self._flow.window_update_due(stream_id):
            self._transmit_soon()

    def _sweep_readers(self) -> None:
        """Forget the readers of streams QUIC has finished with, once read or discarded."""
        live = self._quic._streams
        for stream_id, reader in list(self._stream_readers.items()):
            done = reader.at_eof() or (isinstance(reader, CountingReader) and reader.discarding)
            if stream_id not in live and done:
                del self._stream_readers[stream_id]
                self._flow.forget_stream(stream_id)
        self._sweep_at = max(2 * self.limits.max_incoming_streams,
                             2 * len(self._stream_readers))

    def give_up_stream(self, stream_id: int, error_code: int = STREAM_REFUSED, *,
                       reset_sending: bool = True) -> None:
        """Read nothing more from a stream (STOP_SENDING), and unless ``reset_sending`` is
        False, send nothing more on it either (RESET_STREAM drops what is still queued)."""
        reader = self._stream_readers.get(stream_id)
        if isinstance(reader, CountingReader):
            reader.discard()
            reader.feed_eof()
        with contextlib.suppress(Exception):
            self._quic.stop_stream(stream_id, error_code)
        if reset_sending:
            with contextlib.suppress(Exception):
                self._quic.reset_stream(stream_id, error_code)
        self._transmit_soon()

    async def drain(self, stream_id: int, *, limit: int | None = None,
                    timeout: float | None = None) -> None:
        """Wait until at most ``limit`` bytes written on the stream are unacknowledged.

        A peer that does not read for ``timeout`` seconds loses the stream (ConnectionError)."""
        limit = self.limits.send_buffer if limit is None else limit
        timeout = self.limits.send_stall_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                while self.is_open and self.stream_buffered(stream_id) > limit:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            self.give_up_stream(stream_id, STREAM_STALLED)
            raise ConnectionResetError(f"the peer read nothing for {timeout:g}s") from None
        if not self.is_open:
            raise ConnectionResetError(self.close_reason or "connection closed")

    def close_with(self, reason: str) -> None:
        if self.is_open:
            self.close_reason = self.close_reason or reason
            self.close(reason_phrase=reason[:100])

    def quic_event_received(self, event: QuicEvent) -> None:
        super().quic_event_received(event)
        if isinstance(event, StreamReset):
            reader = self._stream_readers.get(event.stream_id)
            if reader is not None:
                reader.feed_eof()
        elif isinstance(event, ConnectionTerminated):
            self.close_reason = self.close_reason or event.reason_phrase or "connection closed"
            if not self.verified.done():
                self.verified.set_exception(ConnectionRefusedError(
                    event.reason_phrase or "connection closed during the identity exchange"))
            for task in list(self._tasks):
                task.cancel()
            if self.is_client or self.relayed_via is not None:
                asyncio.get_running_loop().call_soon(self._transport.close)
            self.host.connection_lost(self)

    def stream_buffered(self, stream_id: int) -> int:
        """Bytes written on a stream and not yet acknowledged (used to pace bulk writes)."""
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(getattr(sender, "_buffer_stop", 0) - getattr(sender, "_buffer_start", 0))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _StreamAdapter(QuicStreamAdapter):
    """aioquic's stream transport, whose ``close`` is safe on a stream already finished or
    reset (asyncio closes a writer's transport when the writer is collected)."""

    def close(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError):
            super().close()
        self._closing = True


def stop_reading(reader: asyncio.StreamReader) -> None:
    """What arrives on this stream from now on is dropped, not buffered."""
    if isinstance(reader, CountingReader):
        reader.discard()


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a failed ``verified`` as seen, so asyncio does not log it when nobody awaits it."""
    if not future.cancelled():
        future.exception()


async def serve(host: str, port: int, config: QuicConfiguration, *, owner: ConnectionHost,
                handshake_timeout: float, limits: TransportLimits | None = None,
                retry: bool = True) -> SharedEndpoint:
    """Listen for QUIC on UDP. With ``retry`` a new client must first prove it receives at its
    address (a QUIC Retry round trip), so spoofed sources cannot make the node hold state."""
    factory = functools.partial(PeerConnection, host=owner, handshake_timeout=handshake_timeout,
                                limits=limits)
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: SharedEndpoint(configuration=config, create_protocol=factory, retry=retry),
        local_addr=(host, port))
    return endpoint


async def dial(host: str, port: int, config: QuicConfiguration, *, owner: ConnectionHost,
               handshake_timeout: float, limits: TransportLimits | None = None,
               endpoint: SharedEndpoint | None = None) -> PeerConnection:
    """Open a QUIC connection (TLS done, identity exchange not yet run): from ``endpoint``'s
    socket where it can reach the address, else from a socket of its own."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=0)
    family, _, _, _, addr = infos[0]
    quic = QuicConnection(configuration=config)
    conn: PeerConnection
    if endpoint is not None and endpoint.can_reach((str(addr[0]), int(addr[1]))):
        conn = PeerConnection(quic, host=owner, handshake_timeout=handshake_timeout,
                              limits=limits)
        endpoint.attach(conn, quic)
    else:
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
        if host.startswith("127.") or host == "localhost":
            local = ("127.0.0.1", 0)
        _, protocol = await loop.create_datagram_endpoint(
            lambda: PeerConnection(quic, host=owner, handshake_timeout=handshake_timeout,
                                   limits=limits),
            local_addr=local)
        conn = protocol  # type: ignore[assignment]
        conn.own_socket = True
    conn.peer_address = (str(addr[0]), int(addr[1]))
    try:
        conn.connect(addr)
        await conn.wait_connected()
    except BaseException:
        conn.close()
        conn._transport.close()
        raise
    return conn
