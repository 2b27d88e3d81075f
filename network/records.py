"""The signed peer record a node publishes in the DHT under its peer id.

Pure: bytes in, records and errors out. The wire form is ``MAGIC + signature(64) + body`` where
``body`` is canonical JSON (sorted keys, no spaces) and the signature is Ed25519 over ``body``
by the key the body carries. A record is accepted only when the signature verifies, the peer id
is the SHA-1 of that key, it fits ``MAX_RECORD_BYTES`` (kademlia caps a message at 8 KB, key and
framing included) and its sequence is newer than any already seen for that peer (``RecordBook``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from network.identity import Identity, peer_id_for, verify

MAGIC = b"RNREC1"
SIGNATURE_BYTES = 64
MAX_RECORD_BYTES = 4096
VERSION = 1


class RecordError(ValueError):
    """A value that is not an acceptable peer record."""


class MalformedRecord(RecordError):
    pass


class RecordTooLarge(RecordError):
    pass


class BadSignature(RecordError):
    pass


class PeerIdMismatch(RecordError):
    pass


class StaleRecord(RecordError):
    pass


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
    topic: str = ""
    online: bool = True

    def body(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["quic_addresses"] = [[h, p] for h, p in self.quic_addresses]
        doc["v"] = VERSION
        return doc


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode_record(record: PeerRecord, identity: Identity) -> bytes:
    """Sign ``record`` with ``identity`` (whose key must be the record's) and frame it."""
    if record.public_key != identity.public_key_hex or record.peer_id != identity.peer_id:
        raise RecordError("a record can only be signed by its own peer's key")
    body = canonical(record.body())
    value = MAGIC + identity.sign(body) + body
    if len(value) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"peer record is {len(value)} bytes, over {MAX_RECORD_BYTES}")
    return value


def is_record_value(value: object) -> bool:
    return isinstance(value, bytes) and value.startswith(MAGIC)


def decode_record(value: object, *, expected_peer_id: str | None = None) -> PeerRecord:
    """Parse and verify a record; raise a ``RecordError`` saying why it is not acceptable."""
    if not isinstance(value, bytes) or not value.startswith(MAGIC):
        raise MalformedRecord("not a peer record")
    if len(value) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"peer record is {len(value)} bytes, over {MAX_RECORD_BYTES}")
    signature = value[len(MAGIC):len(MAGIC) + SIGNATURE_BYTES]
    body = value[len(MAGIC) + SIGNATURE_BYTES:]
    try:
        doc = json.loads(body)
        record = _from_body(doc)
        public_key = bytes.fromhex(record.public_key)
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedRecord(f"malformed peer record: {type(exc).__name__}") from exc
    if len(public_key) != 32 or not verify(public_key, body, signature):
        raise BadSignature(f"bad signature on the record of peer {record.peer_id[:16]}")
    if peer_id_for(public_key) != record.peer_id:
        raise PeerIdMismatch(f"record peer id {record.peer_id[:16]} does not match its key")
    if expected_peer_id is not None and record.peer_id != expected_peer_id:
        raise PeerIdMismatch(f"record of peer {record.peer_id[:16]} stored under another "
                             f"peer's key {expected_peer_id[:16]}")
    return record


def _from_body(doc: Any) -> PeerRecord:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ValueError("unknown record version")
    nat = doc.get("nat") or {}
    caps = doc.get("capabilities")
    record = PeerRecord(
        peer_id=_str(doc["peer_id"]),
        public_key=_str(doc["public_key"]),
        seq=_int(doc["seq"]),
        timestamp=float(doc["timestamp"]),
        dht_node_id=_str(doc.get("dht_node_id", "")),
        quic_addresses=tuple((_str(h), _int(p)) for h, p in doc.get("quic_addresses", [])),
        api_port=_int(doc.get("api_port", 0)),
        is_relay=bool(doc.get("is_relay", False)),
        is_store=bool(doc.get("is_store", True)),
        nat=NatFacts(
            behind_nat=bool(nat.get("behind_nat", False)),
            nat_type=_str(nat.get("nat_type", "")),
            using_relay=bool(nat.get("using_relay", False)),
            connected_relay_id=_str(nat.get("connected_relay_id", "")),
        ),
        capabilities=caps if isinstance(caps, dict) else None,
        files_count=_int(doc.get("files_count", 0)),
        apps_count=_int(doc.get("apps_count", 0)),
        topic=_str(doc.get("topic", "")),
        online=bool(doc.get("online", True)),
    )
    if len(record.peer_id) != 40:
        raise ValueError("peer id is not 40 hex digits")
    return record


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def next_seq(last: int, now: float) -> int:
    """A sequence that grows across restarts: the clock in milliseconds, or last + 1."""
    return max(last + 1, int(now * 1000))


class RecordBook:
    """The newest sequence seen per peer; refuses records that do not move it forward.

    The same sequence with the same bytes is a harmless repeat (republication by another node)
    and is accepted; the same sequence with different content is refused.
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, bytes]] = {}

    def check(self, value: object, *, expected_peer_id: str | None = None) -> PeerRecord:
        """Decode ``value`` and check it against what was seen, without remembering it."""
        record = decode_record(value, expected_peer_id=expected_peer_id)
        seen = self._seen.get(record.peer_id)
        if seen is not None:
            seq, raw = seen
            if record.seq < seq or (record.seq == seq and raw != value):
                raise StaleRecord(f"record of peer {record.peer_id[:16]} has sequence "
                                  f"{record.seq}, older than {seq} already seen")
        return record

    def accept(self, value: object, *, expected_peer_id: str | None = None) -> PeerRecord:
        record = self.check(value, expected_peer_id=expected_peer_id)
        assert isinstance(value, bytes)
        self._seen[record.peer_id] = (record.seq, value)
        return record

    def latest_seq(self, peer_id: str) -> int | None:
        seen = self._seen.get(peer_id)
        return seen[0] if seen else None


def capabilities_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The full capabilities shape filled from a DHT summary: what the summary lacks (kernel,
    CPU model, GPU names and UUIDs, versions, free memory and disk) stays empty or zero."""
    gpu_count = int(summary.get("gpu_count", 0) or 0)
    gpu_memory = int(summary.get("gpu_memory_mb", 0) or 0)
    per_gpu = gpu_memory // gpu_count if gpu_count else 0
    return {
        "platform": str(summary.get("platform", "")),
        "architecture": str(summary.get("architecture", "")),
        "kernel_version": "",
        "cpu_model": "",
        "cpu_cores": int(summary.get("cpu_cores", 0) or 0),
        "cpu_threads": int(summary.get("cpu_threads", 0) or 0),
        "total_memory_mb": int(summary.get("total_memory_mb", 0) or 0),
        "available_memory_mb": 0,
        "total_disk_mb": int(summary.get("total_disk_mb", 0) or 0),
        "available_disk_mb": 0,
        "has_docker": bool(summary.get("has_docker", False)),
        "docker_version": "",
        "has_python": bool(summary.get("has_python", True)),
        "python_version": "",
        "gpus": [
            {"index": i, "name": "", "vendor": str(summary.get("gpu_vendor", "")),
             "memory_mb": per_gpu, "uuid": "", "driver_version": ""}
            for i in range(min(gpu_count, 64))
        ],
    }
