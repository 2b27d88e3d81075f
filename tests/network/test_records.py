"""Signed peer records: encoding, verification, field ranges, sequence order, size cap, the
bounded book. No sockets."""

from __future__ import annotations

import json

import pytest

from network.identity import Identity
from network.records import (
    MAGIC,
    MAX_CLOCK_SKEW,
    MAX_RECORD_BYTES,
    MAX_SERVICE_DIGESTS,
    BadSignature,
    BadTimestamp,
    BookFull,
    MalformedRecord,
    NatFacts,
    PeerIdMismatch,
    PeerRecord,
    RecordBook,
    RecordError,
    RecordTooLarge,
    StaleRecord,
    canonical,
    capabilities_from_summary,
    decode_record,
    encode_record,
    next_seq,
)


def make_record(identity: Identity, *, seq: int = 1, **changes: object) -> PeerRecord:
    fields: dict[str, object] = {
        "peer_id": identity.peer_id,
        "public_key": identity.public_key_hex,
        "seq": seq,
        "timestamp": 1_700_000_000.5,
        "dht_node_id": "ab" * 20,
        "quic_addresses": (("127.0.0.1", 30070),),
        "api_port": 30069,
        "is_relay": True,
        "nat": NatFacts(behind_nat=True, nat_type="restricted", using_relay=True,
                        connected_relay_id="cd" * 20),
        "capabilities": {"platform": "linux", "cpu_cores": 4, "gpu_count": 0},
        "files_count": 2,
        "apps_count": 3,
        "topic": "remote-network-mesh",
    }
    fields.update(changes)
    return PeerRecord(**fields)  # type: ignore[arg-type]


def split(value: bytes) -> tuple[bytes, bytes]:
    return value[len(MAGIC):len(MAGIC) + 64], value[len(MAGIC) + 64:]


def test_round_trip_keeps_every_field() -> None:
    me = Identity.generate()
    record = make_record(me)
    decoded = decode_record(encode_record(record, me), expected_peer_id=me.peer_id)
    assert decoded == record


def test_body_is_canonical_json() -> None:
    me = Identity.generate()
    _sig, body = split(encode_record(make_record(me), me))
    doc = json.loads(body)
    assert body == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["peer_id"] == me.peer_id and doc["v"] == 1


def test_forged_signature_is_refused() -> None:
    me, forger = Identity.generate(), Identity.generate()
    value = encode_record(make_record(me), me)
    _sig, body = split(value)
    forged = MAGIC + forger.sign(body) + body
    with pytest.raises(BadSignature):
        decode_record(forged)


def test_tampered_body_is_refused() -> None:
    me = Identity.generate()
    value = encode_record(make_record(me, files_count=2), me)
    tampered = value.replace(b'"files_count":2', b'"files_count":9')
    assert tampered != value
    with pytest.raises(BadSignature):
        decode_record(tampered)


def test_peer_id_must_match_the_key() -> None:
    me, other = Identity.generate(), Identity.generate()
    # A body claiming another peer's id, validly signed by our own key.
    record = make_record(me, peer_id=other.peer_id)
    body = json.dumps(record.body(), sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(PeerIdMismatch):
        decode_record(MAGIC + me.sign(body) + body)


def test_record_under_another_peers_key_is_refused() -> None:
    me, other = Identity.generate(), Identity.generate()
    value = encode_record(make_record(me), me)
    with pytest.raises(PeerIdMismatch):
        decode_record(value, expected_peer_id=other.peer_id)


def test_cannot_sign_another_peers_record() -> None:
    me, other = Identity.generate(), Identity.generate()
    with pytest.raises(RecordError):
        encode_record(make_record(other), me)


@pytest.mark.parametrize("value", [b"", b"junk", MAGIC + b"x" * 64 + b"{not json",
                                   MAGIC + b"x" * 64 + b'{"v":2}', "a string", 42])
def test_malformed_values_are_refused(value: object) -> None:
    with pytest.raises(MalformedRecord):
        decode_record(value)


def test_oversize_record_is_refused_both_ways() -> None:
    me = Identity.generate()
    big = make_record(me, capabilities={"pad": "x" * MAX_RECORD_BYTES})
    with pytest.raises(RecordTooLarge):
        encode_record(big, me)
    body = json.dumps(big.body(), sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(RecordTooLarge):
        decode_record(MAGIC + me.sign(body) + body)


def test_a_typical_record_is_well_under_the_cap() -> None:
    me = Identity.generate()
    assert len(encode_record(make_record(me), me)) < MAX_RECORD_BYTES // 2


def test_record_book_refuses_older_sequence() -> None:
    me = Identity.generate()
    book = RecordBook()
    newer = encode_record(make_record(me, seq=5), me)
    older = encode_record(make_record(me, seq=4), me)
    assert book.accept(newer).seq == 5
    with pytest.raises(StaleRecord):
        book.accept(older)
    assert book.latest_seq(me.peer_id) == 5


def test_record_book_accepts_repeats_but_not_a_rewrite_of_the_same_sequence() -> None:
    me = Identity.generate()
    book = RecordBook()
    value = encode_record(make_record(me, seq=7), me)
    book.accept(value)
    assert book.accept(value).seq == 7
    rewrite = encode_record(make_record(me, seq=7, apps_count=99), me)
    with pytest.raises(StaleRecord):
        book.accept(rewrite)
    assert book.accept(encode_record(make_record(me, seq=8), me)).seq == 8


def test_record_book_check_does_not_remember() -> None:
    me = Identity.generate()
    book = RecordBook()
    book.check(encode_record(make_record(me, seq=9), me))
    assert book.latest_seq(me.peer_id) is None
    assert book.accept(encode_record(make_record(me, seq=3), me)).seq == 3


def test_next_seq_grows_across_restarts_and_same_millisecond() -> None:
    first = next_seq(0, 1000.0)
    assert first == 1_000_000
    assert next_seq(first, 1000.0) == first + 1
    # A restarted node (last = 0) still moves past what it published before.
    assert next_seq(0, 1001.0) > first


def test_capabilities_from_summary_has_the_full_shape() -> None:
    caps = capabilities_from_summary({"platform": "linux", "architecture": "amd64",
                                      "cpu_cores": 8, "total_memory_mb": 16000,
                                      "has_docker": True, "gpu_count": 2,
                                      "gpu_memory_mb": 48000})
    assert set(caps) == {"platform", "architecture", "kernel_version", "cpu_model", "cpu_cores",
                         "cpu_threads", "total_memory_mb", "available_memory_mb",
                         "total_disk_mb", "available_disk_mb", "has_docker", "docker_version",
                         "has_python", "python_version", "gpus"}
    assert caps["cpu_cores"] == 8 and caps["has_docker"] is True
    assert [g["memory_mb"] for g in caps["gpus"]] == [24000, 24000]
    assert caps["kernel_version"] == "" and caps["gpus"][0]["uuid"] == ""


# -- a stranger's lies: every field has its type and range --------------------------------------
NOW = 1_700_000_000.0


def signed_doc(identity: Identity, **changes: object) -> bytes:
    """A record body with ``changes`` written as any JSON encoder would, validly signed."""
    doc = make_record(identity).body() | changes
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()  # NaN allowed here
    return MAGIC + identity.sign(body) + body


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf"), float("-inf"), -1.0, "now",
                                       True, None])
def test_non_finite_or_non_numeric_timestamps_are_refused(timestamp: object) -> None:
    me = Identity.generate()
    value = signed_doc(me, timestamp=timestamp)
    with pytest.raises(BadTimestamp):
        decode_record(value, now=NOW)
    with pytest.raises(BadTimestamp):
        RecordBook(clock=lambda: NOW).accept(value)


def test_a_huge_number_literal_is_refused() -> None:
    me = Identity.generate()
    body = canonical(make_record(me).body()).replace(b'"timestamp":1700000000.5',
                                                     b'"timestamp":1e999')
    with pytest.raises(BadTimestamp):
        decode_record(MAGIC + me.sign(body) + body)


def test_a_record_from_the_far_future_is_refused() -> None:
    me = Identity.generate()
    soon = encode_record(make_record(me, timestamp=NOW + MAX_CLOCK_SKEW - 1), me)
    assert decode_record(soon, now=NOW).timestamp == NOW + MAX_CLOCK_SKEW - 1
    later = encode_record(make_record(me, timestamp=NOW + MAX_CLOCK_SKEW + 60), me)
    with pytest.raises(BadTimestamp):
        decode_record(later, now=NOW)
    with pytest.raises(BadTimestamp):
        RecordBook(clock=lambda: NOW).accept(later)


def test_encoding_a_non_finite_field_fails_cleanly() -> None:
    me = Identity.generate()
    with pytest.raises(MalformedRecord):
        encode_record(make_record(me, timestamp=float("nan")), me)


@pytest.mark.parametrize("changes", [
    {"seq": -1}, {"seq": 2**63}, {"seq": 1.5}, {"seq": "1"}, {"seq": True},
    {"api_port": 70000}, {"api_port": -1},
    {"quic_addresses": [["127.0.0.1", 0]]}, {"quic_addresses": [["127.0.0.1", 65536]]},
    {"quic_addresses": [["", 30070]]}, {"quic_addresses": [["h", 1, 2]]},
    {"quic_addresses": [["h", 1]] * 9}, {"quic_addresses": "127.0.0.1:1"},
    {"files_count": -3}, {"files_count": 10**7}, {"apps_count": float("nan")},
    {"is_relay": "yes"}, {"online": 1}, {"nat": [1]}, {"nat": {"behind_nat": "no"}},
    {"nat": {"nat_type": "x" * 100}}, {"nat": {"connected_relay_id": "zz"}},
    {"dht_node_id": "not hex"}, {"topic": "t" * 500}, {"peer_id": "AB" * 20},
    {"capabilities": {"cpu_cores": float("inf")}}, {"capabilities": {"cpu_cores": -1}},
    {"capabilities": {"gpu_count": 2**60}}, {"capabilities": {"nested": {"a": 1}}},
    {"capabilities": {"platform": "x" * 500}}, {"capabilities": [1, 2]},
    {"capabilities": {f"k{i}": 1 for i in range(40)}},
])
def test_every_field_is_checked_for_type_and_range(changes: dict[str, object]) -> None:
    me = Identity.generate()
    with pytest.raises(MalformedRecord):
        decode_record(signed_doc(me, **changes), now=NOW)


def test_the_largest_acceptable_values_pass() -> None:
    me = Identity.generate()
    record = make_record(me, seq=2**63 - 1, api_port=65535, files_count=1_000_000,
                         quic_addresses=(("h" * 253, 65535),) * 8, timestamp=0.0)
    assert decode_record(encode_record(record, me), now=NOW) == record


def test_record_book_is_bounded_and_prefers_the_peers_it_holds() -> None:
    clock = [NOW]
    book = RecordBook(capacity=3, ttl=60, clock=lambda: clock[0])
    held = [Identity.generate() for _ in range(3)]
    for peer in held:
        book.accept(encode_record(make_record(peer, seq=1, timestamp=NOW), peer))
    newcomer = Identity.generate()
    with pytest.raises(BookFull):
        book.accept(encode_record(make_record(newcomer, seq=1, timestamp=NOW), newcomer))
    assert len(book) == 3 and book.latest_seq(newcomer.peer_id) is None
    # A held peer moving forward keeps its place; the others expire by our clock.
    clock[0] += 50
    book.accept(encode_record(make_record(held[0], seq=2, timestamp=NOW), held[0]))
    clock[0] += 20
    assert book.accept(encode_record(make_record(newcomer, seq=1, timestamp=NOW),
                                     newcomer)).peer_id == newcomer.peer_id
    assert [book.latest_seq(p.peer_id) for p in held] == [2, None, None]


def test_a_repeat_does_not_keep_a_book_entry_alive() -> None:
    clock = [NOW]
    book = RecordBook(ttl=60, clock=lambda: clock[0])
    me = Identity.generate()
    value = encode_record(make_record(me, seq=1, timestamp=NOW), me)
    book.accept(value)
    clock[0] += 50
    book.accept(value)
    clock[0] += 20
    assert book.expire() == [me.peer_id]


@pytest.mark.parametrize("summary", [
    {"gpu_count": float("nan"), "cpu_cores": "eight", "platform": 5},
    {"gpu_count": 10**9, "gpu_memory_mb": -5, "total_memory_mb": float("inf")},
    {"has_docker": "yes", "cpu_cores": True},
])
def test_capabilities_from_a_summary_of_the_wrong_kinds_never_fail(
        summary: dict[str, object]) -> None:
    caps = capabilities_from_summary(summary)
    assert all(isinstance(caps[k], int) and caps[k] >= 0
               for k in ("cpu_cores", "total_memory_mb", "total_disk_mb"))
    assert isinstance(caps["platform"], str) and len(caps["gpus"]) <= 64
    assert caps["has_docker"] in (True, False)
    json.dumps(caps, allow_nan=False)


def test_service_digests_are_a_bounded_list_of_digests() -> None:
    me = Identity.generate()
    digests = tuple(f"sha256:{i:064x}" for i in range(MAX_SERVICE_DIGESTS))
    record = make_record(me, service_digests=digests)
    value = encode_record(record, me)
    assert decode_record(value).service_digests == digests
    assert len(value) < MAX_RECORD_BYTES  # a full summary leaves room for the rest
    for bad in ((*digests, "sha256:" + "ff" * 32), ("sha256:XY",), ("md5:" + "0" * 32,)):
        body = canonical({**make_record(me).body(), "service_digests": list(bad)})
        with pytest.raises(MalformedRecord):
            decode_record(MAGIC + me.sign(body) + body)
