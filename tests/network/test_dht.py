"""The kademlia glue: several in-process DHT nodes on 127.0.0.1 (real UDP sockets)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import pytest
from kademlia.node import Node as KNode
from kademlia.utils import digest

from network import topic as topics
from network.dht import DhtConfig, DhtNode, LocalFacts, parse_address
from network.identity import Identity
from network.kademlia_ext import RecordServer, ValidatingStorage
from network.peers import PeerDirectory
from network.records import MAGIC, PeerRecord, encode_record

TOPIC = "test-mesh"
REFRESH = 0.3
STALE = 1.5


@dataclass
class Member:
    identity: Identity
    dht: DhtNode
    peers: PeerDirectory
    facts: LocalFacts

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id


async def start_member(index: int, bootstrap: tuple[tuple[str, int], ...] = (),
                       topic: str = TOPIC) -> Member:
    identity = Identity.generate()
    peers = PeerDirectory(identity.peer_id, topic, stale_after=STALE)
    member = Member(identity, None, peers,  # type: ignore[arg-type]
                    LocalFacts(quic_addresses=(("127.0.0.1", 40000 + index),),
                               api_port=50000 + index, files_count=index))

    async def facts() -> LocalFacts:
        return member.facts

    config = DhtConfig(host="127.0.0.1", port=0, topic=topic, bootstrap=bootstrap,
                       rpc_timeout=0.3, refresh_interval=REFRESH)
    member.dht = DhtNode(identity, config, facts=facts, on_record=peers.update_from_record,
                         on_round=peers.expire)
    await member.dht.start()
    return member


@asynccontextmanager
async def network(n: int) -> AsyncIterator[list[Member]]:
    members: list[Member] = []
    try:
        members.append(await start_member(0))
        seed = members[0].dht.address
        assert seed is not None
        for i in range(1, n):
            members.append(await start_member(i, (seed,)))
        yield members
    finally:
        for m in members:
            await m.dht.stop(announce=False)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def everyone_knows_everyone(members: list[Member]) -> bool:
    ids = {m.peer_id for m in members}
    return all({p.peer_id for p in m.peers.all()} == ids - {m.peer_id} for m in members)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:30071") == ("127.0.0.1", 30071)
    assert parse_address("[::1]:5") == ("::1", 5)
    assert parse_address("node.example:1") == ("node.example", 1)
    for bad in ("nohost", ":5", "h:0", "h:99999", "h:x"):
        try:
            parse_address(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


async def test_nodes_find_each_other_with_record_fields() -> None:
    async with network(4) as members:
        await until(lambda: everyone_knows_everyone(members))
        a, c = members[0], members[2]
        info = a.peers.get(c.peer_id)
        assert info is not None and info.record is not None
        shown = info.to_api()
        assert shown["files_count"] == 2 and shown["source"] == "dht"
        assert shown["topic"] == TOPIC and shown["is_store"] is True
        assert shown["dht_node_id"] == c.dht.node_id_hex
        assert a.peers.quic_addresses(c.peer_id) == [("127.0.0.1", 40002)]


async def test_topic_membership_is_a_union_on_every_node() -> None:
    async with network(5) as members:
        ids = {m.peer_id for m in members}
        for m in members:
            await until(lambda m=m: ids <= _held_members(m))
            assert await m.dht.members() == ids


def _held_members(m: Member) -> set[str]:
    value = m.dht.storage.get(digest(TOPIC))
    return topics.decode(value).peer_ids() if value is not None else set()


async def test_other_topics_are_not_listed() -> None:
    async with network(2) as members:
        seed = members[0].dht.address
        assert seed is not None
        outsider = await start_member(9, (seed,), topic="other-mesh")
        try:
            await until(lambda: everyone_knows_everyone(members))
            await outsider.dht.round()
            await members[0].dht.round()
            assert outsider.peer_id not in members[0].peers
            assert members[0].peer_id not in outsider.peers
        finally:
            await outsider.dht.stop(announce=False)


async def test_change_is_republished() -> None:
    async with network(3) as members:
        await until(lambda: everyone_knows_everyone(members))
        c = members[2]
        c.facts = replace(c.facts, apps_count=7)
        c.dht.request_republish()

        def seen_everywhere() -> bool:
            infos = [m.peers.get(c.peer_id) for m in members[:2]]
            return all(i is not None and i.to_api()["apps_count"] == 7 for i in infos)

        await until(seen_everywhere)


async def test_forged_and_misplaced_records_are_refused_over_rpc() -> None:
    async with network(3) as members:
        await until(lambda: everyone_knows_everyone(members))
        a, b = members[0], members[1]
        victim, forger = Identity.generate(), Identity.generate()
        good = encode_record(_record(victim, seq=10), victim)
        body = good[len(MAGIC) + 64:]
        forged = MAGIC + forger.sign(body) + body
        attacker = RecordServer(node_id=digest("attacker"),
                                storage=ValidatingStorage(topic_ttl=60), rpc_timeout=0.3)
        await attacker.listen(0, interface="127.0.0.1")
        try:
            target = KNode(a.dht.node_id, *a.dht.address)  # type: ignore[misc]
            proto = attacker.protocol
            # Wrong signature: refused.
            assert await proto.call_store(target, digest(victim.peer_id), forged) == (True, False)
            # Valid record under another peer's key: refused.
            assert await proto.call_store(target, digest(b.peer_id), good) == (True, False)
            # Junk that is neither a record nor a topic value: refused.
            assert await proto.call_store(target, digest("x"), b"junk") == (True, False)
            # The genuine record is kept; an older one after it is refused.
            assert await proto.call_store(target, digest(victim.peer_id), good) == (True, True)
            older = encode_record(_record(victim, seq=9), victim)
            assert await proto.call_store(target, digest(victim.peer_id), older) == (True, False)
            assert a.dht.storage.get(digest(victim.peer_id)) == good
            assert a.dht.storage.refused >= 3
        finally:
            attacker.stop()


async def test_forged_member_is_never_listed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="remote_network.dht")
    async with network(3) as members:
        await until(lambda: everyone_knows_everyone(members))
        a = members[0]
        victim, forger = Identity.generate(), Identity.generate()
        body = encode_record(_record(victim, seq=int(time.time() * 1000)), victim)
        body = body[len(MAGIC) + 64:]
        forged = MAGIC + forger.sign(body) + body
        # Put the forged record straight into a node's storage by hand, as a misbehaving holder
        # would answer lookups, and the victim's own (genuine) announcement into the topic.
        a.dht.storage.data[digest(victim.peer_id)] = (time.time(), forged)
        for m in members:
            m.dht.storage.store(digest(TOPIC), topics.encode(
                topics.announcement(victim, TOPIC, time.time())))
        for m in members:
            await m.dht.round()
        assert all(victim.peer_id not in m.peers for m in members)
        assert await members[1].dht.fetch_record(victim.peer_id) is None
        assert f"dropped a record for peer {victim.peer_id[:16]}: bad signature" in caplog.text


async def test_stopped_node_leaves_at_once_and_crashed_node_goes_stale() -> None:
    async with network(4) as members:
        await until(lambda: everyone_knows_everyone(members))
        leaving, crashed = members[2], members[3]
        await leaving.dht.stop()  # announces an offline record
        await until(lambda: all(leaving.peer_id not in m.peers for m in members[:2]),
                    timeout=3)
        assert all(crashed.peer_id in m.peers for m in members[:2])
        await crashed.dht.stop(announce=False)  # vanishes without a word
        await until(lambda: all(crashed.peer_id not in m.peers for m in members[:2]),
                    timeout=STALE + 5)
        assert {p.peer_id for p in members[0].peers.all()} == {members[1].peer_id}


async def test_first_node_alone_is_found_by_a_later_one() -> None:
    first = await start_member(0)
    try:
        await first.dht.round()  # publishes to nobody
        assert not first.dht.last_publish_reached
        seed = first.dht.address
        assert seed is not None
        second = await start_member(1, (seed,))
        try:
            await until(lambda: everyone_knows_everyone([first, second]))
        finally:
            await second.dht.stop(announce=False)
    finally:
        await first.dht.stop(announce=False)


def _record(identity: Identity, *, seq: int) -> PeerRecord:
    return PeerRecord(peer_id=identity.peer_id, public_key=identity.public_key_hex, seq=seq,
                      timestamp=time.time(), topic=TOPIC)


# -- the storage's bounds, without sockets -----------------------------------------------------
class WallClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _signed_body(identity: Identity, **changes: object) -> bytes:
    doc = _record(identity, seq=1).body() | changes
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + identity.sign(body) + body


def test_storage_drops_records_with_lying_timestamps() -> None:
    clock = WallClock()
    storage = ValidatingStorage(topic_ttl=60, ttl=60, clock=clock)
    liar = Identity.generate()
    for ts in (float("nan"), float("inf"), clock.now + 3600, -5):
        value = _signed_body(liar, timestamp=ts)
        assert not storage.store(digest(liar.peer_id), value, source="6.6.6.6:1")
    assert storage.get(digest(liar.peer_id)) is None and storage.refused == 4


def test_storage_caps_values_per_source_and_in_all() -> None:
    clock = WallClock()
    storage = ValidatingStorage(topic_ttl=60, ttl=60, max_values=6, per_source=3, clock=clock)
    liars = [Identity.generate() for _ in range(5)]
    kept = [storage.store(digest(p.peer_id), encode_record(_record(p, seq=1), p),
                          source="6.6.6.6:1") for p in liars]
    assert kept == [True, True, True, False, False]
    honest = [Identity.generate() for _ in range(4)]
    kept = [storage.store(digest(p.peer_id), encode_record(_record(p, seq=1), p),
                          source=f"10.0.0.{i}:1") for i, p in enumerate(honest)]
    assert kept == [True, True, True, False]  # full: the held ones stay
    # This node's own values always find room.
    me = Identity.generate()
    assert storage.store(digest(me.peer_id), encode_record(_record(me, seq=1), me))


def test_storage_expiry_runs_by_the_time_values_arrived() -> None:
    clock = WallClock()
    storage = ValidatingStorage(topic_ttl=30, ttl=60, clock=clock)
    peer, member = Identity.generate(), Identity.generate()
    value = encode_record(_record(peer, seq=1), peer)
    assert storage.store(digest(peer.peer_id), value, source="1.1.1.1:1")
    assert storage.store(digest(TOPIC), topics.encode(topics.announcement(member, TOPIC,
                                                                          clock.now)))
    clock.now += 40
    storage.store(digest(peer.peer_id), value, source="6.6.6.6:1")  # a replay: no renewal
    assert storage.expire() == 1  # the topic's only member went quiet
    clock.now += 30
    assert storage.expire() == 1 and list(storage) == []
    # A value that no longer parses is removed at once.
    storage.data[digest("junk")] = (clock.now, MAGIC + b"x" * 64 + b'{"v":1}')
    assert storage.expire() == 1


def test_storage_refuses_topic_values_under_another_key_and_forged_members() -> None:
    storage = ValidatingStorage(topic_ttl=60, clock=WallClock())
    member, victim = Identity.generate(), Identity.generate()
    own = topics.encode(topics.announcement(member, TOPIC, time.time()))
    assert not storage.store(digest("elsewhere"), own, source="6.6.6.6:1")
    entry = topics.sign_entry(member, TOPIC, time.time())
    forged = topics.MemberEntry(victim.public_key, entry.timestamp, entry.signature)
    value = topics.encode(topics.Members(TOPIC, {forged.peer_id: forged}))
    assert not storage.store(digest(TOPIC), value, source="6.6.6.6:1")
    assert storage.get(digest(TOPIC)) is None


async def test_provider_records_name_who_holds_a_result_and_are_announced_again() -> None:
    key = "sha256:" + "ab" * 32
    async with network(4) as members:
        await until(lambda: everyone_knows_everyone(members))
        holder, other, asker = members[1], members[2], members[3]
        assert await asker.dht.providers(key) == []
        assert await holder.dht.provide(key)
        assert await asker.dht.providers(key) == [holder.peer_id]
        assert await other.dht.provide(key)
        assert sorted(await asker.dht.providers(key)) == sorted([other.peer_id,
                                                                  holder.peer_id])
        # Another key's providers are not these.
        assert await asker.dht.providers("sha256:" + "cd" * 32) == []
        # Each publish announces the provided keys again (they expire like topic members).
        assert key in holder.dht._provided
        for _ in range(100):
            holder.dht.remember_provided("sha256:" + f"{_:064x}")
        assert len(holder.dht._provided) == 64 and key not in holder.dht._provided
