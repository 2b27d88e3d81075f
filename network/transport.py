"""PeerTransport: verified QUIC connections to peers, request/response on streams, bulk blobs.

The transport knows peers by peer id only; a ``resolver(peer_id) -> [(host, port)]`` supplied by
its owner turns one into QUIC addresses, and ``is_blacklisted(peer_id)`` decides who is refused
(at the identity exchange, and on every request). One connection per peer is reused for every
request; either end may open streams on it.

A request handler is ``async handler(request: IncomingRequest) -> dict``. It may call
``request.emit(data)`` any number of times before returning (state changes and log lines of a
long job); the requester sees those through ``on_event``. Raising ``RequestRejected(msg)`` answers
with that message as the error.

Every peer is a stranger: ``TransportConfig.limits`` bounds what one may make the node hold
(receive windows, streams, connections in total, unverified and per peer, send backlogs, the bulk
channel), and a request that breaks a bound gets a named error or a reset stream, never a buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.server import QuicServer
from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives.serialization import Encoding

from network import bulk, quic
from network.certs import ensure_self_signed
from network.identity import Identity
from network.limits import Budget, ConnectionBook, ConnectionRefused, TransportLimits
from network.messages import (
    BULK,
    ERROR,
    EVENT,
    RESPONSE,
    Envelope,
    FrameDecoder,
    MessageError,
    encode,
)
from network.peer_errors import (
    BulkError,
    PeerClosed,
    PeerError,
    PeerTimeout,
    PeerUnreachable,
    RemoteError,
    RequestRejected,
)
from network.relay_tunnel import StreamDatagramTransport, pump

log = logging.getLogger("remote_network.transport")

PING = "ping"
# A tunnel to a peer through a relay: asked of the relay, and opened by it to the peer.
RELAY_TUNNEL = "relay_tunnel"
RELAY_INCOMING = "relay_incoming"
# QUIC packets in a tunnel: as large as aioquic can build (it writes packet and frame lengths as
# 2-byte varints, at most 16383: past that, its frames come out garbled).
TUNNEL_DATAGRAM_SIZE = 16000
Address = tuple[str, int]
Resolver = Callable[[str], list[Address]]
BlobSource = Callable[[str], Path | None]
EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
# A handler that takes over its stream after the request: (connection, request, reader, writer,
# bytes already read past the request). It answers, if at all, on the stream itself.
StreamHandler = Callable[[quic.PeerConnection, Envelope, asyncio.StreamReader,
                          asyncio.StreamWriter, bytes], Awaitable[None]]


@dataclass
class TransportConfig:
    host: str = "0.0.0.0"
    port: int = 30070
    tls_dir: Path = Path("tls")
    request_timeout: float = 10.0
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0
    # No packet for this long closes a connection (keepalive PINGs go at a third of it).
    idle_timeout: float = 30.0
    # The TLS-over-TCP bulk channel; False keeps bulk on QUIC streams only.
    bulk_tcp: bool = True
    # QUIC Retry (address validation) on the UDP port.
    retry: bool = True
    limits: TransportLimits = field(default_factory=TransportLimits)


@dataclass
class IncomingRequest:
    peer_id: str
    envelope: Envelope
    _writer: asyncio.StreamWriter = field(repr=False)
    _source: str = field(repr=False, default="")
    _conn: quic.PeerConnection | None = field(repr=False, default=None)

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def data(self) -> dict[str, Any]:
        return self.envelope.data

    async def emit(self, data: dict[str, Any]) -> None:
        """Send an intermediate ``event`` frame to the requester (PeerClosed once it is gone)."""
        frame = encode(self.envelope.reply(EVENT, data, source_peer_id=self._source))
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


class PeerTransport:
    def __init__(self, identity: Identity, config: TransportConfig, *,
                 resolver: Resolver | None = None,
                 is_blacklisted: Callable[[str], bool] | None = None) -> None:
        self.identity = identity
        self.config = config
        self.resolver: Resolver = resolver or (lambda _peer: [])
        # The relay through which a peer is reached (None: dial its addresses), and the peers
        # whose tunnels to us are accepted (our relay, when we are behind NAT).
        self.relay_for: Callable[[str], str | None] = lambda _peer: None
        self.accepts_tunnels_from: Callable[[str], bool] = lambda _peer: False
        self._is_blacklisted = is_blacklisted or (lambda _peer: False)
        # A blob source answers "where is the blob with this sha256?" (None: not here).
        self.blob_source: BlobSource = lambda _sha: None
        self.on_connected: list[Callable[[str, Address | None], None]] = []
        self.on_disconnected: list[Callable[[str], None]] = []
        self._handlers: dict[str, Handler] = {}
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._connections: dict[str, quic.PeerConnection] = {}
        self._all: set[quic.PeerConnection] = set()
        self._dialing: dict[str, asyncio.Task[quic.PeerConnection]] = {}
        self._server: QuicServer | None = None
        self._bulk_server: bulk.BulkServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cert_fingerprint = b""
        self.port = 0
        self.register(PING, self._on_ping)
        self.register(bulk.BULK_OFFER, self._on_bulk_offer)
        self.register_stream(RELAY_INCOMING, self._on_relay_incoming)
        self._tunnels = 0
        self._incoming = ConnectionBook(config.limits)
        self._request_bytes = Budget(config.limits.request_bytes_total)
        self._request_budgets: dict[quic.PeerConnection, Budget] = {}

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        cert, key = ensure_self_signed(cfg.tls_dir, common_name=f"rn-p2p-{self.peer_id[:16]}",
                                       stem="p2p")
        self._server_config = quic.configuration(is_client=False, cert_path=cert, key_path=key,
                                                 idle_timeout=cfg.idle_timeout,
                                                 limits=cfg.limits)
        self._client_config = quic.configuration(is_client=True, cert_path=cert, key_path=key,
                                                 idle_timeout=cfg.idle_timeout,
                                                 limits=cfg.limits)
        # A tunnel is a byte stream, not a path with an MTU: its QUIC packets can be large,
        # which makes for far fewer packets (and less work for three QUIC stacks) per byte.
        self._tunnel_client_config = dataclasses.replace(
            self._client_config, max_datagram_size=TUNNEL_DATAGRAM_SIZE)
        self._tunnel_server_config = dataclasses.replace(
            self._server_config, max_datagram_size=TUNNEL_DATAGRAM_SIZE)
        self._server = await quic.serve(cfg.host, cfg.port, self._server_config, owner=self,
                                        handshake_timeout=cfg.handshake_timeout,
                                        limits=cfg.limits, retry=cfg.retry)
        self.port = int(self._server._transport.get_extra_info("sockname")[1])
        self._cert_fingerprint = quic.cert_fingerprint(
            self._server_config.certificate.public_bytes(Encoding.DER))
        if cfg.bulk_tcp:
            self._bulk_server = bulk.BulkServer(
                cert_path=cert, key_path=key, max_connections=cfg.limits.bulk_max_connections,
                auth_timeout=cfg.limits.bulk_auth_timeout)
            self._bulk_server.start(cfg.host, 0)
        log.info("QUIC transport for %s on %s:%d", self.peer_id, cfg.host, self.port)

    async def stop(self) -> None:
        for task in list(self._dialing.values()):
            task.cancel()
        conns = list(self._all)
        for conn in conns:
            conn.close_with("node stopping")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.gather(*(c.wait_closed() for c in conns),
                                     return_exceptions=True)
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._bulk_server is not None:
            await asyncio.to_thread(self._bulk_server.stop)
            self._bulk_server = None

    # -- handlers --------------------------------------------------------------------------
    def register(self, msg_type: str, handler: Handler) -> None:
        self._handlers[msg_type] = handler

    def register_stream(self, msg_type: str, handler: StreamHandler) -> None:
        self._stream_handlers[msg_type] = handler

    # -- connections -----------------------------------------------------------------------
    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def connected_peers(self) -> list[str]:
        return sorted(self._connections)

    def is_blacklisted(self, peer_id: str) -> bool:
        return peer_id != self.peer_id and self._is_blacklisted(peer_id)

    def disconnect(self, peer_id: str, reason: str = "disconnected") -> int:
        """Close every connection to ``peer_id``; returns how many. Safe from any thread."""
        loop = self._loop
        if loop is not None and _other_thread(loop):
            loop.call_soon_threadsafe(self.disconnect, peer_id, reason)
            return 0
        if self._bulk_server is not None:
            self._bulk_server.revoke_peer(peer_id)
        closing = [c for c in self._all if c.peer_id == peer_id]
        for conn in closing:
            conn.close_with(reason)
        if self._connections.pop(peer_id, None) is not None:
            for hook in self.on_disconnected:
                _call_hook(hook, peer_id)
        return len(closing)

    def drop_blacklisted(self, peer_id: str) -> None:
        """The hook for the blacklist: a peer blacklisted now loses its connections."""
        self.disconnect(peer_id, "peer is blacklisted")

    async def connect(self, peer_id: str, *, timeout: float | None = None) -> quic.PeerConnection:
        """The live verified connection to ``peer_id``, dialling its addresses if needed."""
        if peer_id == self.peer_id:
            raise PeerUnreachable(peer_id, "this is our own peer id")
        if self.is_blacklisted(peer_id):
            raise PeerUnreachable(peer_id, "peer is blacklisted")
        conn = self._connections.get(peer_id)
        if conn is not None and conn.is_open:
            return conn
        task = self._dialing.get(peer_id)
        if task is None:
            task = asyncio.ensure_future(self._dial_peer(peer_id))
            self._dialing[peer_id] = task
            task.add_done_callback(lambda t: self._dial_done(peer_id, t))
        try:
            async with asyncio.timeout(timeout or self.config.connect_timeout
                                       + self.config.handshake_timeout):
                return await asyncio.shield(task)
        except TimeoutError as exc:
            raise PeerTimeout(peer_id, "connecting timed out") from exc

    def _dial_done(self, peer_id: str, task: asyncio.Task[quic.PeerConnection]) -> None:
        self._dialing.pop(peer_id, None)
        if not task.cancelled():
            task.exception()  # seen here; the waiters (if any) get it too

    async def connect_address(self, host: str, port: int, *,
                              expected_peer_id: str | None = None) -> str:
        """Dial an address, run the identity exchange; returns the peer id that answered."""
        conn = await self._dial(host, port, expected_peer_id)
        assert conn.peer_id is not None
        return conn.peer_id

    async def _dial_peer(self, peer_id: str) -> quic.PeerConnection:
        errors = []
        relay = self.relay_for(peer_id)
        if relay and relay not in (peer_id, self.peer_id):
            try:
                return await self._dial_via_relay(peer_id, relay)
            except PeerError as exc:
                errors.append(f"through relay {relay[:16]}: {exc.reason}")
        addresses = await _maybe_async(self.resolver(peer_id))
        if not addresses and not errors:
            raise PeerUnreachable(peer_id, "no known address")
        for host, port in addresses:
            try:
                return await self._dial(host, port, peer_id)
            except PeerError as exc:
                errors.append(f"{host}:{port} {exc.reason}")
        raise PeerUnreachable(peer_id, "; ".join(errors))

    async def _dial(self, host: str, port: int,
                    expected_peer_id: str | None) -> quic.PeerConnection:
        name = expected_peer_id or f"at {host}:{port}"
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                conn = await quic.dial(host, port, self._client_config, owner=self,
                                       handshake_timeout=self.config.handshake_timeout,
                                       limits=self.config.limits)
        except TimeoutError as exc:
            raise PeerUnreachable(name, f"no QUIC answer from {host}:{port} within "
                                  f"{self.config.connect_timeout:g}s") from exc
        except (OSError, ConnectionError) as exc:
            raise PeerUnreachable(name, f"cannot reach {host}:{port}: {exc}") from exc
        return await self._identify(conn, expected_peer_id, name)

    async def _identify(self, conn: quic.PeerConnection, expected_peer_id: str | None,
                        name: str) -> quic.PeerConnection:
        """Run the identity exchange on a connection we opened; the verified connection."""
        self._all.add(conn)
        try:
            await conn.client_handshake(expected_peer_id)
        except ConnectionRefusedError as exc:
            raise PeerUnreachable(name, f"identity exchange failed: {exc}") from exc
        return conn

    # -- tunnels through a relay ---------------------------------------------------------------
    async def _dial_via_relay(self, peer_id: str, relay: str) -> quic.PeerConnection:
        """A QUIC connection to ``peer_id`` whose packets go through ``relay`` (see
        ``network.relay_tunnel``); identity verified end to end, as for a direct one."""
        relay_conn = await self.connect(relay)
        reader, writer = await relay_conn.create_stream()
        writer.write(encode(Envelope.new(RELAY_TUNNEL, {"target": peer_id},
                                         source_peer_id=self.peer_id)))
        decoder = FrameDecoder()
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                reply = await _read_envelope(reader, decoder, relay)
        except TimeoutError as exc:
            writer.close()
            raise PeerTimeout(peer_id, f"relay {relay[:16]} did not open a tunnel") from exc
        if reply is None:
            raise PeerClosed(peer_id, f"relay {relay[:16]} closed the tunnel")
        try:
            _result(relay, RELAY_TUNNEL, reply)
        except RemoteError as exc:
            writer.close()
            raise PeerUnreachable(peer_id, f"relay {relay[:16]}: {exc.reason}") from exc
        self._tunnels += 1
        where = (f"relay-{relay[:16]}", self._tunnels)
        conn = quic.PeerConnection(QuicConnection(configuration=self._tunnel_client_config),
                                   host=self,
                                   handshake_timeout=self.config.handshake_timeout,
                                   limits=self.config.limits)
        conn.relayed_via = relay
        conn.connection_made(StreamDatagramTransport(
            writer, where, backlog=_backlog(relay_conn, writer), limit=_tunnel_backlog(self)))
        conn._spawn(pump(reader, conn, where, decoder.tail()))
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                conn.connect(where)
                await conn.wait_connected()
        except BaseException as exc:
            conn.close()
            conn._transport.close()
            if isinstance(exc, TimeoutError):
                raise PeerTimeout(peer_id, "no QUIC answer through the relay") from exc
            if isinstance(exc, ConnectionError):
                raise PeerUnreachable(peer_id, f"through the relay: {exc}") from exc
            raise
        return await self._identify(conn, peer_id, peer_id)

    async def _on_relay_incoming(self, relay_conn: quic.PeerConnection, request: Envelope,
                                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                 tail: bytes) -> None:
        """A relay opened a tunnel from another peer: serve QUIC on it, as on our UDP port."""
        if not self.accepts_tunnels_from(relay_conn.peer_id or ""):
            log.info("refused a tunnel from %s, which is not our relay", relay_conn.peer_id)
            writer.close()
            return
        self._tunnels += 1
        where = (f"relay-{(relay_conn.peer_id or '?')[:16]}", self._tunnels)
        made: list[quic.PeerConnection] = []

        def create_protocol(*args: Any, **kwargs: Any) -> quic.PeerConnection:
            conn = quic.PeerConnection(*args, host=self,
                                       handshake_timeout=self.config.handshake_timeout,
                                       limits=self.config.limits, **kwargs)
            conn.relayed_via = relay_conn.peer_id
            made.append(conn)
            return conn

        tunnel = StreamDatagramTransport(writer, where, backlog=_backlog(relay_conn, writer),
                                         limit=_tunnel_backlog(self))
        server = QuicServer(configuration=self._tunnel_server_config,
                            create_protocol=create_protocol)
        server.connection_made(tunnel)
        try:
            await pump(reader, server, where, tail)
        finally:
            for conn in made:
                conn.close_with("relay tunnel closed")
            tunnel.close()

    # ConnectionHost callbacks (called by quic.PeerConnection)
    def admit(self, conn: quic.PeerConnection) -> str | None:
        """A new incoming connection: None to go on with it, else why it is refused."""
        try:
            self._incoming.open(conn)
        except ConnectionRefused as exc:
            log.info("refused an incoming connection: %s", exc)
            return str(exc)
        return None

    def refusal(self, conn: quic.PeerConnection, peer_id: str) -> str | None:
        """Why ``peer_id`` may not have this incoming connection verified, or None."""
        return None if conn.is_client else self._incoming.refusal(conn, peer_id)

    def connection_verified(self, conn: quic.PeerConnection) -> None:
        assert conn.peer_id is not None
        self._incoming.verified(conn, conn.peer_id)
        self._all.add(conn)
        self._connections[conn.peer_id] = conn
        log.info("peer %s connected (%s)", conn.peer_id, "out" if conn.is_client else "in")
        # Only an address we dialled is one the peer listens on (an inbound one is ephemeral).
        address = conn.peer_address if conn.is_client and conn.relayed_via is None else None
        for hook in self.on_connected:
            _call_hook(hook, conn.peer_id, address)

    def connection_lost(self, conn: quic.PeerConnection) -> None:
        self._all.discard(conn)
        self._incoming.close(conn)
        self._request_budgets.pop(conn, None)
        peer_id = conn.peer_id
        if peer_id is None or self._connections.get(peer_id) is not conn:
            return
        del self._connections[peer_id]
        log.info("peer %s disconnected: %s", peer_id, conn.close_reason)
        for hook in self.on_disconnected:
            _call_hook(hook, peer_id)

    def stream_opened(self, conn: quic.PeerConnection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        conn._spawn(self._answer(conn, reader, writer))

    # -- requests --------------------------------------------------------------------------
    async def request(self, peer_id: str, msg_type: str, data: dict[str, Any] | None = None,
                      timeout: float | None = None, *,
                      on_event: EventCallback | None = None) -> dict[str, Any]:
        """Send one request and wait for its response ``data``; raises a PeerError."""
        timeout = self.config.request_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                conn = await self.connect(peer_id, timeout=timeout)
                reader, writer = await conn.create_stream()
                request = Envelope.new(msg_type, data, source_peer_id=self.peer_id)
                writer.write(encode(request))
                writer.write_eof()
                decoder = FrameDecoder()
                while True:
                    reply = await _read_envelope(reader, decoder, peer_id)
                    if reply is None:
                        raise PeerClosed(peer_id, f"'{msg_type}' closed before an answer"
                                         + _why(conn))
                    if reply.type == EVENT:
                        if on_event is not None:
                            await _maybe_async(on_event(reply.data))
                        continue
                    return _result(peer_id, msg_type, reply)
        except TimeoutError as exc:
            raise PeerTimeout(peer_id, f"no answer to '{msg_type}' within {timeout:g}s") from exc

    async def ping(self, peer_id: str, timeout: float | None = None) -> float:
        """Round-trip time of a ping request, in seconds."""
        await self.connect(peer_id, timeout=timeout)
        started = time.perf_counter()
        await self.request(peer_id, PING, {}, timeout)
        return time.perf_counter() - started

    async def _answer(self, conn: quic.PeerConnection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        peer_id = conn.peer_id or "?"
        stream_id = writer.get_extra_info("stream_id")
        decoder = FrameDecoder()
        budget = self._request_budget(conn)
        try:
            async with asyncio.timeout(self.config.request_timeout):
                request = await _read_envelope(reader, decoder, peer_id, budget=budget)
        except (PeerError, TimeoutError) as exc:
            reason = (exc.reason if isinstance(exc, PeerError)
                      else f"no request within {self.config.request_timeout:g}s")
            log.info("dropping a request stream from %s: %s", peer_id, reason)
            with contextlib.suppress(Exception):
                writer.write(encode(Envelope.new(ERROR, {"error": reason},
                                                 source_peer_id=self.peer_id)))
                writer.write_eof()
            conn.give_up_stream(stream_id, reset_sending=False)
            return
        if request is None:
            return
        if request.type not in self._stream_handlers:
            # One request per stream: whatever the peer sends after it is dropped.
            quic.stop_reading(reader)
        try:
            if self.is_blacklisted(peer_id):
                raise RequestRejected("peer is blacklisted")
            if request.type == bulk.BULK_GET:
                await self._send_blob_on_stream(conn, request, writer)
                return
            stream_handler = self._stream_handlers.get(request.type)
            if stream_handler is not None:
                await stream_handler(conn, request, reader, writer, decoder.tail())
                return
            handler = self._handlers.get(request.type)
            if handler is None:
                raise RequestRejected(f"unknown message type '{request.type}'")
            incoming = IncomingRequest(peer_id, request, writer, self.peer_id, conn)
            result = await handler(incoming)
            reply = request.reply(RESPONSE, result, source_peer_id=self.peer_id)
        except RequestRejected as exc:
            reply = request.reply(ERROR, {"error": str(exc)}, source_peer_id=self.peer_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for '%s' from %s failed", request.type, peer_id)
            reply = request.reply(ERROR, {"error": f"internal error handling '{request.type}'"},
                                  source_peer_id=self.peer_id)
        with contextlib.suppress(Exception):
            writer.write(encode(reply))
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

    async def _on_ping(self, request: IncomingRequest) -> dict[str, Any]:
        return {"peer_id": self.peer_id}

    # -- bulk ------------------------------------------------------------------------------
    async def fetch_bulk(self, peer_id: str, sha256: str, dest: Path, *,
                         timeout: float | None = None, prefer_tcp: bool = True) -> int:
        """Fetch blob ``sha256`` from ``peer_id`` into ``dest`` (hash-checked, atomic).

        Tries the TLS-over-TCP channel first, then a QUIC stream. Returns the size."""
        if bulk.valid_sha256(sha256) is None:
            raise BulkError(peer_id, f"not a sha256: {sha256!r}")
        timeout = self.config.request_timeout * 6 if timeout is None else timeout
        deadline = time.monotonic() + timeout
        conn = await self.connect(peer_id, timeout=timeout)
        if prefer_tcp and conn.relayed_via is None:  # no direct path to a relayed peer
            try:
                return await self._fetch_tcp(conn, peer_id, sha256, dest, deadline)
            except (BulkError, RemoteError):
                raise
            except PeerError as exc:
                if time.monotonic() >= deadline:
                    raise
                log.info("bulk channel to %s failed (%s); falling back to QUIC", peer_id, exc)
        return await self._fetch_quic(conn, peer_id, sha256, dest, deadline)

    async def _fetch_tcp(self, conn: quic.PeerConnection, peer_id: str, sha256: str,
                         dest: Path, deadline: float) -> int:
        offer = await self.request(peer_id, bulk.BULK_OFFER, {"sha256": sha256},
                                   max(deadline - time.monotonic(), 0.01))
        if not offer.get("port"):
            raise PeerUnreachable(peer_id, "peer offers no bulk channel")
        host = (conn.peer_address or ("127.0.0.1", 0))[0]
        # The holder names its certificate in the offer, which arrived over the QUIC connection
        # its identity exchange verified; that holds whichever side dialled.
        try:
            pin = bytes.fromhex(str(offer.get("cert_sha256") or ""))
        except ValueError:
            pin = b""
        if len(pin) != 32:
            if not conn.is_client:
                raise PeerUnreachable(peer_id, "bulk offer names no certificate")
            pin = conn.peer_cert_fingerprint()
        sink = bulk.BlobSink(dest, sha256, int(offer["size"]), peer_id=peer_id)
        try:
            await asyncio.to_thread(bulk.fetch_tls, (host, int(offer["port"])),
                                    str(offer["token"]), sink,
                                    pin_sha256=pin, deadline=deadline)
            return sink.finish()
        except BaseException:
            sink.abort()
            raise

    async def _on_bulk_offer(self, request: IncomingRequest) -> dict[str, Any]:
        sha256 = bulk.valid_sha256(request.data.get("sha256"))
        if sha256 is None:
            raise RequestRejected("bulk_offer needs a sha256")
        path = await _maybe_async(self.blob_source(sha256))
        if path is None:
            raise RequestRejected(f"blob {sha256} not found")
        if self._bulk_server is None:
            return {"port": 0}
        token = self._bulk_server.grant(request.peer_id, sha256, path)
        return {"port": self._bulk_server.port, "token": token, "size": path.stat().st_size,
                "cert_sha256": self._cert_fingerprint.hex()}

    async def _fetch_quic(self, conn: quic.PeerConnection, peer_id: str, sha256: str,
                          dest: Path, deadline: float) -> int:
        sink: bulk.BlobSink | None = None
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                reader, writer = await conn.create_stream()
                writer.write(encode(Envelope.new(bulk.BULK_GET, {"sha256": sha256},
                                                 source_peer_id=self.peer_id)))
                writer.write_eof()
                decoder = FrameDecoder()
                header = await _read_envelope(reader, decoder, peer_id)
                if header is None:
                    raise PeerClosed(peer_id, f"closed before sending {sha256}")
                if header.type != BULK:
                    _result(peer_id, bulk.BULK_GET, header)
                    raise PeerClosed(peer_id, f"answered '{header.type}' instead of {sha256}")
                size = header.data.get("size")
                if not isinstance(size, int) or size < 0:
                    raise BulkError(peer_id, "bulk header without a valid size")
                sink = bulk.BlobSink(dest, sha256, size, peer_id=peer_id)
                sink.write(decoder.tail())
                while chunk := await reader.read(bulk.CHUNK):
                    sink.write(chunk)
                return sink.finish()
        except TimeoutError as exc:
            if sink is not None:
                sink.abort()
            raise PeerTimeout(peer_id, f"bulk transfer of {sha256} timed out") from exc
        except BaseException:
            if sink is not None:
                sink.abort()
            raise

    async def _send_blob_on_stream(self, conn: quic.PeerConnection, request: Envelope,
                                   writer: asyncio.StreamWriter) -> None:
        sha256 = bulk.valid_sha256(request.data.get("sha256"))
        path = await _maybe_async(self.blob_source(sha256)) if sha256 else None
        if path is None:
            raise RequestRejected(f"blob {request.data.get('sha256')} not found")
        stream_id = writer.get_extra_info("stream_id")
        with path.open("rb") as fh:
            size = path.stat().st_size
            writer.write(encode(request.reply(BULK, {"sha256": sha256, "size": size},
                                              source_peer_id=self.peer_id)))
            while chunk := await asyncio.to_thread(fh.read, 256 * 1024):
                writer.write(chunk)
                # aioquic buffers without limit: pace the writes on what is still unacked.
                try:
                    await conn.drain(stream_id)
                except ConnectionError as exc:
                    log.info("bulk send of %s to %s ended: %s", sha256, conn.peer_id, exc)
                    return
        writer.write_eof()


# -- helpers ---------------------------------------------------------------------------------
async def _read_envelope(reader: asyncio.StreamReader, decoder: FrameDecoder,
                         peer_id: str, *, budget: Budget | None = None) -> Envelope | None:
    """The next envelope on a stream; None at a clean end of stream. With ``budget``, the
    bytes of a frame not yet whole are held against it (PeerClosed when it has no room)."""
    held = 0
    try:
        while True:
            try:
                envelope = decoder.next()
            except MessageError as exc:
                raise PeerClosed(peer_id, f"sent a bad frame: {exc}") from exc
            if envelope is not None:
                return envelope
            chunk = await reader.read(64 * 1024)
            if not chunk:
                if decoder.pending:
                    raise PeerClosed(peer_id, "stream ended inside a frame")
                return None
            if budget is not None:
                if not budget.take(len(chunk)):
                    raise PeerClosed(peer_id, f"requests being read hold over "
                                     f"{budget.limit} bytes on this connection, or the node's "
                                     "total is reached")
                held += len(chunk)
            decoder.push(chunk)
    finally:
        if budget is not None:
            budget.give(held)


def _backlog(conn: quic.PeerConnection, writer: asyncio.StreamWriter) -> Callable[[], int]:
    """Bytes written on ``writer``'s stream of ``conn`` that the other end has not taken."""
    stream_id = writer.get_extra_info("stream_id")
    return lambda: conn.stream_buffered(stream_id)


def _tunnel_backlog(transport: PeerTransport) -> int:
    return transport.config.limits.send_buffer


def _result(peer_id: str, msg_type: str, reply: Envelope) -> dict[str, Any]:
    if reply.type == RESPONSE:
        return reply.data
    if reply.type == ERROR:
        raise RemoteError(peer_id, str(reply.data.get("error") or f"'{msg_type}' failed"))
    raise PeerClosed(peer_id, f"answered '{msg_type}' with unexpected '{reply.type}'")


def _why(conn: quic.PeerConnection) -> str:
    return f" ({conn.close_reason})" if conn.close_reason else ""


async def _maybe_async(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _call_hook(hook: Callable[..., Any], *args: Any) -> None:
    try:
        hook(*args)
    except Exception:
        log.exception("transport hook %r failed", hook)


def _other_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is not loop
    except RuntimeError:
        return True
