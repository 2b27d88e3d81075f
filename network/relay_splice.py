"""Bulk bytes through a relay as opaque TCP: a splice of two connections both ends dial out.

A peer behind NAT cannot take a TCP connection, but it can open one. For a blob to or from such
a peer, both ends dial the relay's splice port and the relay copies bytes between the two
sockets without reading them: they carry the same certificate-pinned TLS channel as the direct
bulk path (``network.bulk``), so the relay sees only ciphertext, and it counts the bytes for the
relayed peer's session as it does for tunnels.

How a splice is set up, the requester X fetching from the peer N registered with relay R:

1. X asks R ``relay_splice {target: N}`` (granted when N or X holds a session there: the
   bytes count for that session). R answers ``{port, ticket, offer_ticket}``: ``ticket``
   lets X's TCP connection in, ``offer_ticket`` is for N.
2. X asks N, through the tunnel, ``bulk_offer {sha256, splice: offer_ticket}``.
3. N asks its own relay ``relay_splice_accept {ticket: offer_ticket}``. R answers
   ``{port, ticket, requester}`` with a fresh ticket only N has seen; N checks that
   ``requester`` is the peer that asked it, dials R's splice port, sends that ticket, and waits
   as the TLS server of the blob it granted. It answers X ``{token, size, cert_sha256, spliced}``.
4. X dials R's splice port, sends its ticket, runs TLS to N (certificate pinned), sends the
   token and reads the blob.

Why two tickets for N: X knows the offer ticket, so if it also let a TCP connection in, X could
dial both ends itself and have R carry its bytes on N's account. The ticket N connects with is
given only over N's own connection to R.

``SpliceTickets`` is the bookkeeping (no I/O, a clock passed in); ``SpliceServer`` is the
relay's listener and copier, blocking sockets on threads, as the bulk server is.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from network.tcp_listener import ThreadedListener, recv_exact

log = logging.getLogger("remote_network.relay.splice")

RELAY_SPLICE = "relay_splice"
RELAY_SPLICE_ACCEPT = "relay_splice_accept"
TICKET_BYTES = 32
# A ticket not used within this long is void.
TICKET_TTL = 10.0
# A connection has this long to present its ticket, and then to be met by the other end.
AUTH_TIMEOUT = 5.0
PAIR_TIMEOUT = 10.0
# A splice on which neither end moves a byte for this long ends.
STALL_TIMEOUT = 30.0
COPY_CHUNK = 256 * 1024
MAX_CONNECTIONS = 32
MAX_PENDING = 64
MAX_PENDING_PER_REQUESTER = 4


class SpliceRefused(Exception):
    """A splice request the relay does not grant; the message says why."""


class End(Enum):
    REQUESTER = "requester"
    TARGET = "target"


@dataclass
class PendingSplice:
    # The relay session the splice's bytes count for, and which end holds it.
    session_id: str
    client: End
    requester: str
    target: str
    dial_ticket: bytes
    offer_ticket: bytes
    expires: float
    # The ticket the target connects with, once it has accepted over its own connection.
    connect_ticket: bytes | None = None
    redeemed: set[End] = field(default_factory=set)


class SpliceTickets:
    """The splices granted and not yet met: who may connect with which ticket, for how long.
    Safe from any thread: the event loop issues tickets, the splice threads redeem them."""

    def __init__(self, *, ttl: float = TICKET_TTL, max_pending: int = MAX_PENDING,
                 max_per_requester: int = MAX_PENDING_PER_REQUESTER) -> None:
        self.ttl = ttl
        self.max_pending = max_pending
        self.max_per_requester = max_per_requester
        self._pending: list[PendingSplice] = []
        self._lock = threading.RLock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def _expire(self, now: float) -> None:
        self._pending = [p for p in self._pending if p.expires > now]

    def issue(self, session_id: str, client: End, requester: str, target: str,
              now: float) -> PendingSplice:
        """A new splice from ``requester`` to ``target``, counted for the session
        ``session_id`` that the ``client`` end holds."""
        if requester == target:
            raise SpliceRefused("a peer cannot splice to itself")
        with self._lock:
            self._expire(now)
            if len(self._pending) >= self.max_pending:
                raise SpliceRefused(f"relay has {self.max_pending} splices waiting: try later")
            if sum(p.requester == requester for p in self._pending) >= self.max_per_requester:
                raise SpliceRefused(f"at most {self.max_per_requester} splices may wait per "
                                    "peer")
            pending = PendingSplice(session_id, client, requester, target,
                                    secrets.token_bytes(TICKET_BYTES),
                                    secrets.token_bytes(TICKET_BYTES), now + self.ttl)
            self._pending.append(pending)
            return pending

    def accept(self, offer_ticket: bytes, target: str, now: float) -> PendingSplice:
        """``target`` accepts the splice it was offered: the ticket it connects with is set."""
        with self._lock:
            self._expire(now)
            pending = next((p for p in self._pending if p.offer_ticket == offer_ticket), None)
            if pending is None or pending.target != target \
                    or pending.connect_ticket is not None:
                raise SpliceRefused("no such splice offered to this peer")
            pending.connect_ticket = secrets.token_bytes(TICKET_BYTES)
            return pending

    def redeem(self, ticket: bytes, now: float) -> tuple[PendingSplice, End] | None:
        """The splice and end a connection's ticket lets in (once per ticket), or None."""
        with self._lock:
            self._expire(now)
            for pending in self._pending:
                if ticket == pending.dial_ticket:
                    end = End.REQUESTER
                elif pending.connect_ticket is not None and ticket == pending.connect_ticket:
                    end = End.TARGET
                else:
                    continue
                if end in pending.redeemed:
                    return None
                pending.redeemed.add(end)
                if len(pending.redeemed) == 2:
                    self._pending.remove(pending)
                return pending, end
            return None

    def drop(self, pending: PendingSplice) -> None:
        with self._lock:
            self._pending = [p for p in self._pending if p is not pending]

    def end_session(self, session_id: str) -> None:
        with self._lock:
            self._pending = [p for p in self._pending if p.session_id != session_id]


# (session_id, bytes from the session's client, bytes to it), called from the copy threads.
ByteCounter = Callable[[str, int, int], None]


class _Meeting:
    """One splice's two connections: the first to arrive waits here for the other."""

    def __init__(self, session_id: str, client: End) -> None:
        self.session_id = session_id
        self.client = client
        self.sockets: dict[End, socket.socket] = {}
        self.met = threading.Event()
        self.done = 0
        self.closed = False


class SpliceServer(ThreadedListener):
    """The relay's splice port: tickets in, then bytes copied both ways until either end
    stops. Holds at most ``max_connections`` connections and ``2 * COPY_CHUNK`` bytes per
    splice."""

    def __init__(self, tickets: SpliceTickets, count: ByteCounter, *,
                 max_connections: int = MAX_CONNECTIONS, auth_timeout: float = AUTH_TIMEOUT,
                 pair_timeout: float = PAIR_TIMEOUT, stall_timeout: float = STALL_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tickets = tickets
        self.count = count
        self.auth_timeout = auth_timeout
        self.pair_timeout = pair_timeout
        self.stall_timeout = stall_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._meetings: dict[int, _Meeting] = {}
        self._by_pending: dict[int, _Meeting] = {}
        super().__init__(self._serve, max_connections=max_connections, name="splice")
        self.spliced = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        super().stop()
        with self._lock:
            meetings = list(self._meetings.values())
        for meeting in meetings:
            self._close(meeting)

    def end_session(self, session_id: str) -> None:
        """The session's splices end: waiting tickets void, connections closed."""
        with self._lock:
            self.tickets.end_session(session_id)
            meetings = [m for m in self._meetings.values() if m.session_id == session_id]
        for meeting in meetings:
            self._close(meeting)

    def active(self) -> int:
        with self._lock:
            return len(self._meetings)

    # -- connections -------------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        try:
            self._serve_one(conn)
        except OSError as exc:
            log.debug("splice connection ended: %s", exc)

    def _serve_one(self, conn: socket.socket) -> None:
        ticket = _read_ticket(conn, self.auth_timeout)
        with self._lock:
            found = self.tickets.redeem(ticket, self.clock()) if ticket else None
            if found is None:
                conn.close()
                return
            pending, end = found
            meeting = self._by_pending.get(id(pending))
            if meeting is None:
                meeting = _Meeting(pending.session_id, pending.client)
                self._by_pending[id(pending)] = meeting
                self._meetings[id(meeting)] = meeting
            else:
                del self._by_pending[id(pending)]
            meeting.sockets[end] = conn
            if len(meeting.sockets) == 2:
                self.spliced += 1
                meeting.met.set()
        if not meeting.met.wait(self.pair_timeout):
            log.info("splice for session %s: the other end never came", pending.session_id)
            with self._lock:
                self._by_pending.pop(id(pending), None)
                self.tickets.drop(pending)
            self._close(meeting)
            return
        other = End.TARGET if end is End.REQUESTER else End.REQUESTER
        with self._lock:
            partner = None if meeting.closed else meeting.sockets.get(other)
        if partner is None:  # closed meanwhile (the session ended, the relay stopped)
            self._close(meeting)
            return
        self._copy(meeting, conn, partner, from_client=end is meeting.client)

    def _copy(self, meeting: _Meeting, src: socket.socket, dst: socket.socket, *,
              from_client: bool) -> None:
        """Copies ``src`` into ``dst`` until ``src`` ends (then half-closes ``dst``)."""
        buf = bytearray(COPY_CHUNK)
        view = memoryview(buf)
        failed = False
        try:
            src.settimeout(self.stall_timeout)
            dst.settimeout(self.stall_timeout)
            while n := src.recv_into(buf):
                dst.sendall(view[:n])
                if from_client:
                    self.count(meeting.session_id, n, 0)
                else:
                    self.count(meeting.session_id, 0, n)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log.debug("splice copy ended: %s", exc)
            failed = True
        with self._lock:
            meeting.done += 1
            last = meeting.done == 2
        if failed or last:
            self._close(meeting)

    def _close(self, meeting: _Meeting) -> None:
        with self._lock:
            if meeting.closed:
                return
            meeting.closed = True
            self._meetings.pop(id(meeting), None)
            sockets = list(meeting.sockets.values())
        meeting.met.set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _read_ticket(conn: socket.socket, timeout: float) -> bytes | None:
    """The connection's ticket, or None when it sends too little in time."""
    try:
        return recv_exact(conn, TICKET_BYTES, deadline=time.monotonic() + timeout)
    except OSError:  # TimeoutError included
        return None


def parse_ticket(value: object) -> bytes | None:
    """A ticket as messages carry it (hex), or None when it is not one."""
    if not isinstance(value, str) or len(value) != 2 * TICKET_BYTES:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def dial(address: tuple[str, int], ticket: bytes, *, timeout: float) -> socket.socket:
    """Blocking: a TCP connection to a relay's splice port that has presented ``ticket``."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.sendall(ticket)
    except OSError:
        sock.close()
        raise
    return sock
