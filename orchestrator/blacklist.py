"""The peer blacklist: who this node refuses to talk to."""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlmodel import col, select

from orchestrator.db import Database
from orchestrator.errors import InvalidInput
from orchestrator.events import BLACKLIST_UPDATED, EventBus
from orchestrator.models import BlacklistEntry

DEFAULT_REASON = "Manually blacklisted"
_PEER_ID = re.compile(r"^[A-Za-z0-9]{8,128}$")


def validate_peer_id(peer_id: object) -> str:
    if not isinstance(peer_id, str) or not peer_id.strip():
        raise InvalidInput("peer_id is required")
    peer_id = peer_id.strip()
    if not _PEER_ID.match(peer_id):
        raise InvalidInput("peer_id must be 8 to 128 letters or digits")
    return peer_id


class Blacklist:
    def __init__(self, db: Database, bus: EventBus, *, own_peer_id: str) -> None:
        self.db = db
        self.bus = bus
        self.own_peer_id = own_peer_id
        self._cache: set[str] | None = None
        self._added_hooks: list[Callable[[str], None]] = []

    def after_add(self, hook: Callable[[str], None]) -> None:
        """Call ``hook(peer_id)`` each time a peer is blacklisted (the network drops its
        connections)."""
        self._added_hooks.append(hook)

    def list(self) -> list[BlacklistEntry]:
        with self.db.session() as s:
            return list(s.exec(select(BlacklistEntry).order_by(col(BlacklistEntry.blacklisted_at))))

    def add(self, peer_id: str, reason: str | None = None) -> BlacklistEntry:
        peer_id = validate_peer_id(peer_id)
        if peer_id == self.own_peer_id:
            raise InvalidInput("A node cannot blacklist itself")
        reason = (reason or "").strip() or DEFAULT_REASON
        with self.db.session() as s:
            entry = s.get(BlacklistEntry, peer_id) or BlacklistEntry(peer_id=peer_id)
            entry.reason = reason
            s.add(entry)
            s.commit()
        self._cache = None
        for hook in self._added_hooks:
            hook(peer_id)
        self.bus.publish(BLACKLIST_UPDATED, {"action": "added", "peer_id": peer_id})
        return entry

    def remove(self, peer_id: str) -> bool:
        """Remove ``peer_id``; idempotent. True when it was listed."""
        peer_id = validate_peer_id(peer_id)
        with self.db.session() as s:
            entry = s.get(BlacklistEntry, peer_id)
            if entry is None:
                return False
            s.delete(entry)
            s.commit()
        self._cache = None
        self.bus.publish(BLACKLIST_UPDATED, {"action": "removed", "peer_id": peer_id})
        return True

    def contains(self, peer_id: str) -> bool:
        if self._cache is None:
            with self.db.session() as s:
                self._cache = set(s.exec(select(BlacklistEntry.peer_id)).all())
        return peer_id in self._cache
