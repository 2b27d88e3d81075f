"""The aioquic glue: endpoints, one protocol object per connection, the handshake on stream 0.

Everything protocol-shaped lives elsewhere (``network.handshake``, ``network.messages``); this
module only moves bytes between aioquic streams and those state machines, and tells its host
(the ``PeerTransport``) when a connection is verified, when it closes, and when a stream opens.
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
from aioquic.asyncio import serve as quic_serve
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent
from cryptography.hazmat.primitives.serialization import Encoding

from network.handshake import Handshake, HandshakeFailed, PeerVerified
from network.identity import Identity

log = logging.getLogger("remote_network.quic")
# aioquic logs every connection's version and ALPN negotiation at INFO; keep its warnings only.
logging.getLogger("quic").setLevel(logging.WARNING)

ALPN = "remote-network-p2p"
WINDOW = 16 * 1024 * 1024


class ConnectionHost(Protocol):
    """What a connection needs from the transport that owns it."""

    identity: Identity

    def is_blacklisted(self, peer_id: str) -> bool: ...
    def connection_verified(self, conn: PeerConnection) -> None: ...
    def connection_lost(self, conn: PeerConnection) -> None: ...
    def stream_opened(self, conn: PeerConnection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None: ...


def configuration(*, is_client: bool, cert_path: Path, key_path: Path,
                  idle_timeout: float) -> QuicConfiguration:
    config = QuicConfiguration(alpn_protocols=[ALPN], is_client=is_client,
                               idle_timeout=idle_timeout, max_data=4 * WINDOW,
                               max_stream_data=WINDOW)
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
                 host: ConnectionHost, handshake_timeout: float) -> None:
        super().__init__(quic, stream_handler=self._on_stream)
        self.host = host
        self.handshake_timeout = handshake_timeout
        self.is_client = quic.configuration.is_client
        self.peer_id: str | None = None
        self.peer_address: tuple[str, int] | None = None
        # The relay this connection's packets go through (None: direct).
        self.relayed_via: str | None = None
        self.close_reason = ""
        self.verified: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.verified.add_done_callback(_consume)
        self._first_stream = True
        self._tasks: set[asyncio.Task[Any]] = set()
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
                            expected_peer_id=expected_peer_id)
        self._first_stream = False
        reader, writer = await self.create_stream()
        machine.initiate()
        await self._run_handshake(machine, reader, writer)
        return await self.verified

    def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._first_stream and not self.is_client:
            self._first_stream = False
            machine = Handshake(self.host.identity, is_client=False, binding=self.binding(),
                                is_blacklisted=self.host.is_blacklisted)
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

    def close_with(self, reason: str) -> None:
        if self.is_open:
            self.close_reason = self.close_reason or reason
            self.close(reason_phrase=reason[:100])

    def quic_event_received(self, event: QuicEvent) -> None:
        super().quic_event_received(event)
        if isinstance(event, ConnectionTerminated):
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


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a failed ``verified`` as seen, so asyncio does not log it when nobody awaits it."""
    if not future.cancelled():
        future.exception()


async def serve(host: str, port: int, config: QuicConfiguration, *, owner: ConnectionHost,
                handshake_timeout: float) -> QuicServer:
    factory = functools.partial(PeerConnection, host=owner, handshake_timeout=handshake_timeout)
    return await quic_serve(host, port, configuration=config, create_protocol=factory)


async def dial(host: str, port: int, config: QuicConfiguration, *, owner: ConnectionHost,
               handshake_timeout: float) -> PeerConnection:
    """Open a QUIC connection (TLS done, identity exchange not yet run)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=0)
    family, _, _, _, addr = infos[0]
    local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
    if host.startswith("127.") or host == "localhost":
        local = ("127.0.0.1", 0)
    quic = QuicConnection(configuration=config)
    _, protocol = await loop.create_datagram_endpoint(
        lambda: PeerConnection(quic, host=owner, handshake_timeout=handshake_timeout),
        local_addr=local)
    conn: PeerConnection = protocol  # type: ignore[assignment]
    conn.peer_address = (str(addr[0]), int(addr[1]))
    try:
        conn.connect(addr)
        await conn.wait_connected()
    except BaseException:
        conn.close()
        conn._transport.close()
        raise
    return conn
