"""The peers this node knows: from signed DHT records and from live connections.

A peer enters the directory when a valid record of our topic arrives (source ``dht``) or when a
connection from it is authenticated (``mark_seen(peer_id, "quic")``, source ``quic`` until a record
is known). ``last_seen`` is the newest of the record's signing time (never ahead of our clock) and
the last live contact. A peer leaves when it publishes an offline record, when it is forgotten, or
when it has not been seen for ``stale_after`` seconds. Every arrival, departure and change of what
the API shows goes to ``on_change(peer_id, action)`` with action ``added``/``updated``/``removed``.

The directory holds at most ``max_peers``. When it is full, stale peers go first; then a peer
with a verified record may take the place of the least recently seen peer known only from a live
contact; otherwise the newcomer is not listed, and the peers already known stay.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from network.records import PeerRecord

log = logging.getLogger("remote_network.peers")

ChangeHook = Callable[[str, str], None]
DEFAULT_MAX_PEERS = 1024


@dataclass(frozen=True)
class PeerInfo:
    peer_id: str
    last_seen: float
    source: str = "dht"
    topic: str = ""
    record: PeerRecord | None = None
    # Addresses reported by a live connection, used when there is no record.
    observed_addresses: tuple[tuple[str, int], ...] = field(default=())

    @property
    def quic_addresses(self) -> list[tuple[str, int]]:
        addresses = list(self.record.quic_addresses) if self.record else []
        for addr in self.observed_addresses:
            if addr not in addresses:
                addresses.append(addr)
        return addresses

    @property
    def capabilities(self) -> dict[str, Any] | None:
        return self.record.capabilities if self.record else None

    def to_api(self) -> dict[str, Any]:
        """The fields of ``GET /api/peers``, exactly."""
        r = self.record
        return {
            "peer_id": self.peer_id,
            "dht_node_id": r.dht_node_id if r else "",
            "is_relay": r.is_relay if r else False,
            "is_store": r.is_store if r else False,
            "files_count": r.files_count if r else 0,
            "apps_count": r.apps_count if r else 0,
            "last_seen": iso_utc(self.last_seen),
            "topic": self.topic,
            "source": self.source,
            "is_behind_nat": r.nat.behind_nat if r else False,
            "nat_type": r.nat.nat_type if r else "",
            "using_relay": r.nat.using_relay if r else False,
            "connected_relay_id": r.nat.connected_relay_id if r else "",
            "service_digests": list(r.service_digests) if r else [],
        }


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PeerDirectory:
    def __init__(self, own_peer_id: str, topic: str, *, stale_after: float = 120.0,
                 max_peers: int = DEFAULT_MAX_PEERS, on_change: ChangeHook | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.own_peer_id = own_peer_id
        self.topic = topic
        self.stale_after = stale_after
        self.max_peers = max_peers
        self.refused = 0
        self.on_change = on_change
        self.clock = clock
        self._peers: dict[str, PeerInfo] = {}

    # -- reading -------------------------------------------------------------------------------
    def get(self, peer_id: str) -> PeerInfo | None:
        return self._peers.get(peer_id)

    def all(self) -> list[PeerInfo]:
        return sorted(self._peers.values(), key=lambda p: p.peer_id)

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def quic_addresses(self, peer_id: str) -> list[tuple[str, int]]:
        info = self._peers.get(peer_id)
        return info.quic_addresses if info else []

    # -- writing -------------------------------------------------------------------------------
    def update_from_record(self, record: PeerRecord) -> bool:
        """Take a verified record. Returns True when the directory changed (beyond last_seen).

        Sequence order is the caller's (``RecordBook``) job; a record older than the one held
        is ignored here too, so a late answer never rolls a peer back.
        """
        pid = record.peer_id
        if pid == self.own_peer_id or record.topic != self.topic:
            return False
        if not math.isfinite(record.timestamp):
            return False
        now = self.clock()
        current = self._peers.get(pid)
        if current and current.record and record.seq <= current.record.seq:
            return False
        if not record.online:
            return self.forget(pid)
        seen = min(record.timestamp, now)
        if current is not None:
            seen = max(seen, current.last_seen)
        if now - seen > self.stale_after:
            return False  # a record left behind by a peer that is gone
        if current is None and not self._make_room(verified=True):
            return False
        info = PeerInfo(pid, seen, "dht", record.topic, record,
                        current.observed_addresses if current else ())
        self._peers[pid] = info
        if current is None:
            self._emit(pid, "added")
            return True
        if current.to_api() | {"last_seen": ""} != info.to_api() | {"last_seen": ""}:
            self._emit(pid, "updated")
            return True
        return False

    def mark_seen(self, peer_id: str, source: str = "quic", *,
                  address: tuple[str, int] | None = None) -> None:
        """A live, authenticated contact with ``peer_id`` (a connection, a message)."""
        if peer_id == self.own_peer_id:
            return
        now = self.clock()
        current = self._peers.get(peer_id)
        if current is None:
            if not self._make_room(verified=False):
                return
            observed = (address,) if address else ()
            self._peers[peer_id] = PeerInfo(peer_id, now, source, self.topic, None, observed)
            self._emit(peer_id, "added")
            return
        observed = current.observed_addresses
        if address and address not in observed:
            observed = (*observed, address)[-4:]
        self._peers[peer_id] = replace(current, last_seen=max(now, current.last_seen),
                                       observed_addresses=observed)

    def forget(self, peer_id: str) -> bool:
        if self._peers.pop(peer_id, None) is None:
            return False
        self._emit(peer_id, "removed")
        return True

    def expire(self) -> list[str]:
        """Drop peers not seen within ``stale_after``. Returns their ids."""
        floor = self.clock() - self.stale_after
        gone = [pid for pid, info in self._peers.items() if not info.last_seen >= floor]
        for pid in gone:
            log.info("peer %s not seen for %.0f s: dropped", pid[:16], self.stale_after)
            self.forget(pid)
        return gone

    def _make_room(self, *, verified: bool) -> bool:
        """Room for one newcomer (``verified``: it comes with a signed record)."""
        if len(self._peers) < self.max_peers:
            return True
        self.expire()
        if len(self._peers) < self.max_peers:
            return True
        unverified = [info for info in self._peers.values() if info.record is None]
        if verified and unverified:
            oldest = min(unverified, key=lambda info: (info.last_seen, info.peer_id))
            self.forget(oldest.peer_id)
            return True
        self.refused += 1
        if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
            log.warning("peer directory full (%d peers): %d newcomers not listed",
                        self.max_peers, self.refused)
        return False

    def _emit(self, peer_id: str, action: str) -> None:
        log.debug("peer %s %s", peer_id[:16], action)
        if self.on_change is not None:
            try:
                self.on_change(peer_id, action)
            except Exception:
                log.exception("peer change hook failed")
