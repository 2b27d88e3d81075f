"""Hole punching: moving a peer reached through a relay onto a direct path.

When this node has reached a peer through that peer's relay, and one side is public or behind a
cone-type NAT (``network.nat_type``), it asks the peer over the relayed connection
``punch {address}``, naming its own external address as other peers see it. The peer answers
with its external address and sends a few small datagrams from its QUIC port toward ours, with
a TTL of ``PUNCH_TTL``: they open its NAT's mapping for us but die before they reach our NAT.
That matters: a datagram that reached our NAT before we had sent anything to the peer would be
refused there and leave a conntrack entry behind that makes our NAT pick another port for our
own packets to the peer (Linux does this). We then dial its external address from our QUIC
port (``network.udp_endpoint``), which opens our own mapping; the peer's NAT lets the dial in
on the mapping it opened, and QUIC retransmits its first packets if one is lost.

When the direct connection passes the identity exchange, the transport makes it the peer's
connection: new requests take it, and what was under way on the relayed one carries on there
until it idles out. When nothing answers, the relayed path stays and nobody is told.

A punch makes this node send datagrams to an address a stranger names, so each is small
(``PUNCH_PAYLOAD``, which no QUIC endpoint reads as a packet), a handful per request, asked
only over a relayed connection, at most once per peer per ``cooldown`` and ``max_per_minute``
times a minute in all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from network import quic
from network.nat_type import Address, NatType, observed_address
from network.peer_errors import PeerError, RequestRejected
from network.streams import IncomingRequest

log = logging.getLogger("remote_network.hole_punch")

PUNCH = "punch"
# The first byte has QUIC's fixed bit clear: any QUIC endpoint drops it unread.
PUNCH_PAYLOAD = b"\x00rn-punch"
PUNCH_PACKETS = 10
PUNCH_INTERVAL = 0.1
# Hops a punch goes: past our own NAT, not as far as the peer's.
PUNCH_TTL = 2
DIAL_ATTEMPTS = 3
COOLDOWN = 30.0
MAX_PER_MINUTE = 30
# Upgrade times kept for status and benches.
KEEP_TIMES = 256


def may_punch(own: NatType, peer: NatType) -> bool:
    """Whether a direct path is worth trying: one side public or cone-type."""
    return bool({own, peer} & {NatType.PUBLIC, NatType.CONE})


class Punchable(Protocol):
    """What hole punching needs of the transport."""

    @property
    def peer_id(self) -> str: ...

    def send_from_port(self, data: bytes, address: Address, *,
                       ttl: int | None = None) -> None: ...

    def current_connection(self, peer_id: str) -> quic.PeerConnection | None: ...

    async def connect_address(self, host: str, port: int, *,
                              expected_peer_id: str | None = None) -> str: ...

    async def request(self, peer_id: str, msg_type: str, data: dict[str, Any] | None = None,
                      timeout: float | None = None) -> dict[str, Any]: ...


class HolePuncher:
    """Both sides of a punch for one transport.

    ``own_nat()`` is this node's NAT type and external address; ``peer_nat(peer_id)`` what a
    peer's record says of its NAT."""

    def __init__(self, transport: Punchable, *,
                 own_nat: Callable[[], tuple[NatType, Address | None]],
                 peer_nat: Callable[[str], NatType],
                 cooldown: float = COOLDOWN, max_per_minute: int = MAX_PER_MINUTE,
                 request_timeout: float = 3.0) -> None:
        self.transport = transport
        self.own_nat = own_nat
        self.peer_nat = peer_nat
        self.cooldown = cooldown
        self.max_per_minute = max_per_minute
        self.request_timeout = request_timeout
        self.attempts = 0
        self.successes = 0
        self.upgrade_seconds: collections.deque[float] = collections.deque(maxlen=KEEP_TIMES)
        self._last: dict[str, float] = {}
        self._recent: collections.deque[float] = collections.deque()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- admission -----------------------------------------------------------------------------
    def _admit(self, peer_id: str, now: float) -> bool:
        """Once per peer per cooldown, and ``max_per_minute`` in all."""
        while self._recent and now - self._recent[0] > 60:
            self._recent.popleft()
        last = self._last.get(peer_id)
        if last is not None and now - last < self.cooldown:
            return False
        if len(self._recent) >= self.max_per_minute:
            return False
        self._last = {p: t for p, t in self._last.items() if now - t < self.cooldown}
        self._last[peer_id] = now
        self._recent.append(now)
        return True

    # -- the side that reached the peer through its relay --------------------------------------
    def relayed(self, peer_id: str) -> None:
        """The transport's hook: ``peer_id`` was just reached through a relay."""
        task = asyncio.get_running_loop().create_task(self.upgrade(peer_id),
                                                      name=f"punch-{peer_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def upgrade(self, peer_id: str) -> bool:
        """Try to move ``peer_id`` onto a direct path; whether it now has one."""
        started = time.monotonic()
        own_type, own_address = self.own_nat()
        if own_address is None or not may_punch(own_type, self.peer_nat(peer_id)) \
                or not self._admit(peer_id, started):
            return False
        self.attempts += 1
        try:
            answer = await self.transport.request(
                peer_id, PUNCH, {"address": list(own_address)}, timeout=self.request_timeout)
        except PeerError as exc:
            log.info("no punch with %s: %s", peer_id[:16], exc.reason)
            return False
        address = observed_address(answer)
        if address is None:
            return False
        for _ in range(DIAL_ATTEMPTS):
            try:
                await self.transport.connect_address(*address, expected_peer_id=peer_id)
            except PeerError as exc:
                log.debug("direct dial to %s at %s failed: %s", peer_id[:16], address,
                          exc.reason)
                continue
            conn = self.transport.current_connection(peer_id)
            if conn is not None and conn.relayed_via is None:
                self.successes += 1
                self.upgrade_seconds.append(time.monotonic() - started)
                log.info("peer %s is direct at %s:%d after %.0f ms", peer_id[:16],
                         *address, (time.monotonic() - started) * 1000)
                return True
        log.info("hole punch to %s at %s:%d failed: staying relayed", peer_id[:16],
                 *address)
        return False

    # -- the side behind the relay -------------------------------------------------------------
    async def on_punch(self, request: IncomingRequest) -> dict[str, Any]:
        """``punch {address}`` over a relayed connection: our external address, and a few
        datagrams toward theirs."""
        if request.relayed_via is None:
            raise RequestRejected("punch is asked only over a relayed connection")
        address = observed_address({"address": request.data.get("address")})
        if address is None:
            raise RequestRejected("punch needs an address [ip, port]")
        own_type, own_address = self.own_nat()
        if own_address is None or own_type is NatType.UNKNOWN:
            raise RequestRejected("this node does not know its external address")
        if not self._admit(request.peer_id, time.monotonic()):
            raise RequestRejected("punch asked too often: try later")
        # The first punch leaves before the answer: the mapping is open when the dial comes.
        self._punch(address)
        task = asyncio.get_running_loop().create_task(self._spray(address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"address": list(own_address)}

    def _punch(self, address: Address) -> None:
        with contextlib.suppress(OSError):
            self.transport.send_from_port(PUNCH_PAYLOAD, address, ttl=PUNCH_TTL)

    async def _spray(self, address: Address) -> None:
        for _ in range(PUNCH_PACKETS - 1):
            await asyncio.sleep(PUNCH_INTERVAL)
            self._punch(address)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def counts(self) -> dict[str, Any]:
        times = sorted(self.upgrade_seconds)
        return {"hole_punch_attempts": self.attempts, "hole_punch_successes": self.successes,
                "hole_punch_p50_ms": round(times[len(times) // 2] * 1000, 1) if times else None}
