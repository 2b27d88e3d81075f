"""Topic membership from signed entries: pure codec, merge and holder logic, no I/O.

Each member entry is signed by the member itself over (topic, peer id, timestamp), so nobody can
list a peer id whose key it does not hold. A storing node keeps a ``MemberTable`` per topic key:
an entry is refreshed only by a newer signed timestamp, expires ``ttl`` seconds after we last
received such a refresh (our clock, whatever the member wrote), and is attributed to the source
(the storing node's address) that last moved it forward. One source may bring at most
``per_source`` entries, and when the table is full a newcomer is taken only at the expense of the
source holding the most, so one liar with many fresh keys cannot push honest members out.
Readers merge the values of several holders with ``gather`` (signatures checked, union, newest
time per member).

Wire form (binary, so ``MAX_MEMBERS`` entries fit one kademlia message of 8 KB):
``MAGIC + u8 len(topic) + topic(utf-8) + n * (public key 32 | u64 seconds | signature 64)``.
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from network.identity import Identity, peer_id_for, verify

MAGIC = b"RNTOPIC2"
ENTRY_BYTES = 32 + 8 + 64
MAX_TOPIC_BYTES = 128
MAX_MEMBERS = 60
MAX_VALUE_BYTES = len(MAGIC) + 1 + MAX_TOPIC_BYTES + MAX_MEMBERS * ENTRY_BYTES
# How far ahead of our clock a member's time may be (the two clocks' skew).
MAX_SKEW = 300
# New members one source may bring to a holder's table.
MAX_PER_SOURCE = 8
# Members a reader takes from all holders together (the freshest).
MAX_GATHERED = 256
_SIGNING_CONTEXT = b"remote-network-topic-member\x00"
_VERIFIED_CACHE = 8192
_verified: OrderedDict[tuple[bytes, str, int, bytes], bool] = OrderedDict()


class TopicError(ValueError):
    """A value that is not a topic membership value."""


@dataclass(frozen=True)
class MemberEntry:
    """One member's signed statement that it belongs to ``topic`` as of ``timestamp``."""

    public_key: bytes
    timestamp: int
    signature: bytes
    peer_id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "peer_id", peer_id_for(self.public_key))


@dataclass(frozen=True)
class Members:
    topic: str
    entries: dict[str, MemberEntry] = field(default_factory=dict)

    def peer_ids(self) -> set[str]:
        return set(self.entries)

    @property
    def members(self) -> dict[str, int]:
        """Each member's peer id and signed time."""
        return {pid: e.timestamp for pid, e in self.entries.items()}


def signed_message(topic: str, peer_id: str, timestamp: int) -> bytes:
    return b"%s%s\x00%s\x00%d" % (_SIGNING_CONTEXT, topic.encode(), peer_id.encode(), timestamp)


def sign_entry(identity: Identity, topic: str, now: float) -> MemberEntry:
    ts = int(now)
    return MemberEntry(identity.public_key, ts,
                       identity.sign(signed_message(topic, identity.peer_id, ts)))


def announcement(identity: Identity, topic: str, now: float) -> Members:
    """A value listing only ``identity``, signed by it: what a member publishes."""
    entry = sign_entry(identity, topic, now)
    return Members(topic, {entry.peer_id: entry})


def verify_entry(topic: str, entry: MemberEntry) -> bool:
    """Whether ``entry`` is signed by its own key (answers cached, the cache bounded)."""
    key = (entry.public_key, topic, entry.timestamp, entry.signature)
    known = _verified.get(key)
    if known is not None:
        _verified.move_to_end(key)
        return known
    ok = verify(entry.public_key, signed_message(topic, entry.peer_id, entry.timestamp),
                entry.signature)
    _verified[key] = ok
    while len(_verified) > _VERIFIED_CACHE:
        _verified.popitem(last=False)
    return ok


def is_topic_value(value: object) -> bool:
    return isinstance(value, bytes) and value.startswith(MAGIC)


def encode(members: Members) -> bytes:
    name = members.topic.encode()
    if len(name) > MAX_TOPIC_BYTES:
        raise TopicError(f"topic name is {len(name)} bytes, over {MAX_TOPIC_BYTES}")
    if len(members.entries) > MAX_MEMBERS:
        raise TopicError(f"{len(members.entries)} members, over {MAX_MEMBERS}")
    ordered = sorted(members.entries.values(), key=lambda e: (-e.timestamp, e.peer_id))
    return b"".join([MAGIC, bytes([len(name)]), name,
                     *(e.public_key + struct.pack(">Q", e.timestamp) + e.signature
                       for e in ordered)])


def decode(value: object) -> Members:
    """Parse a topic value (signatures not checked here: see ``verify_entry``)."""
    if not is_topic_value(value):
        raise TopicError("not a topic value")
    assert isinstance(value, bytes)
    if len(value) > MAX_VALUE_BYTES:
        raise TopicError(f"topic value is {len(value)} bytes, over {MAX_VALUE_BYTES}")
    at = len(MAGIC)
    if len(value) <= at:
        raise TopicError("topic value without a topic")
    size = value[at]
    name = value[at + 1:at + 1 + size]
    if len(name) != size:
        raise TopicError("topic value cut short")
    try:
        topic = name.decode()
    except UnicodeDecodeError as exc:
        raise TopicError("topic name is not UTF-8") from exc
    body = value[at + 1 + size:]
    if len(body) % ENTRY_BYTES:
        raise TopicError("topic value holds a partial entry")
    entries: dict[str, MemberEntry] = {}
    for offset in range(0, len(body), ENTRY_BYTES):
        raw = body[offset:offset + ENTRY_BYTES]
        entry = MemberEntry(raw[:32], struct.unpack(">Q", raw[32:40])[0], raw[40:])
        held = entries.get(entry.peer_id)
        if held is None or entry.timestamp > held.timestamp:
            entries[entry.peer_id] = entry
    return Members(topic, entries)


def acceptable(topic: str, entry: MemberEntry, *, now: float, ttl: float) -> bool:
    """Signed by its own key, not dated ahead of ``now`` by more than the skew, nor stale."""
    if entry.timestamp > now + MAX_SKEW or entry.timestamp < now - ttl:
        return False
    return verify_entry(topic, entry)


def gather(values: Iterable[object], *, topic: str, now: float, ttl: float,
           limit: int = MAX_GATHERED) -> Members:
    """What a reader makes of the values several holders answered: every acceptable entry of
    ``topic``, the newest per member, at most ``limit`` (the freshest). Junk values, other
    topics and bad entries are left out."""
    merged: dict[str, MemberEntry] = {}
    for value in values:
        try:
            found = decode(value)
        except TopicError:
            continue
        if found.topic != topic:
            continue
        for pid, entry in found.entries.items():
            held = merged.get(pid)
            if held is not None and held.timestamp >= entry.timestamp:
                continue
            if acceptable(topic, entry, now=now, ttl=ttl):
                merged[pid] = entry
    if len(merged) > limit:
        keep = sorted(merged.values(), key=lambda e: (-e.timestamp, e.peer_id))[:limit]
        merged = {e.peer_id: e for e in keep}
    return Members(topic, merged)


@dataclass
class _Held:
    entry: MemberEntry
    received_at: float
    source: str | None


@dataclass(frozen=True)
class Offer:
    """What a holder did with an offered value: entries newly held, refreshed, refused."""

    added: int = 0
    refreshed: int = 0
    refused: int = 0
    unchanged: int = 0

    @property
    def kept(self) -> bool:
        """Every acceptable entry is now held (and there was one)."""
        return self.refused == 0 and (self.added + self.refreshed + self.unchanged) > 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.refreshed)


class MemberTable:
    """The members a storing node holds under one topic key (see the module docstring).

    ``source`` None is this node itself: never capped, never pushed out.
    """

    def __init__(self, topic: str, *, ttl: float, capacity: int = MAX_MEMBERS,
                 per_source: int = MAX_PER_SOURCE) -> None:
        self.topic = topic
        self.ttl = ttl
        self.capacity = min(capacity, MAX_MEMBERS)
        self.per_source = per_source
        self._held: dict[str, _Held] = {}
        self._shares: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._held)

    def members(self) -> Members:
        return Members(self.topic, {pid: h.entry for pid, h in self._held.items()})

    def value(self) -> bytes:
        return encode(self.members())

    def share(self, source: str) -> int:
        return self._shares[source]

    def offer(self, members: Members, *, source: str | None, now: float) -> Offer:
        """Take what is acceptable of ``members`` (one decoded value from ``source``)."""
        if members.topic != self.topic:
            raise TopicError("cannot merge the members of different topics")
        self.expire(now)
        added = refreshed = refused = unchanged = 0
        # New members are signature-checked only while the source may still bring one, so a
        # value of forged entries costs at most ``per_source`` checks.
        attempts = self.per_source
        for pid, entry in sorted(members.entries.items(), key=lambda kv: -kv[1].timestamp):
            held = self._held.get(pid)
            if held is not None and entry.timestamp <= held.entry.timestamp:
                unchanged += 1
                continue
            if entry.timestamp > now + MAX_SKEW or entry.timestamp < now - self.ttl:
                continue  # dated in the future or stale: dropped, not counted as held
            if held is None:
                if source is not None and (attempts <= 0 or self.share(source) >= self.per_source):
                    refused += 1
                    continue
                attempts -= 1
            if not verify_entry(self.topic, entry):
                continue
            if held is not None:
                held.entry, held.received_at = entry, now
                if source is not None and held.source not in (None, source) \
                        and self.share(source) < self.per_source:
                    self._attribute(held, source)
                refreshed += 1
            elif self._make_room(source):
                held = _Held(entry, now, None)
                self._held[pid] = held
                self._attribute(held, source)
                added += 1
            else:
                refused += 1
        return Offer(added, refreshed, refused, unchanged)

    def expire(self, now: float) -> list[str]:
        """Drop members not refreshed within ``ttl`` of our clock; returns their peer ids."""
        floor = now - self.ttl
        gone = [pid for pid, h in self._held.items() if not h.received_at >= floor]
        for pid in gone:
            self._drop(pid)
        return gone

    def _attribute(self, held: _Held, source: str | None) -> None:
        if held.source is not None:
            self._shares[held.source] -= 1
            if self._shares[held.source] <= 0:
                del self._shares[held.source]
        held.source = source
        if source is not None:
            self._shares[source] += 1

    def _drop(self, pid: str) -> None:
        held = self._held.pop(pid)
        self._attribute(held, None)

    def _make_room(self, source: str | None) -> bool:
        """Room for one more member from ``source``: free, or taken from the source with the
        most members when it holds at least two more than ``source`` would."""
        if len(self._held) < self.capacity:
            return True
        if not self._shares:
            return False
        biggest, count = max(self._shares.items(), key=lambda kv: (kv[1], kv[0]))
        mine = self._shares[source] if source is not None else 0
        if biggest == source or count < mine + 2:
            return False
        victim = min((pid for pid, h in self._held.items() if h.source == biggest),
                     key=lambda pid: (self._held[pid].received_at, pid))
        self._drop(victim)
        return True
