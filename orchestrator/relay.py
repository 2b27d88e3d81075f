"""Relaying for the node: its sessions as a relay (``--relay``); its relay behind NAT (``--nat``).

``RelayServer`` is the relay mode behind ``/api/relay/sessions``: ``network.relay.RelayService``
on the node's transport, with the blacklist and the API's errors.

``relay_for(peers, peer_id)`` is how the transport dials a peer behind NAT: through the relay
that peer's record names.

``RelayClient`` is the NAT mode behind ``/api/relay/candidates``, ``connect``, ``disconnect`` and
``prefer``. Candidates are the peers whose signed record says they relay. Every
``relay_probe_seconds`` each one is asked for its terms (``relay_info``), which measures its
latency and whether it answers. Unless told to stay disconnected, the node keeps a session with
one relay: the preferred one when it answers, else the fastest; it keeps the session alive and
moves to another relay when its relay stops answering. The node's record names the relay, so
other peers reach it through a tunnel there (``network.relay_tunnel``). Every change of the
candidates or the connection is a ``RELAY_CANDIDATES`` event (discovery republishes the node's
record on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from network.peer_errors import PeerError
from network.peers import PeerDirectory
from network.relay import (
    RELAY_INFO,
    RELAY_KEEPALIVE,
    RELAY_REGISTER,
    RELAY_UNREGISTER,
    RelayService,
)
from network.transport import PeerTransport
from orchestrator.background import cancel_and_wait
from orchestrator.blacklist import Blacklist
from orchestrator.config import Settings
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.events import RELAY_CANDIDATES, EventBus

log = logging.getLogger("remote_network.relay")

BLACKLIST_REASON = "Manual blacklist from relay session"
PREFERENCE_FILE = "relay.json"


class RelayServer:
    def __init__(self, transport: PeerTransport, *, blacklist: Blacklist, capacity: int,
                 price_per_gb: float) -> None:
        self.blacklist = blacklist
        self.service = RelayService(transport, capacity=capacity, price_per_gb=price_per_gb)

    def sessions(self) -> list[dict[str, Any]]:
        return self.service.list()

    def totals(self) -> dict[str, Any]:
        """The relay's figures for node status: sessions now, the cap, the price, and the
        bytes the sessions open now have carried."""
        rows = self.service.list()
        return {"active_sessions": len(rows), "max_connections": self.service.sessions.capacity,
                "pricing_per_gb": self.service.price_per_gb,
                "total_bytes": sum(r["total_bytes"] for r in rows)}

    def _session(self, session_id: str) -> Any:
        session = self.service.sessions.get(session_id)
        if session is None:
            raise NotFound("Session not found")
        return session

    def disconnect(self, session_id: str) -> None:
        self.service.end(self._session(session_id), "disconnected by the relay's owner")

    def blacklist_session(self, session_id: str) -> None:
        session = self._session(session_id)
        self.blacklist.add(session.client_peer_id, BLACKLIST_REASON)
        self.service.end(session, "peer is blacklisted")


@dataclass
class Candidate:
    peer_id: str
    latency_ms: float | None = None
    available: bool = False
    unavailable_msg: str = "not probed yet"
    pricing_per_gb: float = 0.0
    capacity: int = 0
    probes: int = 0
    answers: int = 0


class ConnectedRelay:
    """The relay this node (behind NAT) is registered with ("" when none): the one peer whose
    tunnels to us the transport accepts. Built before the transport; the ``RelayClient`` keeps
    it current."""

    def __init__(self) -> None:
        self.peer_id = ""

    def accepts(self, peer_id: str) -> bool:
        return bool(peer_id) and peer_id == self.peer_id


class RelayClient:
    def __init__(self, transport: PeerTransport, settings: Settings, *, peers: PeerDirectory,
                 is_blacklisted: Callable[[str], bool], bus: EventBus,
                 dht_node_id: str, connected: ConnectedRelay) -> None:
        """``dht_node_id``: this node's DHT node id (hex), which the relay records for it;
        ``connected``: where the relay it is registered with is kept for the transport."""
        self.settings = settings
        self.transport = transport
        self.peers = peers
        self.is_blacklisted = is_blacklisted
        self.bus = bus
        self.dht_node_id = dht_node_id
        self.connected = connected
        self.session_id = ""
        self.connected_since = 0.0  # wall-clock seconds, while connected
        # The session's bytes as the relay last reported them (ingress: what it received
        # from us; egress: what it forwarded to us).
        self.relay_bytes = (0, 0)
        self.preferred = self._load_preference()
        self.auto = True  # keep a relay; off after a disconnect asked for through the API
        self._candidates: dict[str, Candidate] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._target = ""  # a relay asked for through the API, tried next
        self._published: tuple[Any, ...] | None = None
        self.transport.on_disconnected.append(self._peer_gone)

    @property
    def connected_relay_id(self) -> str:
        return self.connected.peer_id

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay-client")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self.connected_relay_id:
            with contextlib.suppress(Exception):
                await self.transport.request(self.connected_relay_id, RELAY_UNREGISTER, {},
                                             timeout=2)

    # -- the API ---------------------------------------------------------------------------------
    def candidates(self) -> list[dict[str, Any]]:
        self._refresh_candidates()
        out = []
        for c in sorted(self._candidates.values(),
                        key=lambda c: (not c.available, c.latency_ms or float("inf"))):
            info = self.peers.get(c.peer_id)
            out.append({
                **self._reached(c),
                "reputation_score": round(c.answers / c.probes, 3) if c.probes else 0.0,
                "pricing_per_gb": c.pricing_per_gb,
                "capacity": c.capacity,
                "last_seen": int(info.last_seen) if info else 0,
                "is_connected": c.peer_id == self.connected_relay_id,
                "is_preferred": c.peer_id == self.preferred,
                "is_available": c.available,
                "unavailable_msg": "" if c.available else c.unavailable_msg,
            })
        return out

    def current_session(self) -> dict[str, Any] | None:
        """The session with the relay this node is connected to (None: none): where the relay
        is, how far, its price, how long, and its bytes and cost as the relay counts them."""
        relay = self.connected_relay_id
        if not relay:
            return None
        c = self._candidates.get(relay) or Candidate(relay)
        reached = self._reached(c)
        ingress, egress = self.relay_bytes
        total = ingress + egress
        return {"relay_peer_id": relay, "relay_node_id": reached["node_id"],
                "endpoint": reached["endpoint"], "latency": reached["latency"],
                "latency_ms": reached["latency_ms"], "pricing": c.pricing_per_gb,
                "duration_seconds": int(max(0.0, time.time() - self.connected_since)),
                "ingress_bytes": ingress, "egress_bytes": egress, "total_bytes": total,
                "current_cost": round(total / 1e9 * c.pricing_per_gb, 9)}

    def _reached(self, c: Candidate) -> dict[str, Any]:
        """A relay's DHT node id, its first QUIC address and the latency last measured."""
        info = self.peers.get(c.peer_id)
        record = info.record if info else None
        addresses = record.quic_addresses if record else ()
        return {
            "node_id": record.dht_node_id if record else "",
            "peer_id": c.peer_id,
            "endpoint": f"{addresses[0][0]}:{addresses[0][1]}" if addresses else "",
            "latency": f"{round(c.latency_ms)}ms" if c.latency_ms is not None else "",
            "latency_ms": round(c.latency_ms) if c.latency_ms is not None else 0,
        }

    def connect(self, peer_id: str) -> None:
        """Connect to ``peer_id`` in the background (it must be a relay candidate)."""
        self._known_candidate(peer_id)
        self.auto = True
        self._target = peer_id
        self._wake.set()

    def disconnect(self) -> None:
        """Leave the current relay and stay without one until ``connect`` or ``prefer``."""
        self.auto = False
        relay = self.connected_relay_id
        self._set_connected("", "")
        if relay:
            asyncio.get_running_loop().create_task(self._unregister(relay))

    def prefer(self, peer_id: str) -> None:
        """Use ``peer_id`` whenever it answers (kept across restarts)."""
        self._known_candidate(peer_id)
        self.preferred = peer_id
        self._save_preference()
        self.auto = True
        self._wake.set()
        self._publish()

    # -- the loop -------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except Exception:
                log.exception("relay round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.relay_probe_seconds)

    async def _round(self) -> None:
        self._refresh_candidates()
        await asyncio.gather(*(self._probe(c) for c in list(self._candidates.values())))
        if self.connected_relay_id and await self._keepalive():
            if self._target and self._target != self.connected_relay_id:
                await self._switch_to(self._target)
            elif (self.preferred and self.preferred != self.connected_relay_id
                  and self._usable(self.preferred)):
                await self._switch_to(self.preferred)
            self._target = ""
            self._publish()
            return
        if self.auto:
            for peer_id in self._choices():
                if await self._register(peer_id):
                    break
        self._target = ""
        self._publish()

    def _choices(self) -> list[str]:
        order = []
        for wanted in (self._target, self.preferred):
            if wanted and wanted in self._candidates and wanted not in order:
                order.append(wanted)
        rest = sorted((c for c in self._candidates.values() if c.available),
                      key=lambda c: c.latency_ms or float("inf"))
        order += [c.peer_id for c in rest if c.peer_id not in order]
        return order

    def _usable(self, peer_id: str) -> bool:
        c = self._candidates.get(peer_id)
        return c is not None and c.available

    async def _probe(self, c: Candidate) -> None:
        c.probes += 1
        started = time.perf_counter()
        try:
            info = await self.transport.request(c.peer_id, RELAY_INFO, {},
                                                timeout=self.settings.relay_probe_timeout)
        except PeerError as exc:
            c.available, c.unavailable_msg = False, exc.reason
            return
        c.answers += 1
        c.latency_ms = (time.perf_counter() - started) * 1000
        c.available, c.unavailable_msg = True, ""
        with contextlib.suppress(TypeError, ValueError):
            c.pricing_per_gb = float(info.get("pricing_per_gb") or 0)
            c.capacity = int(info.get("capacity") or 0)
        if c.capacity and int(info.get("sessions") or 0) >= c.capacity \
                and c.peer_id != self.connected_relay_id:
            c.available, c.unavailable_msg = False, "relay is full"

    async def _register(self, peer_id: str) -> bool:
        try:
            answer = await self.transport.request(peer_id, RELAY_REGISTER, {
                "dht_node_id": self.dht_node_id})
        except PeerError as exc:
            log.info("relay %s refused or did not answer: %s", peer_id[:16], exc.reason)
            c = self._candidates.get(peer_id)
            if c is not None:
                c.available, c.unavailable_msg = False, exc.reason
            return False
        self._set_connected(peer_id, str(answer.get("session_id") or ""))
        log.info("connected to relay %s (session %s)", peer_id[:16], self.session_id)
        return True

    async def _switch_to(self, peer_id: str) -> None:
        old = self.connected_relay_id
        if await self._register(peer_id) and old and old != peer_id:
            await self._unregister(old)

    async def _keepalive(self) -> bool:
        relay = self.connected_relay_id
        try:
            answer = await self.transport.request(relay, RELAY_KEEPALIVE, {},
                                                  timeout=self.settings.relay_probe_timeout)
            if self.connected_relay_id == relay:
                self.relay_bytes = (relay_byte_count(answer, "ingress_bytes"),
                                    relay_byte_count(answer, "egress_bytes"))
            return True
        except PeerError as exc:
            log.warning("relay %s lost: %s", relay[:16], exc.reason)
            if self.connected_relay_id == relay:
                self._set_connected("", "")
            return False

    async def _unregister(self, relay: str) -> None:
        with contextlib.suppress(PeerError):
            await self.transport.request(relay, RELAY_UNREGISTER, {},
                                         timeout=self.settings.relay_probe_timeout)

    def _peer_gone(self, peer_id: str) -> None:
        if peer_id == self.connected_relay_id:
            log.warning("connection to relay %s closed", peer_id[:16])
            self._set_connected("", "")
            self._wake.set()

    # -- state ----------------------------------------------------------------------------------
    def _set_connected(self, relay: str, session_id: str) -> None:
        changed = relay != self.connected_relay_id
        self.connected.peer_id, self.session_id = relay, session_id
        if changed:
            self.connected_since, self.relay_bytes = time.time(), (0, 0)
        if changed:
            self._publish()

    def _publish(self) -> None:
        """A RELAY_CANDIDATES event, when which relays answer, which one is preferred or which
        one the node is connected to changed since the last one (latencies alone do not).
        A change of relay always makes one."""
        candidates = self.candidates()
        state = (self.connected_relay_id, tuple(
            (c["peer_id"], c["is_available"], c["is_preferred"]) for c in candidates))
        if state == self._published:
            return
        self._published = state
        self.bus.publish(RELAY_CANDIDATES, {"candidates": candidates,
                                            "connected_relay": self.connected_relay_id})

    def _refresh_candidates(self) -> None:
        relays = {info.peer_id for info in self.peers.all()
                  if info.record is not None and info.record.is_relay
                  and not self.is_blacklisted(info.peer_id)}
        for peer_id in relays - self._candidates.keys():
            self._candidates[peer_id] = Candidate(peer_id)
        for peer_id in self._candidates.keys() - relays:
            if peer_id != self.connected_relay_id:
                del self._candidates[peer_id]

    def _known_candidate(self, peer_id: str) -> None:
        self._refresh_candidates()
        if peer_id not in self._candidates:
            raise InvalidInput(f"Peer {peer_id[:16]} is not a known relay")

    def _load_preference(self) -> str:
        try:
            value = json.loads((self.settings.data_dir / PREFERENCE_FILE).read_text())
            return str(value.get("preferred") or "")
        except (OSError, ValueError, AttributeError):
            return ""

    def _save_preference(self) -> None:
        path = self.settings.data_dir / PREFERENCE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"preferred": self.preferred}))
        tmp.replace(path)


def relay_byte_count(answer: Any, key: str) -> int:
    """A byte count from a relay's answer: a whole number from 0 to 2**63 - 1, else 0 (a relay
    is a stranger too; the figure is only shown)."""
    value = answer.get(key) if isinstance(answer, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return 0


def relay_for(peers: PeerDirectory, peer_id: str) -> str | None:
    """The relay to reach ``peer_id`` through: the one its record names, when it is behind
    NAT and uses one."""
    info = peers.get(peer_id)
    record = info.record if info else None
    if record is None or not record.nat.behind_nat or not record.nat.using_relay:
        return None
    return record.nat.connected_relay_id or None
