"""Topic membership as a grow-only set with freshness: pure merge logic, no I/O.

A topic value maps each member's peer id to the last time (publisher's clock, whole seconds) it
announced itself. Merging two values is a set union that keeps the newer time of a member; members
not heard from within ``ttl`` drop out, and at most ``MAX_MEMBERS`` (the freshest) are kept so a
value always fits one kademlia message (8 KB). Entries are unsigned: a listed member counts only
once its own signed record has been checked, so a forged entry costs a lookup, nothing more.

Wire form: ``MAGIC + canonical JSON {"topic": name, "members": {peer_id: seconds}}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

MAGIC = b"RNTOPIC1"
MAX_MEMBERS = 100
MAX_VALUE_BYTES = 7000
# How far ahead of our clock a member's time may be before it is clamped (clock skew).
MAX_SKEW = 60

_PEER_ID = re.compile(r"^[0-9a-f]{40}$")


class TopicError(ValueError):
    """A value that is not a topic membership value."""


@dataclass(frozen=True)
class Members:
    topic: str
    members: dict[str, int] = field(default_factory=dict)

    def peer_ids(self) -> set[str]:
        return set(self.members)

    def with_member(self, peer_id: str, now: float) -> Members:
        return merge(self, Members(self.topic, {peer_id: int(now)}), now=now)


def is_topic_value(value: object) -> bool:
    return isinstance(value, bytes) and value.startswith(MAGIC)


def encode(members: Members) -> bytes:
    doc = {"topic": members.topic, "members": members.members}
    value = MAGIC + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    if len(value) > MAX_VALUE_BYTES:  # only reachable with an oversized topic name
        raise TopicError(f"topic value is {len(value)} bytes, over {MAX_VALUE_BYTES}")
    return value


def decode(value: object) -> Members:
    """Parse a topic value, dropping entries that are not well-formed peer ids and times."""
    if not is_topic_value(value):
        raise TopicError("not a topic value")
    assert isinstance(value, bytes)
    if len(value) > MAX_VALUE_BYTES:
        raise TopicError("topic value too large")
    try:
        doc = json.loads(value[len(MAGIC):])
        topic = doc["topic"]
        raw = doc["members"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TopicError(f"malformed topic value: {type(exc).__name__}") from exc
    if not isinstance(topic, str) or not isinstance(raw, dict):
        raise TopicError("malformed topic value")
    members = {
        pid: ts for pid, ts in raw.items()
        if isinstance(pid, str) and _PEER_ID.match(pid)
        and isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0
    }
    return Members(topic, members)


def merge(*values: Members, now: float, ttl: float | None = None) -> Members:
    """The union of ``values`` (all of one topic), newest time per member, stale ones dropped."""
    if not values:
        raise TopicError("nothing to merge")
    topic = values[0].topic
    if any(v.topic != topic for v in values):
        raise TopicError("cannot merge the members of different topics")
    ceiling = int(now) + MAX_SKEW
    merged: dict[str, int] = {}
    for value in values:
        for pid, ts in value.members.items():
            ts = min(ts, ceiling)
            if ts > merged.get(pid, -1):
                merged[pid] = ts
    if ttl is not None:
        floor = now - ttl
        merged = {pid: ts for pid, ts in merged.items() if ts >= floor}
    if len(merged) > MAX_MEMBERS:
        freshest = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_MEMBERS]
        merged = dict(freshest)
    return Members(topic, merged)


def merge_values(old: object, new: object, *, now: float, ttl: float | None = None) -> bytes:
    """Merge two stored values; ``old`` may be absent or junk (then ``new`` wins alone)."""
    incoming = decode(new)
    try:
        current = decode(old) if old is not None else None
    except TopicError:
        current = None
    if current is None or current.topic != incoming.topic:
        return encode(merge(incoming, now=now, ttl=ttl))
    return encode(merge(current, incoming, now=now, ttl=ttl))
