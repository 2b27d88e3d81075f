"""Topic membership from signed entries: codec, the holder's table, the reader's merge.
No sockets."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from network import topic
from network.identity import Identity
from network.topic import (
    MAX_MEMBERS,
    MAX_PER_SOURCE,
    MAX_SKEW,
    MemberEntry,
    Members,
    MemberTable,
    TopicError,
)

NOW = 1_700_000_000.0
TTL = 60.0
MESH = "mesh"


def ids(n: int) -> list[Identity]:
    return [Identity.generate() for _ in range(n)]


def value_of(*entries: MemberEntry, name: str = MESH) -> Members:
    return Members(name, {e.peer_id: e for e in entries})


def forged(victim: Identity, when: float, forger: Identity) -> MemberEntry:
    """An entry with the victim's (public) key, signed by a forger who lacks its private key."""
    ts = int(when)
    return MemberEntry(victim.public_key, ts,
                       forger.sign(topic.signed_message(MESH, victim.peer_id, ts)))


def table() -> MemberTable:
    return MemberTable(MESH, ttl=TTL)


def test_encode_decode_round_trip() -> None:
    a, b = ids(2)
    members = value_of(topic.sign_entry(a, MESH, NOW), topic.sign_entry(b, MESH, NOW - 5))
    decoded = topic.decode(topic.encode(members))
    assert decoded == members
    assert decoded.members == {a.peer_id: int(NOW), b.peer_id: int(NOW) - 5}
    assert all(topic.verify_entry(MESH, e) for e in decoded.entries.values())


def test_a_full_value_fits_one_kademlia_message() -> None:
    members = value_of(*(topic.sign_entry(i, MESH, NOW) for i in ids(MAX_MEMBERS)),
                       name="m" * topic.MAX_TOPIC_BYTES)
    value = topic.encode(members)
    assert len(value) <= topic.MAX_VALUE_BYTES < 8192 - 200
    with pytest.raises(TopicError):
        topic.encode(value_of(*(topic.sign_entry(i, MESH, NOW) for i in ids(MAX_MEMBERS + 1))))


@pytest.mark.parametrize("value", [b"", b"RNREC1...", topic.MAGIC, topic.MAGIC + b"\x05ab",
                                   topic.MAGIC + b"\x04mesh" + b"x" * 50, None, 5,
                                   topic.MAGIC + b"\x02\xff\xfe",
                                   topic.MAGIC + b"\x04mesh" + b"x" * topic.MAX_VALUE_BYTES])
def test_decode_refuses_non_topic_values(value: object) -> None:
    with pytest.raises(TopicError):
        topic.decode(value)


def test_forged_and_tampered_entries_do_not_verify() -> None:
    victim, forger = ids(2)
    assert not topic.verify_entry(MESH, forged(victim, NOW, forger))
    genuine = topic.sign_entry(victim, MESH, NOW)
    assert topic.verify_entry(MESH, genuine)
    assert not topic.verify_entry("other-mesh", genuine)  # signed for another topic
    later = dataclasses.replace(genuine, timestamp=genuine.timestamp + 100)
    assert not topic.verify_entry(MESH, later)  # the time is part of what was signed


def test_table_keeps_signed_members_and_refuses_forged_ones() -> None:
    victim, forger, honest = ids(3)
    held = table()
    offer = held.offer(value_of(forged(victim, NOW, forger)), source="6.6.6.6:1",
                       now=NOW)
    assert not offer.kept and len(held) == 0
    assert held.offer(value_of(topic.sign_entry(honest, MESH, NOW)), source="1.1.1.1:1",
                      now=NOW).kept
    assert held.members().peer_ids() == {honest.peer_id}


def test_table_merges_members_from_several_writers() -> None:
    a, b = ids(2)
    held = table()
    held.offer(value_of(topic.sign_entry(a, MESH, NOW)), source="1.1.1.1:1", now=NOW)
    held.offer(value_of(topic.sign_entry(b, MESH, NOW)), source="2.2.2.2:1", now=NOW)
    assert topic.decode(held.value()).peer_ids() == {a.peer_id, b.peer_id}


def test_a_thousand_members_from_one_source_cannot_evict_honest_ones() -> None:
    honest = ids(20)
    held = table()
    for i, member in enumerate(honest):
        held.offer(value_of(topic.sign_entry(member, MESH, NOW)), source=f"10.0.0.{i}:1",
                   now=NOW)
    liar_keys = ids(1000)
    liar = "6.6.6.6:1"
    for start in range(0, 1000, MAX_MEMBERS):
        batch = liar_keys[start:start + MAX_MEMBERS]
        held.offer(value_of(*(topic.sign_entry(k, MESH, NOW + 1) for k in batch)),
                   source=liar, now=NOW + 1)
    listed = held.members().peer_ids()
    assert {m.peer_id for m in honest} <= listed
    assert len(listed - {m.peer_id for m in honest}) == MAX_PER_SOURCE
    assert held.share(liar) == MAX_PER_SOURCE


def test_many_sources_filling_the_table_do_not_push_out_fair_members() -> None:
    held = MemberTable(MESH, ttl=TTL, capacity=10, per_source=4)
    honest = ids(3)
    for i, member in enumerate(honest):
        held.offer(value_of(topic.sign_entry(member, MESH, NOW)), source=f"10.0.0.{i}:1",
                   now=NOW)
    for port in range(50):  # one liar, many ports, four fresh keys each
        keys = ids(4)
        held.offer(value_of(*(topic.sign_entry(k, MESH, NOW) for k in keys)),
                   source=f"6.6.6.6:{port}", now=NOW)
    assert len(held) == 10
    assert {m.peer_id for m in honest} <= held.members().peer_ids()
    assert all(held.share(f"6.6.6.6:{port}") <= 1 for port in range(50))


def test_a_newcomer_takes_room_from_the_source_holding_the_most() -> None:
    held = MemberTable(MESH, ttl=TTL, capacity=6, per_source=4)
    honest = ids(2)
    for i, member in enumerate(honest):
        held.offer(value_of(topic.sign_entry(member, MESH, NOW)), source=f"10.0.0.{i}:1",
                   now=NOW)
    held.offer(value_of(*(topic.sign_entry(k, MESH, NOW) for k in ids(4))),
               source="6.6.6.6:1", now=NOW)
    assert len(held) == 6
    late = Identity.generate()
    assert held.offer(value_of(topic.sign_entry(late, MESH, NOW)), source="10.0.0.99:1",
                      now=NOW).kept
    assert {late.peer_id, *(m.peer_id for m in honest)} <= held.members().peer_ids()
    assert held.share("6.6.6.6:1") == 3


def test_own_entries_are_never_capped_nor_pushed_out() -> None:
    held = MemberTable(MESH, ttl=TTL, capacity=2, per_source=1)
    me = Identity.generate()
    held.offer(value_of(topic.sign_entry(me, MESH, NOW)), source=None, now=NOW)
    for port in range(5):
        held.offer(value_of(topic.sign_entry(Identity.generate(), MESH, NOW)),
                   source=f"6.6.6.6:{port}", now=NOW)
    assert me.peer_id in held.members().peer_ids() and len(held) == 2


def test_members_expire_by_the_time_we_received_them_and_replays_do_not_refresh() -> None:
    member = Identity.generate()
    held = table()
    entry = topic.sign_entry(member, MESH, NOW + MAX_SKEW)  # dated as far ahead as allowed
    assert held.offer(value_of(entry), source="1.1.1.1:1", now=NOW).kept
    # The same entry again, later, does not keep it alive.
    assert held.offer(value_of(entry), source="6.6.6.6:1", now=NOW + TTL - 1).kept
    assert held.expire(NOW + TTL + 1) == [member.peer_id]
    assert len(held) == 0


def test_a_newer_signed_time_refreshes() -> None:
    member = Identity.generate()
    held = table()
    held.offer(value_of(topic.sign_entry(member, MESH, NOW)), source="1.1.1.1:1", now=NOW)
    later = NOW + TTL - 1
    offer = held.offer(value_of(topic.sign_entry(member, MESH, later)), source="1.1.1.1:1",
                       now=later)
    assert offer.refreshed == 1
    assert held.expire(NOW + TTL + 1) == []


@pytest.mark.parametrize("when", [NOW + MAX_SKEW + 10, NOW + 10**9, NOW - TTL - 10, 0])
def test_future_and_stale_entries_are_dropped(when: float) -> None:
    member = Identity.generate()
    held = table()
    offer = held.offer(value_of(topic.sign_entry(member, MESH, when)), source="1.1.1.1:1",
                       now=NOW)
    assert not offer.kept and len(held) == 0
    assert topic.gather([topic.encode(value_of(topic.sign_entry(member, MESH, when)))],
                        topic=MESH, now=NOW, ttl=TTL).peer_ids() == set()


def test_entry_times_beyond_64_bits_cannot_be_written() -> None:
    member = Identity.generate()
    raw = topic.MAGIC + b"\x04mesh" + member.public_key + struct.pack(">Q", 2**64 - 1) + \
        b"\x00" * 64
    decoded = topic.decode(raw)
    assert not topic.acceptable(MESH, decoded.entries[member.peer_id], now=NOW, ttl=TTL)


def test_table_refuses_other_topics() -> None:
    with pytest.raises(TopicError):
        table().offer(value_of(topic.sign_entry(Identity.generate(), "b", NOW), name="b"),
                      source=None, now=NOW)


def test_gather_is_a_union_of_verified_entries_newest_per_member() -> None:
    a, b, victim, forger = ids(4)
    first = topic.encode(value_of(topic.sign_entry(a, MESH, NOW - 10),
                                  topic.sign_entry(b, MESH, NOW)))
    second = topic.encode(value_of(topic.sign_entry(a, MESH, NOW),
                                   forged(victim, NOW, forger)))
    other = topic.encode(value_of(topic.sign_entry(victim, "x", NOW), name="x"))
    found = topic.gather([first, b"junk", None, second, other], topic=MESH, now=NOW, ttl=TTL)
    assert found.members == {a.peer_id: int(NOW), b.peer_id: int(NOW)}
    assert topic.gather([first, second], topic=MESH, now=NOW, ttl=TTL) == \
        topic.gather([second, first], topic=MESH, now=NOW, ttl=TTL)


def test_gather_keeps_at_most_the_limit_freshest() -> None:
    values = [topic.encode(value_of(*(topic.sign_entry(k, MESH, NOW - i) for k in ids(5))))
              for i in range(6)]
    found = topic.gather(values, topic=MESH, now=NOW, ttl=TTL, limit=12)
    assert len(found.entries) == 12
    assert min(found.members.values()) >= int(NOW) - 2
