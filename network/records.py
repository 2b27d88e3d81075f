"""The signed peer record a node publishes in the DHT under its peer id.

Pure: bytes in, records and errors out. The wire form is ``MAGIC + signature(64) + body`` where
``body`` is canonical JSON (sorted keys, no spaces) and the signature is Ed25519 over ``body``
by the key the body carries. A record is accepted only when it fits ``MAX_RECORD_BYTES``
(kademlia caps a message at 8 KB, key and framing included), every field has its type and range
(``_from_body``: finite timestamps no further ahead of our clock than ``MAX_CLOCK_SKEW``,
sequences below 2**63, ports 1..65535, bounded counts and strings), the signature verifies, the
peer id is the SHA-1 of that key, and its sequence is newer than any already seen for that peer
(``RecordBook``, itself bounded).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from network.identity import Identity, peer_id_for, verify

MAGIC = b"RNREC1"
SIGNATURE_BYTES = 64
MAX_RECORD_BYTES = 4096
VERSION = 1
# How far ahead of our clock a record's timestamp may be (the two clocks' skew).
MAX_CLOCK_SKEW = 300.0
MAX_SEQ = 2**63 - 1
MAX_COUNT = 1_000_000
MAX_ADDRESSES = 8
MAX_HOST_CHARS = 253
MAX_TOPIC_CHARS = 128
MAX_NAT_TYPE_CHARS = 32
MAX_CAPABILITY_KEYS = 32
MAX_CAPABILITY_KEY_CHARS = 64
MAX_CAPABILITY_TEXT = 128
MAX_CAPABILITY_NUMBER = 2**53
MAX_SERVICE_DIGESTS = 16
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The peers whose newest sequence a book remembers.
DEFAULT_BOOK_CAPACITY = 4096

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class RecordError(ValueError):
    """A value that is not an acceptable peer record."""


class MalformedRecord(RecordError):
    pass


class RecordTooLarge(RecordError):
    pass


class BadTimestamp(MalformedRecord):
    """A timestamp that is not a finite, non-negative number, or is too far in the future."""


class BadSignature(RecordError):
    pass


class PeerIdMismatch(RecordError):
    pass


class StaleRecord(RecordError):
    pass


class BookFull(RecordError):
    """A record of a peer not yet known while the book holds as many fresh peers as it may."""


@dataclass(frozen=True)
class NatFacts:
    behind_nat: bool = False
    nat_type: str = ""
    using_relay: bool = False
    connected_relay_id: str = ""


@dataclass(frozen=True)
class PeerRecord:
    """What a peer says about itself. ``seq`` grows with every publication; ``timestamp`` is the
    publisher's wall clock (seconds) at signing time; ``online`` is False in the record a node
    publishes as it stops."""

    peer_id: str
    public_key: str
    seq: int
    timestamp: float
    dht_node_id: str = ""
    quic_addresses: tuple[tuple[str, int], ...] = ()
    api_port: int = 0
    is_relay: bool = False
    is_store: bool = True
    nat: NatFacts = field(default_factory=NatFacts)
    capabilities: dict[str, Any] | None = None
    files_count: int = 0
    apps_count: int = 0
    # Content digests of services it offers to anyone (the same on every peer offering the same
    # thing): at most MAX_SERVICE_DIGESTS, fewer when the record would not fit.
    service_digests: tuple[str, ...] = ()
    topic: str = ""
    online: bool = True

    def body(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["quic_addresses"] = [[h, p] for h, p in self.quic_addresses]
        doc["v"] = VERSION
        return doc


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def encode_record(record: PeerRecord, identity: Identity) -> bytes:
    """Sign ``record`` with ``identity`` (whose key must be the record's) and frame it."""
    if record.public_key != identity.public_key_hex or record.peer_id != identity.peer_id:
        raise RecordError("a record can only be signed by its own peer's key")
    try:
        body = canonical(record.body())
    except ValueError as exc:  # NaN or infinity in a field
        raise MalformedRecord(f"peer record cannot be encoded: {exc}") from exc
    value = MAGIC + identity.sign(body) + body
    if len(value) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"peer record is {len(value)} bytes, over {MAX_RECORD_BYTES}")
    return value


def is_record_value(value: object) -> bool:
    return isinstance(value, bytes) and value.startswith(MAGIC)


def parse_record(value: object) -> PeerRecord:
    """The record ``value`` holds, every field checked, its signature not (``decode_record``)."""
    if not isinstance(value, bytes) or not value.startswith(MAGIC):
        raise MalformedRecord("not a peer record")
    if len(value) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"peer record is {len(value)} bytes, over {MAX_RECORD_BYTES}")
    try:
        doc = json.loads(value[len(MAGIC) + SIGNATURE_BYTES:], parse_constant=_refuse_constant)
        return _from_body(doc)
    except RecordError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise MalformedRecord(f"malformed peer record: {type(exc).__name__}: {exc}") from exc


def decode_record(value: object, *, expected_peer_id: str | None = None,
                  now: float | None = None) -> PeerRecord:
    """Parse and verify a record; raise a ``RecordError`` saying why it is not acceptable.

    With ``now``, a timestamp more than ``MAX_CLOCK_SKEW`` ahead of it is refused too.
    """
    record = parse_record(value)
    assert isinstance(value, bytes)
    signature = value[len(MAGIC):len(MAGIC) + SIGNATURE_BYTES]
    body = value[len(MAGIC) + SIGNATURE_BYTES:]
    public_key = bytes.fromhex(record.public_key)
    if now is not None and record.timestamp > now + MAX_CLOCK_SKEW:
        raise BadTimestamp(f"record of peer {record.peer_id[:16]} is dated "
                           f"{record.timestamp - now:.0f} s ahead of our clock")
    if len(public_key) != 32 or not verify(public_key, body, signature):
        raise BadSignature(f"bad signature on the record of peer {record.peer_id[:16]}")
    if peer_id_for(public_key) != record.peer_id:
        raise PeerIdMismatch(f"record peer id {record.peer_id[:16]} does not match its key")
    if expected_peer_id is not None and record.peer_id != expected_peer_id:
        raise PeerIdMismatch(f"record of peer {record.peer_id[:16]} stored under another "
                             f"peer's key {expected_peer_id[:16]}")
    return record


def _refuse_constant(name: str) -> Any:
    raise BadTimestamp(f"non-finite number {name} in a peer record")


def _from_body(doc: Any) -> PeerRecord:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ValueError("unknown record version")
    nat = doc.get("nat", {})
    if not isinstance(nat, dict):
        raise TypeError("nat is not an object")
    addresses = doc.get("quic_addresses", [])
    if not isinstance(addresses, list) or len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"quic_addresses is not a list of at most {MAX_ADDRESSES}")
    record = PeerRecord(
        peer_id=_text(doc["peer_id"], 40, _HEX40),
        public_key=_text(doc["public_key"], 64, _HEX64),
        seq=_int(doc["seq"], 0, MAX_SEQ),
        timestamp=_timestamp(doc["timestamp"]),
        dht_node_id=_text(doc.get("dht_node_id", ""), 40, _HEX40, empty=True),
        quic_addresses=tuple(_address(a) for a in addresses),
        api_port=_int(doc.get("api_port", 0), 0, 65535),
        is_relay=_bool(doc.get("is_relay", False)),
        is_store=_bool(doc.get("is_store", True)),
        nat=NatFacts(
            behind_nat=_bool(nat.get("behind_nat", False)),
            nat_type=_text(nat.get("nat_type", ""), MAX_NAT_TYPE_CHARS),
            using_relay=_bool(nat.get("using_relay", False)),
            connected_relay_id=_text(nat.get("connected_relay_id", ""), 40, _HEX40,
                                     empty=True),
        ),
        capabilities=_capabilities(doc.get("capabilities")),
        files_count=_int(doc.get("files_count", 0), 0, MAX_COUNT),
        apps_count=_int(doc.get("apps_count", 0), 0, MAX_COUNT),
        service_digests=_digests(doc.get("service_digests", [])),
        topic=_text(doc.get("topic", ""), MAX_TOPIC_CHARS),
        online=_bool(doc.get("online", True)),
    )
    return record


def _digests(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_SERVICE_DIGESTS:
        raise ValueError(f"service_digests is not a list of at most {MAX_SERVICE_DIGESTS}")
    return tuple(_text(d, 71, _DIGEST) for d in value)


def _text(value: Any, limit: int, pattern: re.Pattern[str] | None = None, *,
          empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    if len(value) > limit:
        raise ValueError(f"a string over {limit} characters")
    if pattern is not None and not (empty and value == "") and not pattern.fullmatch(value):
        raise ValueError("a string that is not the expected hex id")
    return value


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    if not low <= value <= high:
        raise ValueError(f"an integer outside {low}..{high}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _timestamp(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadTimestamp("record timestamp is not a number")
    ts = float(value)
    if not math.isfinite(ts) or ts < 0:
        raise BadTimestamp(f"record timestamp {ts} is not a finite, non-negative time")
    return ts


def _address(value: Any) -> tuple[str, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("an address is not [host, port]")
    host = _text(value[0], MAX_HOST_CHARS)
    if not host:
        raise ValueError("an address without a host")
    return host, _int(value[1], 1, 65535)


def _capabilities(value: Any) -> dict[str, Any] | None:
    """A capability summary: a flat object of short strings, booleans and bounded numbers."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_CAPABILITY_KEYS:
        raise ValueError(f"capabilities is not an object of at most {MAX_CAPABILITY_KEYS} keys")
    for key, item in value.items():
        _text(key, MAX_CAPABILITY_KEY_CHARS)
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            _text(item, MAX_CAPABILITY_TEXT)
        elif isinstance(item, int | float):
            if not math.isfinite(item) or not 0 <= item <= MAX_CAPABILITY_NUMBER:
                raise ValueError(f"capability {key} is out of range")
        else:
            raise TypeError(f"capability {key} is not a string, boolean or number")
    return value


def next_seq(last: int, now: float) -> int:
    """A sequence that grows across restarts: the clock in milliseconds, or last + 1."""
    return max(last + 1, int(now * 1000))


@dataclass(frozen=True)
class _Seen:
    seq: int
    value: bytes
    received_at: float


class RecordBook:
    """The newest sequence seen per peer; refuses records that do not move it forward.

    The same sequence with the same bytes is a harmless repeat (republication by another node)
    and is accepted; the same sequence with different content is refused. At most ``capacity``
    peers are remembered: an entry not moved forward for ``ttl`` seconds (our clock, from when
    it was accepted) expires, and while the book is full of fresh entries a peer not yet known
    is refused (``BookFull``) rather than pushing out one that is.
    """

    def __init__(self, *, capacity: int = DEFAULT_BOOK_CAPACITY, ttl: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock
        self._seen: dict[str, _Seen] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, value: object, *, expected_peer_id: str | None = None) -> PeerRecord:
        """Decode ``value`` and check it against what was seen, without remembering it."""
        record = decode_record(value, expected_peer_id=expected_peer_id, now=self.clock())
        seen = self._seen.get(record.peer_id)
        if seen is not None and (record.seq < seen.seq
                                 or (record.seq == seen.seq and seen.value != value)):
            raise StaleRecord(f"record of peer {record.peer_id[:16]} has sequence "
                                  f"{record.seq}, older than {seen.seq} already seen")
        return record

    def accept(self, value: object, *, expected_peer_id: str | None = None,
               make_room: bool = False) -> PeerRecord:
        """Check ``value`` and remember its sequence. ``make_room``: when the book is full of
        fresh entries, push out the least recently moved one instead of refusing."""
        record = self.check(value, expected_peer_id=expected_peer_id)
        assert isinstance(value, bytes)
        seen = self._seen.get(record.peer_id)
        if seen is not None and seen.seq == record.seq:
            return record  # a repeat: it does not make the entry any fresher
        if seen is None and len(self._seen) >= self.capacity:
            self.expire()
            if len(self._seen) >= self.capacity and make_room:
                oldest = min(self._seen, key=lambda pid: self._seen[pid].received_at)
                del self._seen[oldest]
            if len(self._seen) >= self.capacity:
                raise BookFull(f"record of peer {record.peer_id[:16]} refused: already "
                               f"{self.capacity} fresh peers known")
        self._seen[record.peer_id] = _Seen(record.seq, value, self.clock())
        return record

    def latest_seq(self, peer_id: str) -> int | None:
        seen = self._seen.get(peer_id)
        return seen.seq if seen else None

    def forget(self, peer_id: str) -> None:
        self._seen.pop(peer_id, None)

    def expire(self) -> list[str]:
        """Drop the entries not moved forward within ``ttl``; returns their peer ids."""
        if self.ttl is None:
            return []
        floor = self.clock() - self.ttl
        gone = [pid for pid, seen in self._seen.items() if not seen.received_at >= floor]
        for pid in gone:
            del self._seen[pid]
        return gone


def capabilities_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The full capabilities shape filled from a DHT summary: what the summary lacks (kernel,
    CPU model, GPU names and UUIDs, versions, free memory and disk) stays empty or zero. A value
    of the wrong kind reads as empty or zero."""
    gpu_count = min(_count(summary.get("gpu_count")), 64)
    gpu_memory = _count(summary.get("gpu_memory_mb"))
    per_gpu = gpu_memory // gpu_count if gpu_count else 0
    return {
        "platform": _label(summary.get("platform")),
        "architecture": _label(summary.get("architecture")),
        "kernel_version": "",
        "cpu_model": "",
        "cpu_cores": _count(summary.get("cpu_cores")),
        "cpu_threads": _count(summary.get("cpu_threads")),
        "total_memory_mb": _count(summary.get("total_memory_mb")),
        "available_memory_mb": 0,
        "total_disk_mb": _count(summary.get("total_disk_mb")),
        "available_disk_mb": 0,
        "has_docker": summary.get("has_docker") is True,
        "docker_version": "",
        "has_python": summary.get("has_python", True) is True,
        "python_version": "",
        "gpus": [
            {"index": i, "name": "", "vendor": _label(summary.get("gpu_vendor")),
             "memory_mb": per_gpu, "uuid": "", "driver_version": ""}
            for i in range(gpu_count)
        ],
    }


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if not math.isfinite(value) or value < 0:
        return 0
    return int(min(value, MAX_CAPABILITY_NUMBER))


def _label(value: Any) -> str:
    return value[:MAX_CAPABILITY_TEXT] if isinstance(value, str) else ""
