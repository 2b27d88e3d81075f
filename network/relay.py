"""The relay's side of relaying: sessions of peers behind NAT, and tunnels to them.

A peer behind NAT registers with a relay over its own QUIC connection to it (``relay_register``)
and keeps the session alive (``relay_keepalive``); the session ends when it unregisters, when
that connection is gone, or when the relay's owner disconnects it. Another peer reaches it by
asking the relay for a tunnel (``relay_tunnel``, see ``network.relay_tunnel``): the relay opens
a stream to the registered peer (``relay_incoming``) and copies bytes both ways, counting them
for the session, without reading them (they are QUIC packets, encrypted end to end). The copy
waits whenever the receiving end has ``send_buffer`` bytes it has not taken, and the QUIC
receive windows stop the sending end meanwhile, so a tunnel never makes the relay buffer more
than a window each way; a tunnel whose receiver takes nothing for ``send_stall_timeout`` ends.

Bulk data does not take the tunnel where it can help it: a peer fetching a blob through the relay
asks for a splice (``relay_splice``, see ``network.relay_splice``), and both ends dial the
relay's splice port over TCP, which carries the bulk TLS channel as opaque bytes, counted for
the session like a tunnel's.

``RelaySessions`` is the bookkeeping (no I/O, a clock passed in); ``RelayService`` answers the
messages on a ``PeerTransport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from network import quic
from network.messages import ERROR, RESPONSE, Envelope, encode
from network.peer_errors import PeerError, RequestRejected
from network.relay_splice import (
    RELAY_SPLICE,
    RELAY_SPLICE_ACCEPT,
    End,
    SpliceRefused,
    SpliceServer,
    SpliceTickets,
    parse_ticket,
)
from network.transport import RELAY_INCOMING, RELAY_TUNNEL, IncomingRequest, PeerTransport

log = logging.getLogger("remote_network.relay")

RELAY_REGISTER = "relay_register"
RELAY_KEEPALIVE = "relay_keepalive"
RELAY_UNREGISTER = "relay_unregister"
RELAY_INFO = "relay_info"
SESSION_TYPE = "QUIC"
COPY_CHUNK = 64 * 1024


@dataclass
class Session:
    session_id: str
    client_peer_id: str
    client_node_id: str
    start_time: float
    last_keepalive: float
    # Bytes the relay received from the client, and forwarded to it.
    ingress_bytes: int = 0
    egress_bytes: int = 0
    tunnels: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)

    def close_tunnels(self) -> None:
        for task in list(self.tunnels):
            task.cancel()

    def to_api(self, now: float, price_per_gb: float) -> dict[str, Any]:
        total = self.ingress_bytes + self.egress_bytes
        return {
            "session_id": self.session_id,
            "client_node_id": self.client_node_id,
            "client_peer_id": self.client_peer_id,
            "session_type": SESSION_TYPE,
            "start_time": int(self.start_time),
            "duration_seconds": int(max(0.0, now - self.start_time)),
            "ingress_bytes": self.ingress_bytes,
            "egress_bytes": self.egress_bytes,
            "total_bytes": total,
            "earnings": round(total / 1e9 * price_per_gb, 9),
            "last_keepalive": int(self.last_keepalive),
        }


class RelayFull(Exception):
    pass


class RelaySessions:
    """Who is registered with this relay, one session per client peer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_peer: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_peer)

    def register(self, peer_id: str, node_id: str, now: float) -> Session:
        """The client's session: its existing one (kept alive), or a new one."""
        session = self._by_peer.get(peer_id)
        if session is not None:
            session.last_keepalive = now
            session.client_node_id = node_id or session.client_node_id
            return session
        if len(self._by_peer) >= self.capacity:
            raise RelayFull(f"relay is full ({self.capacity} sessions)")
        session = Session(f"session-{secrets.token_hex(8)}", peer_id, node_id, now, now)
        self._by_peer[peer_id] = session
        return session

    def of_peer(self, peer_id: str) -> Session | None:
        return self._by_peer.get(peer_id)

    def get(self, session_id: str) -> Session | None:
        return next((s for s in self._by_peer.values() if s.session_id == session_id), None)

    def remove(self, peer_id: str) -> Session | None:
        return self._by_peer.pop(peer_id, None)

    def all(self) -> list[Session]:
        return sorted(self._by_peer.values(), key=lambda s: s.start_time)


class RelayService:
    """Answers relay messages on ``transport`` (relay mode)."""

    def __init__(self, transport: PeerTransport, *, capacity: int, price_per_gb: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.transport = transport
        self.sessions = RelaySessions(capacity)
        self.price_per_gb = price_per_gb
        self.clock = clock
        transport.register(RELAY_REGISTER, self._on_register)
        transport.register(RELAY_KEEPALIVE, self._on_keepalive)
        transport.register(RELAY_UNREGISTER, self._on_unregister)
        transport.register(RELAY_INFO, self._on_info)
        transport.register_stream(RELAY_TUNNEL, self._on_tunnel)
        transport.register(RELAY_SPLICE, self._on_splice)
        transport.register(RELAY_SPLICE_ACCEPT, self._on_splice_accept)
        transport.on_disconnected.append(self._client_gone)
        transport.on_stop.append(self.close)
        # Bulk splices (``network.relay_splice``): the port opens on the first one asked.
        self.splice_tickets = SpliceTickets()
        self._splices: SpliceServer | None = None
        self._splices_lock = asyncio.Lock()

    async def close(self) -> None:
        """Stop the splice port (tunnels end with the transport's connections); the
        transport calls it as it stops."""
        splices, self._splices = self._splices, None
        if splices is not None:
            await asyncio.to_thread(splices.stop)

    # -- the API's view ------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [s.to_api(now, self.price_per_gb) for s in self.sessions.all()]

    def end(self, session: Session, reason: str) -> None:
        """End a session: its tunnels and its client's connections to us close."""
        self.sessions.remove(session.client_peer_id)
        session.close_tunnels()
        if self._splices is not None:
            self._splices.end_session(session.session_id)
        self.transport.disconnect(session.client_peer_id, reason)
        log.info("relay session %s of %s ended: %s", session.session_id,
                 session.client_peer_id[:16], reason)

    # -- messages ------------------------------------------------------------------------------
    async def _on_register(self, request: IncomingRequest) -> dict[str, Any]:
        node_id = str(request.data.get("dht_node_id") or "")[:64]
        try:
            session = self.sessions.register(request.peer_id, node_id, self.clock())
        except RelayFull as exc:
            raise RequestRejected(str(exc)) from None
        log.info("relay session %s for %s", session.session_id, request.peer_id[:16])
        return {"session_id": session.session_id, "pricing_per_gb": self.price_per_gb}

    async def _on_keepalive(self, request: IncomingRequest) -> dict[str, Any]:
        session = self.sessions.of_peer(request.peer_id)
        if session is None:
            raise RequestRejected("no relay session: register first")
        session.last_keepalive = self.clock()
        # The session's bytes as this relay counts (and bills) them, for its client to show.
        return {"session_id": session.session_id, "ingress_bytes": session.ingress_bytes,
                "egress_bytes": session.egress_bytes}

    async def _on_unregister(self, request: IncomingRequest) -> dict[str, Any]:
        session = self.sessions.remove(request.peer_id)
        if session is not None:
            session.close_tunnels()
            if self._splices is not None:
                self._splices.end_session(session.session_id)
        return {"ended": session is not None}

    async def _on_info(self, request: IncomingRequest) -> dict[str, Any]:
        return {"pricing_per_gb": self.price_per_gb, "capacity": self.sessions.capacity,
                "sessions": len(self.sessions)}

    async def _on_splice(self, request: IncomingRequest) -> dict[str, Any]:
        """``relay_splice {target}``: tickets for a bulk splice to a peer with a session."""
        target = str(request.data.get("target") or "")[:128]
        session, client = self.sessions.of_peer(target), End.TARGET
        if session is None:
            session, client = self.sessions.of_peer(request.peer_id), End.REQUESTER
        if session is None or self.transport.current_connection(target) is None:
            raise RequestRejected(f"no splice to {target[:16]}: neither end has a session on "
                                  "this relay, or it is not connected")
        splices = await self._splice_server()
        try:
            pending = self.splice_tickets.issue(session.session_id, client, request.peer_id,
                                                target, time.monotonic())
        except SpliceRefused as exc:
            raise RequestRejected(str(exc)) from None
        return {"port": splices.port, "ticket": pending.dial_ticket.hex(),
                "offer_ticket": pending.offer_ticket.hex(), "session_id": session.session_id}

    async def _on_splice_accept(self, request: IncomingRequest) -> dict[str, Any]:
        """``relay_splice_accept {ticket}``, from the peer the splice goes to: the ticket its
        own connection to the splice port presents, and who asked for the splice."""
        ticket = parse_ticket(request.data.get("ticket"))
        if ticket is None or self._splices is None:
            raise RequestRejected("no such splice offered to this peer")
        try:
            pending = self.splice_tickets.accept(ticket, request.peer_id, time.monotonic())
        except SpliceRefused as exc:
            raise RequestRejected(str(exc)) from None
        assert pending.connect_ticket is not None
        return {"port": self._splices.port, "ticket": pending.connect_ticket.hex(),
                "requester": pending.requester}

    async def _splice_server(self) -> SpliceServer:
        async with self._splices_lock:
            if self._splices is None:
                loop = asyncio.get_running_loop()

                def count(session_id: str, from_client: int, to_client: int) -> None:
                    loop.call_soon_threadsafe(self._count, session_id, from_client, to_client)

                server = SpliceServer(self.splice_tickets, count)
                await asyncio.to_thread(server.start, self.transport.config.host)
                self._splices = server
            return self._splices

    def _count(self, session_id: str, from_client: int, to_client: int) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.ingress_bytes += from_client
            session.egress_bytes += to_client

    def _client_gone(self, peer_id: str) -> None:
        session = self.sessions.of_peer(peer_id)
        if session is not None:
            self.end(session, "its connection to the relay closed")

    async def _on_tunnel(self, conn: quic.PeerConnection, request: Envelope,
                         reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         tail: bytes) -> None:
        target = str(request.data.get("target") or "")
        session = self.sessions.of_peer(target)

        def answer(type_: str, data: dict[str, Any]) -> None:
            writer.write(encode(request.reply(type_, data, source_peer_id=self.transport.peer_id)))

        if session is None:
            answer(ERROR, {"error": f"peer {target[:16]} has no session on this relay"})
            writer.write_eof()
            return
        try:
            client = await self.transport.connect(target)
            to_reader, to_writer = await client.create_stream()
        except PeerError as exc:
            answer(ERROR, {"error": f"peer {target[:16]} is not reachable from the relay: "
                                    f"{exc.reason}"})
            writer.write_eof()
            return
        to_writer.write(encode(Envelope.new(RELAY_INCOMING, {
            "source": conn.peer_id, "session_id": session.session_id},
            source_peer_id=self.transport.peer_id)))
        answer(RESPONSE, {"session_id": session.session_id})
        task = asyncio.current_task()
        if task is not None:
            session.tunnels.add(task)
        try:
            await splice(reader, writer, tail, to_reader, to_writer, session,
                         drain_from=_drainer(conn, writer), drain_to=_drainer(client, to_writer))
        finally:
            if task is not None:
                session.tunnels.discard(task)


Drain = Callable[[], Awaitable[None]]


def _drainer(conn: quic.PeerConnection, writer: asyncio.StreamWriter) -> Drain:
    """Waits until the stream of ``writer`` has at most the send buffer unacknowledged."""
    stream_id = writer.get_extra_info("stream_id")
    return lambda: conn.drain(stream_id)


async def _no_wait() -> None:
    return None


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes,
                count: Callable[[int], None], drain: Drain) -> None:
    try:
        if first:
            writer.write(first)
            count(len(first))
        while data := await reader.read(COPY_CHUNK):
            writer.write(data)
            count(len(data))
            await drain()
    except ConnectionError as exc:
        log.info("relay tunnel ended: %s", exc)
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


async def splice(from_reader: asyncio.StreamReader, from_writer: asyncio.StreamWriter,
                 first: bytes, to_reader: asyncio.StreamReader, to_writer: asyncio.StreamWriter,
                 session: Session, *, drain_from: Drain = _no_wait,
                 drain_to: Drain = _no_wait) -> None:
    """Copy both ways between the requester's stream and the client's until either ends;
    ``drain_*`` wait for the side written to to take what it was sent."""

    def to_client(n: int) -> None:
        session.egress_bytes += n

    def from_client(n: int) -> None:
        session.ingress_bytes += n

    ways = [asyncio.ensure_future(_copy(from_reader, to_writer, first, to_client, drain_to)),
            asyncio.ensure_future(_copy(to_reader, from_writer, b"", from_client, drain_from))]
    try:
        await asyncio.wait(ways, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for way in ways:
            way.cancel()
        for w in (from_writer, to_writer):
            with contextlib.suppress(Exception):
                w.close()
