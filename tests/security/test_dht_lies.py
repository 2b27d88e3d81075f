"""A stranger lies to the DHT of real node processes; the nodes believe none of it.

Two nodes (B bootstraps from A) with short DHT intervals. The stranger makes fresh keys, as
anyone can, joins the DHT with a plain kademlia ``Server`` on 127.0.0.1 and stores on both nodes:
a validly signed record dated ``NaN``, one dated far in the future, more than a hundred forged
topic members (ids whose keys it lacks), and more than a hundred members it did sign itself with
fresh keys. Every lie is refused or capped: ``GET /api/peers`` stays 200 and lists the honest
peer and none of the liar's ids, and the topic value A serves still names both honest nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kademlia.network import Server
from kademlia.utils import digest

from network import topic as topics
from network.identity import Identity, decode_key_file
from network.records import MAGIC, PeerRecord
from orchestrator.discovery import PEER_NOT_FOUND
from tests.support.node_process import ApiClient, NodeProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

TOPIC = "remote-network-mesh"
FAST = {"RN_DHT_REFRESH_SECONDS": "1", "RN_PEER_STALE_SECONDS": "6",
        "RN_DHT_RPC_TIMEOUT": "0.5", "RN_PREFECT_WARMUP": "false"}
PER_SOURCE = 8  # the default cap of topic members one source may bring
FORGED = 120
SELF_SIGNED = 120


@dataclass
class Pair:
    nodes: list[NodeProcess]
    clients: list[ApiClient]
    peer_ids: list[str]


@dataclass
class Attack:
    """What the stranger stored, and what the nodes answered."""

    answers: dict[str, list[Any]]
    liar_ids: set[str]
    topic_values: list[bytes]
    started: float


def login(node: NodeProcess) -> ApiClient:
    seed = decode_key_file((node.data_dir / "identity.key").read_bytes(), None).seed
    return node.client(seed=seed)


def listed(client: ApiClient) -> set[str]:
    resp = client.get("/api/peers")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["total"] == len(body["peers"])
    return {p["peer_id"] for p in body["peers"]}


def last_seen(client: ApiClient, peer_id: str) -> str:
    resp = client.get("/api/peers")
    assert resp.status_code == 200, resp.text
    rows = [p for p in resp.json()["peers"] if p["peer_id"] == peer_id]
    return rows[0]["last_seen"] if rows else ""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root: Path = tmp_path_factory.mktemp("dht-lies")
    a = NodeProcess(root / "a", env=FAST)
    nodes = [a]
    clients: list[ApiClient] = []
    try:
        a.start()
        b = NodeProcess(root / "b", env=FAST, extra_args=["--bootstrap", f"127.0.0.1:{a.dht_port}"])
        nodes.append(b)
        b.start()
        clients = [login(n) for n in nodes]
        ids = [c.get("/api/node/status").json()["peer_id"] for c in clients]
        yield Pair(nodes, clients, ids)
    finally:
        for c in clients:
            c.close()
        for n in nodes:
            n.stop()


def signed_with_lie(liar: Identity, **lie: object) -> bytes:
    """The liar's own record, ``lie`` written into its body, validly signed by the liar."""
    record = PeerRecord(peer_id=liar.peer_id, public_key=liar.public_key_hex,
                        seq=int(time.time() * 1000), timestamp=time.time(), topic=TOPIC,
                        quic_addresses=(("127.0.0.1", 9),))
    doc = record.body() | lie
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()  # writes NaN
    return MAGIC + liar.sign(body) + body


def forged_members(count: int) -> list[bytes]:
    """Topic values listing ``count`` ids whose keys the liar lacks (random keys, signatures)."""
    now = int(time.time())
    entries = [topics.MemberEntry(os.urandom(32), now, os.urandom(64)) for _ in range(count)]
    return [topics.encode(topics.Members(TOPIC, {e.peer_id: e for e in chunk}))
            for chunk in _chunks(entries)]


def self_signed_members(keys: list[Identity]) -> list[bytes]:
    now = time.time()
    entries = [topics.sign_entry(k, TOPIC, now) for k in keys]
    return [topics.encode(topics.Members(TOPIC, {e.peer_id: e for e in chunk}))
            for chunk in _chunks(entries)]


def _chunks(entries: list[topics.MemberEntry]) -> list[list[topics.MemberEntry]]:
    return [entries[i:i + topics.MAX_MEMBERS] for i in range(0, len(entries), topics.MAX_MEMBERS)]


async def attack(seeds: list[tuple[str, int]]) -> Attack:
    nan_liar, future_liar = Identity.generate(), Identity.generate()
    fresh_keys = [Identity.generate() for _ in range(SELF_SIGNED)]
    nan_record = signed_with_lie(nan_liar, timestamp=float("nan"))
    future_record = signed_with_lie(future_liar, timestamp=time.time() + 10 * 365 * 86400)
    forged = forged_members(FORGED)
    self_signed = self_signed_members(fresh_keys)
    liar_ids = {nan_liar.peer_id, future_liar.peer_id, *(k.peer_id for k in fresh_keys)}
    for value in forged:
        liar_ids |= topics.decode(value).peer_ids()
    answers: dict[str, list[Any]] = {"nan": [], "future": [], "forged": [], "self_signed": []}
    server = Server()
    await server.listen(0, interface="127.0.0.1")
    try:
        await server.bootstrap(seeds[:1])
        proto, me = server.protocol, server.node.id
        started = time.time()
        for seed in seeds:
            answers["nan"].append(await proto.store(seed, me, digest(nan_liar.peer_id),
                                                    nan_record))
            answers["future"].append(await proto.store(seed, me, digest(future_liar.peer_id),
                                                       future_record))
            for value in forged:
                answers["forged"].append(await proto.store(seed, me, digest(TOPIC), value))
            for value in self_signed:
                answers["self_signed"].append(await proto.store(seed, me, digest(TOPIC), value))
        found = [await proto.find_value(seed, me, digest(TOPIC)) for seed in seeds]
    finally:
        server.stop()
    values = [answer["value"] for ok, answer in found
              if ok and isinstance(answer, dict) and "value" in answer]
    return Attack(answers, liar_ids, values, started)


def test_lies_in_the_dht_change_nothing(pair: Pair) -> None:
    a, b = pair.clients
    a_id, b_id = pair.peer_ids
    wait_until(lambda: b_id in listed(a) and a_id in listed(b), 60, "A and B listing each other")
    seeds = [("127.0.0.1", n.dht_port) for n in pair.nodes]

    result = asyncio.run(attack(seeds))

    # Every node answered each STORE, and refused each lie.
    for name in ("nan", "future", "forged"):
        assert result.answers[name] and all(ans == (True, False)
                                            for ans in result.answers[name]), name
    # The members the liar signed itself are capped per source: most are refused.
    assert all(ok for ok, _ in result.answers["self_signed"])
    assert not any(kept for _, kept in result.answers["self_signed"])

    # The topic value each node serves still names both honest nodes, at most PER_SOURCE of
    # the liar's own keys, and none of the forged ids.
    assert len(result.topic_values) == 2
    for value in result.topic_values:
        members = topics.decode(value).peer_ids()
        assert {a_id, b_id} <= members
        assert len(members & result.liar_ids) <= PER_SOURCE
        assert all(topics.verify_entry(TOPIC, e) for e in topics.decode(value).entries.values())

    # Discovery rounds after the attack still find the honest peer (its last_seen moves on).
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started + 2))
    for client, other in ((a, b_id), (b, a_id)):
        wait_until(lambda c=client, o=other: last_seen(c, o) > before, 30,
                   "the honest peer seen again after the attack")
        shown = listed(client)
        assert other in shown and not shown & result.liar_ids
        for liar in list(result.liar_ids)[:3]:
            resp = client.get(f"/api/peers/{liar}/capabilities")
            assert resp.status_code == 200
            assert resp.json() == {"peer_id": liar, "error": PEER_NOT_FOUND}
    assert a.get("/api/node/status").json()["known_peers"] == 1
