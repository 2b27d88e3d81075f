"""Topic membership: set-union merge with freshness. No sockets."""

from __future__ import annotations

import pytest

from network import topic
from network.topic import MAX_MEMBERS, Members, TopicError

NOW = 1_700_000_000.0


def pid(n: int) -> str:
    return f"{n:040x}"


def test_merge_is_a_union_not_last_writer_wins() -> None:
    a = Members("mesh", {pid(1): 100})
    b = Members("mesh", {pid(2): 100})
    merged = topic.merge(a, b, now=NOW)
    assert merged.peer_ids() == {pid(1), pid(2)}


def test_merge_keeps_the_newest_time_and_is_order_independent() -> None:
    a = Members("mesh", {pid(1): 100, pid(2): 300})
    b = Members("mesh", {pid(1): 200, pid(3): 50})
    ab, ba = topic.merge(a, b, now=NOW), topic.merge(b, a, now=NOW)
    assert ab == ba
    assert ab.members == {pid(1): 200, pid(2): 300, pid(3): 50}
    # Idempotent: merging again changes nothing.
    assert topic.merge(ab, a, b, now=NOW) == ab


def test_stale_members_drop_out() -> None:
    a = Members("mesh", {pid(1): int(NOW) - 10, pid(2): int(NOW) - 1000})
    assert topic.merge(a, now=NOW, ttl=60).peer_ids() == {pid(1)}


def test_future_times_are_clamped() -> None:
    a = Members("mesh", {pid(1): int(NOW) + 10**9})
    merged = topic.merge(a, now=NOW)
    assert merged.members[pid(1)] == int(NOW) + topic.MAX_SKEW


def test_size_is_capped_keeping_the_freshest() -> None:
    many = Members("mesh", {pid(i): 1000 + i for i in range(MAX_MEMBERS + 30)})
    merged = topic.merge(many, now=NOW)
    assert len(merged.members) == MAX_MEMBERS
    assert pid(MAX_MEMBERS + 29) in merged.members and pid(0) not in merged.members
    # The full value still fits a kademlia message.
    assert len(topic.encode(merged)) < 8192 - 200


def test_different_topics_do_not_merge() -> None:
    with pytest.raises(TopicError):
        topic.merge(Members("a", {pid(1): 1}), Members("b", {pid(2): 1}), now=NOW)


def test_encode_decode_round_trip_and_junk_entries_dropped() -> None:
    value = topic.encode(Members("mesh", {pid(1): 5, pid(2): 6}))
    assert topic.decode(value) == Members("mesh", {pid(1): 5, pid(2): 6})
    junk = topic.MAGIC + b'{"topic":"mesh","members":{"nothex":1,"' + pid(3).encode() + \
        b'":"x","' + pid(4).encode() + b'":7}}'
    assert topic.decode(junk).members == {pid(4): 7}


@pytest.mark.parametrize("value", [b"", b"RNREC1...", topic.MAGIC + b"{", None, 5,
                                   topic.MAGIC + b'{"topic":1,"members":{}}'])
def test_decode_refuses_non_topic_values(value: object) -> None:
    with pytest.raises(TopicError):
        topic.decode(value)


def test_merge_values_tolerates_a_junk_old_value() -> None:
    new = topic.encode(Members("mesh", {pid(1): int(NOW)}))
    assert topic.decode(topic.merge_values(b"junk", new, now=NOW)).peer_ids() == {pid(1)}
    old = topic.encode(Members("mesh", {pid(2): int(NOW)}))
    both = topic.merge_values(old, new, now=NOW, ttl=60)
    assert topic.decode(both).peer_ids() == {pid(1), pid(2)}


def test_with_member_adds_or_refreshes() -> None:
    m = Members("mesh", {pid(1): 10}).with_member(pid(1), NOW).with_member(pid(2), NOW)
    assert m.members == {pid(1): int(NOW), pid(2): int(NOW)}
