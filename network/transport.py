"""PeerTransport: the pool of verified QUIC connections to peers, and dialling them.

The transport knows peers by peer id only; a ``resolver(peer_id) -> [(host, port)]`` supplied by
its owner turns one into QUIC addresses, ``relay_for(peer_id)`` names the relay through which a
peer behind NAT is dialled, and ``is_blacklisted(peer_id)`` decides who is refused (at the
identity exchange, and on every request). One connection per peer is reused for every request;
either end may open streams on it.

What travels on those connections lives beside this module, and the transport only composes it:
the request stream protocol (``network.stream_protocol``, its asyncio glue ``network.streams``:
``request``, ``register``, ``register_stream``), bulk transfer (``network.bulk_transfer``:
``fetch_bulk``) and tunnels through a relay (``network.tunnels``).

Every peer is a stranger: ``TransportConfig.limits`` bounds what one may make the node hold
(receive windows, streams, connections in total, unverified and per peer, send backlogs, request
bytes, the bulk channel), and a request that breaks a bound gets a named error or a reset
stream, never a buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from network import bulk, quic
from network.bulk_transfer import BlobSource, BulkTransfer
from network.certs import ensure_self_signed
from network.identity import Identity
from network.limits import ConnectionBook, ConnectionRefused, TransportLimits
from network.nat_type import OBSERVE_ADDRESS, answer_observe
from network.peer_errors import PeerError, PeerTimeout, PeerUnreachable
from network.streams import (
    EventCallback,
    Handler,
    IncomingRequest,
    RequestDispatcher,
    StreamHandler,
    call,
    maybe_async,
)
from network.tunnels import RELAY_INCOMING, RELAY_TUNNEL, TUNNEL_DATAGRAM_SIZE, RelayTunnels
from network.udp_endpoint import SharedEndpoint

__all__ = [
    "PING", "RELAY_INCOMING", "RELAY_TUNNEL", "TUNNEL_DATAGRAM_SIZE", "Address", "BlobSource",
    "EventCallback", "Handler", "IncomingRequest", "PeerTransport", "Resolver", "StreamHandler",
    "TransportConfig",
]

log = logging.getLogger("remote_network.transport")

PING = "ping"
Address = tuple[str, int]
Resolver = Callable[[str], list[Address]]


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


class PeerTransport:
    """This node's QUIC endpoint: one verified connection per peer, dialled on first use, and
    the ``network.quic.ConnectionHost`` of every connection (admission, verification, loss)."""

    def __init__(self, identity: Identity, config: TransportConfig, *,
                 resolver: Resolver | None = None,
                 is_blacklisted: Callable[[str], bool] | None = None,
                 relay_for: Callable[[str], str | None] | None = None,
                 accepts_tunnels_from: Callable[[str], bool] | None = None,
                 blob_source: BlobSource | None = None) -> None:
        self.identity = identity
        self.config = config
        self.resolver: Resolver = resolver or (lambda _peer: [])
        # The relay through which a peer is reached (None: dial its addresses).
        self.relay_for: Callable[[str], str | None] = relay_for or (lambda _peer: None)
        self._is_blacklisted = is_blacklisted or (lambda _peer: False)
        self.on_connected: list[Callable[[str, Address | None], None]] = []
        self.on_disconnected: list[Callable[[str], None]] = []
        # What rides on the transport and stops with it (a relay's splice port).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        # A peer was just reached through a relay (hole punching may move it to a direct path).
        self.on_relayed: list[Callable[[str], None]] = []
        # Verified connections since start, how many of them direct (network.hole_punch).
        self.connections_opened = 0
        self.connections_direct = 0
        self._connections: dict[str, quic.PeerConnection] = {}
        self._all: set[quic.PeerConnection] = set()
        self._dialing: dict[str, asyncio.Task[quic.PeerConnection]] = {}
        self._server: SharedEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._incoming = ConnectionBook(config.limits)
        self._requests = RequestDispatcher(self.peer_id, config,
                                           is_blacklisted=self.is_blacklisted)
        self._bulk = BulkTransfer(self, config, blob_source=blob_source)
        self._tunnels = RelayTunnels(self, config, accepts_from=accepts_tunnels_from)
        self.register(PING, self._on_ping)
        self.register(OBSERVE_ADDRESS, answer_observe)
        self.register(bulk.BULK_OFFER, self._bulk.on_offer)
        self._requests.register_stream(bulk.BULK_GET, self._bulk.send_on_stream,
                                       reads_stream=False)
        self.register_stream(RELAY_INCOMING, self._tunnels.serve_incoming)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    @property
    def blob_source(self) -> BlobSource:
        """Where the blob with a sha256 is (None: not here), for the peers that fetch it."""
        return self._bulk.blob_source

    @blob_source.setter
    def blob_source(self, source: BlobSource) -> None:
        self._bulk.blob_source = source

    @property
    def accepts_tunnels_from(self) -> Callable[[str], bool]:
        """The peers whose tunnels to us are accepted (our relay, when we are behind NAT)."""
        return self._tunnels.accepts_from

    @accepts_tunnels_from.setter
    def accepts_tunnels_from(self, accepts: Callable[[str], bool]) -> None:
        self._tunnels.accepts_from = accepts

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
        self._tunnels.configure(client=self._client_config, server=self._server_config)
        self._server = await quic.serve(cfg.host, cfg.port, self._server_config, owner=self,
                                        handshake_timeout=cfg.handshake_timeout,
                                        limits=cfg.limits, retry=cfg.retry)
        self.port = int(self._server._transport.get_extra_info("sockname")[1])
        if cfg.bulk_tcp:
            self._bulk.start(cfg.host, cert_path=cert, key_path=key,
                             cert_fingerprint=quic.cert_fingerprint(
                                 self._server_config.certificate.public_bytes(Encoding.DER)))
        log.info("QUIC transport for %s on %s:%d", self.peer_id, cfg.host, self.port)

    async def stop(self) -> None:
        for hook in self.on_stop:
            try:
                await hook()
            except Exception:
                log.exception("transport stop hook %r failed", hook)
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
        await self._bulk.stop()

    # -- handlers --------------------------------------------------------------------------
    def register(self, msg_type: str, handler: Handler) -> None:
        """Answer requests of ``msg_type`` with ``handler`` (see ``network.streams``)."""
        self._requests.register(msg_type, handler)

    def register_stream(self, msg_type: str, handler: StreamHandler) -> None:
        """Hand the streams that open with a ``msg_type`` request over to ``handler``."""
        self._requests.register_stream(msg_type, handler)

    # -- connections -----------------------------------------------------------------------
    @property
    def local_host(self) -> str:
        """The address the QUIC port is bound to (may be a wildcard)."""
        return self.config.host

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def connected_peers(self) -> list[str]:
        return sorted(self._connections)

    def current_connection(self, peer_id: str) -> quic.PeerConnection | None:
        """The connection new requests to ``peer_id`` take, if one is open."""
        conn = self._connections.get(peer_id)
        return conn if conn is not None and conn.is_open else None

    def path_counts(self) -> dict[str, int]:
        """Connections opened since start, how many were direct, how many are relayed now."""
        return {"connections_opened": self.connections_opened,
                "connections_direct": self.connections_direct,
                "connections_relayed_now": sum(c.relayed_via is not None
                                               for c in self._connections.values())}

    def send_from_port(self, data: bytes, address: Address, *, ttl: int | None = None) -> None:
        """One datagram from the node's QUIC port (a hole punch), going ``ttl`` hops."""
        if self._server is not None:
            self._server.send_raw(data, address, ttl=ttl)

    def is_blacklisted(self, peer_id: str) -> bool:
        return peer_id != self.peer_id and self._is_blacklisted(peer_id)

    def disconnect(self, peer_id: str, reason: str = "disconnected") -> int:
        """Close every connection to ``peer_id``; returns how many. Safe from any thread."""
        loop = self._loop
        if loop is not None and _other_thread(loop):
            loop.call_soon_threadsafe(self.disconnect, peer_id, reason)
            return 0
        self._bulk.revoke(peer_id)
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
                conn = await self._tunnels.dial(peer_id, relay)
                conn = await self._identify(conn, peer_id, peer_id)
                for hook in self.on_relayed:
                    _call_hook(hook, peer_id)
                return conn
            except PeerError as exc:
                errors.append(f"through relay {relay[:16]}: {exc.reason}")
        addresses = await maybe_async(self.resolver(peer_id))
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
                                       limits=self.config.limits, endpoint=self._server)
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
        self.connections_opened += 1
        self.connections_direct += conn.relayed_via is None
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
        self._requests.forget(conn)
        peer_id = conn.peer_id
        if peer_id is None or self._connections.get(peer_id) is not conn:
            return
        del self._connections[peer_id]
        log.info("peer %s disconnected: %s", peer_id, conn.close_reason)
        for hook in self.on_disconnected:
            _call_hook(hook, peer_id)

    def stream_opened(self, conn: quic.PeerConnection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        conn._spawn(self._requests.answer(conn, reader, writer))


    # -- what travels on the connections ---------------------------------------------------
    async def request(self, peer_id: str, msg_type: str, data: dict[str, Any] | None = None,
                      timeout: float | None = None, *,
                      on_event: EventCallback | None = None) -> dict[str, Any]:
        """Send one request and wait for its response ``data``; raises a PeerError."""
        timeout = self.config.request_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                conn = await self.connect(peer_id, timeout=timeout)
                return await call(conn, peer_id, msg_type, data, source_peer_id=self.peer_id,
                                  on_event=on_event)
        except TimeoutError as exc:
            raise PeerTimeout(peer_id, f"no answer to '{msg_type}' within {timeout:g}s") from exc

    async def ping(self, peer_id: str, timeout: float | None = None) -> float:
        """Round-trip time of a ping request, in seconds."""
        await self.connect(peer_id, timeout=timeout)
        started = time.perf_counter()
        await self.request(peer_id, PING, {}, timeout)
        return time.perf_counter() - started

    async def _on_ping(self, request: IncomingRequest) -> dict[str, Any]:
        return {"peer_id": self.peer_id}

    async def fetch_bulk(self, peer_id: str, sha256: str, dest: Path, *,
                         timeout: float | None = None, prefer_tcp: bool = True) -> int:
        """Fetch blob ``sha256`` from ``peer_id`` into ``dest`` (hash-checked, atomic).

        Tries the TLS-over-TCP channel first, then a QUIC stream. Returns the size."""
        return await self._bulk.fetch(peer_id, sha256, dest, timeout=timeout,
                                      prefer_tcp=prefer_tcp)


# -- helpers ---------------------------------------------------------------------------------
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
