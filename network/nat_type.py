"""What kind of NAT stands between this node and the network, learned by asking peers.

Every peer answers ``observe_address`` with the UDP address it sees the asking connection come
from. Connections a node dials leave from its QUIC port (``network.udp_endpoint``), so the
answers of peers on two or more different addresses tell:

- **public**: every peer sees the address the node's socket has (no NAT in between);
- **cone**: every peer sees one same external address (endpoint-independent mapping: a hole
  punched toward one peer serves the others);
- **symmetric**: peers see different external ports (a mapping per destination; hole punching
  from here rarely works);
- **unknown**: too few answers from peers on distinct addresses to tell.

``classify`` is the rule (pure); ``observed_address`` reads one answer, as a stranger may send
anything; ``NatObserver`` asks the peers and keeps the result, learning it again when the
node's own addresses change or the result grows old.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from network import quic
from network.peer_errors import PeerError, RequestRejected
from network.streams import IncomingRequest

log = logging.getLogger("remote_network.nat")

OBSERVE_ADDRESS = "observe_address"
MAX_HOST_CHARS = 45  # the longest textual IPv6 address
Address = tuple[str, int]


class NatType(StrEnum):
    PUBLIC = "public"
    CONE = "cone"
    SYMMETRIC = "symmetric"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Observation:
    """One peer's answer: it is at ``observer_ip``, our packets to it leave from ``local``
    (address and port of our socket), and it sees them come from ``seen``."""

    observer_ip: str
    local: Address
    seen: Address


def classify(observations: Iterable[Observation]) -> tuple[NatType, Address | None]:
    """The NAT type and the external address the observations show (None when they disagree
    or are too few). One observation per observer address counts."""
    by_ip: dict[str, Observation] = {}
    for o in observations:
        by_ip.setdefault(o.observer_ip, o)
    if len(by_ip) < 2:
        return NatType.UNKNOWN, None
    distinct = list(by_ip.values())
    if all(o.seen == o.local for o in distinct):
        return NatType.PUBLIC, distinct[0].seen
    # Peers that see our socket's own address are on our side of the NAT: they tell nothing.
    beyond = [o for o in distinct if o.seen != o.local]
    if len(beyond) < 2:
        return NatType.UNKNOWN, beyond[0].seen if beyond else None
    seen = {o.seen for o in beyond}
    if len(seen) == 1:
        return NatType.CONE, beyond[0].seen
    return NatType.SYMMETRIC, None


def observed_address(answer: object) -> Address | None:
    """The address in a peer's ``observe_address`` answer, or None when it is not one."""
    if not isinstance(answer, dict):
        return None
    value = answer.get("address")
    if not isinstance(value, list) or len(value) != 2:
        return None
    host, port = value
    if not isinstance(host, str) or len(host) > MAX_HOST_CHARS \
            or not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return None
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return None


async def answer_observe(request: IncomingRequest) -> dict[str, Any]:
    """``observe_address``: where the asking connection's packets come from, as seen here."""
    if request.peer_address is None:
        raise RequestRejected("no direct path to observe: the connection is relayed")
    host, port = request.peer_address
    return {"address": [host, port]}


def local_ip_toward(ip: str) -> str | None:
    """The address this host sends from toward ``ip`` (the routing table's choice)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((ip, 9))  # no packet is sent: connect() on UDP only picks the route
        return str(s.getsockname()[0])
    return None


class Observable(Protocol):
    """What the observer needs of the transport."""

    @property
    def port(self) -> int: ...

    @property
    def local_host(self) -> str: ...

    async def connect(self, peer_id: str, *,
                      timeout: float | None = None) -> quic.PeerConnection: ...

    async def request(self, peer_id: str, msg_type: str, data: dict[str, Any] | None = None,
                      timeout: float | None = None) -> dict[str, Any]: ...


class NatObserver:
    """Asks peers where they see us from, and keeps what that says.

    ``candidates()`` lists peers to ask (the node passes those with direct addresses);
    ``local_addresses()`` is what, when it changes, makes the node ask again;
    ``on_change(nat_type, address)`` is told of every new result."""

    def __init__(self, transport: Observable, candidates: Callable[[], list[str]], *,
                 local_addresses: Callable[[], list[str]] = lambda: [],
                 on_change: Callable[[NatType, Address | None], None] = lambda _t, _a: None,
                 max_asked: int = 8, want_observers: int = 3, timeout: float = 3.0,
                 check_every: float = 30.0, relearn_every: float = 600.0) -> None:
        self.transport = transport
        self.candidates = candidates
        self.local_addresses = local_addresses
        self.on_change = on_change
        self.max_asked = max_asked
        self.want_observers = want_observers
        self.timeout = timeout
        self.check_every = check_every
        self.relearn_every = relearn_every
        self.nat_type = NatType.UNKNOWN
        self.external_address: Address | None = None
        self.learned_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._forced = False

    @property
    def public_endpoint(self) -> str:
        """``ip:port`` as peers beyond the NAT see the node's QUIC port ("" when unknown)."""
        if self.external_address is None:
            return ""
        host, port = self.external_address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def observe(self) -> tuple[NatType, Address | None]:
        """Ask peers now; the result is kept (and told) when it differs from the last."""
        observations: list[Observation] = []
        ips: set[str] = set()
        for peer_id in self.candidates()[: self.max_asked]:
            got = await self._ask(peer_id)
            if got is not None and got.observer_ip not in ips:
                ips.add(got.observer_ip)
                observations.append(got)
                if len(observations) >= self.want_observers:
                    break
        nat_type, address = classify(observations)
        self.learned_at = time.monotonic()
        if (nat_type, address) != (self.nat_type, self.external_address):
            log.info("NAT type %s (external address %s), from %d peers", nat_type, address,
                     len(observations))
            self.nat_type, self.external_address = nat_type, address
            self.on_change(nat_type, address)
        return nat_type, address

    async def _ask(self, peer_id: str) -> Observation | None:
        try:
            conn = await self.transport.connect(peer_id, timeout=self.timeout)
            if conn.relayed_via is not None or conn.own_socket or conn.peer_address is None:
                return None
            answer = await self.transport.request(peer_id, OBSERVE_ADDRESS, {},
                                                  timeout=self.timeout)
        except PeerError as exc:
            log.debug("no address observation from %s: %s", peer_id[:16], exc.reason)
            return None
        seen = observed_address(answer)
        observer_ip = conn.peer_address[0]
        local_ip = self.transport.local_host
        if local_ip in ("0.0.0.0", "::", ""):
            local_ip = await asyncio.to_thread(local_ip_toward, observer_ip) or local_ip
        if seen is None:
            return None
        return Observation(observer_ip, (local_ip, self.transport.port), seen)

    # -- learning it again ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="nat-observer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def relearn(self) -> None:
        """Ask again soon (new peers, a new relay)."""
        self._forced = True
        self._wake.set()

    async def _run(self) -> None:
        addresses: list[str] | None = None
        while True:
            now_addresses = sorted(await asyncio.to_thread(self.local_addresses))
            due = (self._forced or addresses != now_addresses
                   or self.nat_type is NatType.UNKNOWN
                   or time.monotonic() - self.learned_at >= self.relearn_every)
            if due:
                addresses, self._forced = now_addresses, False
                try:
                    await self.observe()
                except Exception:
                    log.exception("observing the NAT type failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.check_every):
                    await self._wake.wait()
