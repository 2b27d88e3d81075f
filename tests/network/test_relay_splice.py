"""A relay's bulk splices: the ticket bookkeeping (no sockets), then the splice port on
127.0.0.1 with plain sockets standing in for the two ends."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from network.relay_splice import (
    TICKET_BYTES,
    End,
    SpliceRefused,
    SpliceServer,
    SpliceTickets,
    dial,
)

X, N, OTHER = "peer-x", "peer-n", "peer-other"


# -- tickets ---------------------------------------------------------------------------------
def test_each_end_gets_in_once_and_the_target_only_after_accepting() -> None:
    tickets = SpliceTickets()
    pending = tickets.issue("s1", End.TARGET, X, N, now=0)
    # The offer ticket (which the requester knows) never lets a connection in.
    assert tickets.redeem(pending.offer_ticket, now=1) is None
    with pytest.raises(SpliceRefused):
        tickets.accept(pending.offer_ticket, OTHER, now=1)  # offered to N, not OTHER
    accepted = tickets.accept(pending.offer_ticket, N, now=1)
    assert accepted.connect_ticket not in (None, pending.dial_ticket, pending.offer_ticket)
    with pytest.raises(SpliceRefused):
        tickets.accept(pending.offer_ticket, N, now=1)  # once
    assert accepted.connect_ticket is not None
    assert tickets.redeem(pending.dial_ticket, now=2) == (pending, End.REQUESTER)
    assert tickets.redeem(pending.dial_ticket, now=2) is None
    assert tickets.redeem(accepted.connect_ticket, now=2) == (pending, End.TARGET)
    assert len(tickets) == 0


def test_tickets_expire_and_are_bounded() -> None:
    tickets = SpliceTickets(ttl=10, max_pending=3, max_per_requester=2)
    first = tickets.issue("s1", End.TARGET, X, N, now=0)
    tickets.issue("s1", End.TARGET, X, N, now=0)
    with pytest.raises(SpliceRefused, match="per peer"):
        tickets.issue("s1", End.TARGET, X, N, now=0)
    tickets.issue("s1", End.TARGET, OTHER, N, now=0)
    with pytest.raises(SpliceRefused, match="waiting"):
        tickets.issue("s1", End.TARGET, "peer-4", N, now=0)
    assert tickets.redeem(first.dial_ticket, now=11) is None  # expired
    assert len(tickets) == 0
    with pytest.raises(SpliceRefused, match="itself"):
        tickets.issue("s1", End.TARGET, N, N, now=20)


def test_a_session_that_ends_voids_its_tickets() -> None:
    tickets = SpliceTickets()
    gone = tickets.issue("s1", End.TARGET, X, N, now=0)
    kept = tickets.issue("s2", End.REQUESTER, X, OTHER, now=0)
    tickets.end_session("s1")
    assert tickets.redeem(gone.dial_ticket, now=1) is None
    assert tickets.redeem(kept.dial_ticket, now=1) == (kept, End.REQUESTER)


# -- the splice port -------------------------------------------------------------------------
class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.from_client = self.to_client = 0

    def __call__(self, session_id: str, from_client: int, to_client: int) -> None:
        with self.lock:
            self.from_client += from_client
            self.to_client += to_client


@pytest.fixture
def splice_port() -> Iterator[tuple[SpliceServer, Counts]]:
    counts = Counts()
    server = SpliceServer(SpliceTickets(), counts, pair_timeout=2, auth_timeout=1,
                          max_connections=4)
    server.start("127.0.0.1")
    try:
        yield server, counts
    finally:
        server.stop()


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


def _pair(server: SpliceServer) -> tuple[socket.socket, socket.socket]:
    pending = server.tickets.issue("s1", End.TARGET, X, N, now=time.monotonic())
    accepted = server.tickets.accept(pending.offer_ticket, N, now=time.monotonic())
    assert accepted.connect_ticket is not None
    address = ("127.0.0.1", server.port)
    target = dial(address, accepted.connect_ticket, timeout=2)
    requester = dial(address, pending.dial_ticket, timeout=2)
    return requester, target


def test_bytes_cross_both_ways_and_are_counted(splice_port: tuple[SpliceServer, Counts]) -> None:
    server, counts = splice_port
    requester, target = _pair(server)
    blob = bytes(range(256)) * 8192  # 2 MiB from the target
    with requester, target:
        requester.sendall(b"token")
        target.settimeout(5)
        assert target.recv(5) == b"token"
        sender = threading.Thread(target=lambda: (target.sendall(blob),
                                                  target.shutdown(socket.SHUT_WR)))
        sender.start()
        assert _read_all(requester) == blob
        sender.join(5)
    deadline = time.monotonic() + 5
    while server.active() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.active() == 0 and server.spliced == 1
    assert counts.from_client == len(blob) and counts.to_client == len(b"token")


def test_the_offer_ticket_or_junk_gets_nothing_through(
        splice_port: tuple[SpliceServer, Counts]) -> None:
    """The requester knows the offer ticket: with it, it cannot play the target's end and
    have the relay carry its own bytes on the target's account."""
    server, counts = splice_port
    pending = server.tickets.issue("s1", End.TARGET, X, N, now=time.monotonic())
    address = ("127.0.0.1", server.port)
    fake_target = dial(address, pending.offer_ticket, timeout=2)
    junk = dial(address, b"\0" * TICKET_BYTES, timeout=2)
    short = socket.create_connection(address, timeout=2)
    short.sendall(b"abc")  # never a whole ticket: dropped after the auth timeout
    requester = dial(address, pending.dial_ticket, timeout=2)
    with fake_target, junk, short, requester:
        for sock in (fake_target, junk, short):
            assert _read_all(sock) == b""  # closed by the relay
        requester.sendall(b"hello?")
        assert _read_all(requester) == b""  # the other end never came: closed after the wait
    assert server.spliced == 0
    assert counts.from_client == counts.to_client == 0


def test_connections_over_the_cap_are_closed_at_once(
        splice_port: tuple[SpliceServer, Counts]) -> None:
    server, _ = splice_port
    address = ("127.0.0.1", server.port)
    held = [socket.create_connection(address, timeout=2) for _ in range(4)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(address, timeout=2)
        with extra:
            assert _read_all(extra) == b""
        assert server.refused >= 1
    finally:
        for sock in held:
            sock.close()


def test_ending_the_session_closes_its_splice(splice_port: tuple[SpliceServer, Counts]) -> None:
    server, _ = splice_port
    requester, target = _pair(server)
    with requester, target:
        requester.sendall(b"x")
        target.settimeout(5)
        assert target.recv(1) == b"x"
        server.end_session("s1")
        assert _read_all(requester) == b""
        assert _read_all(target) == b""
    assert server.active() == 0
