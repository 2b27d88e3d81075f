"""Discovery between real node processes on 127.0.0.1, seen through the peers API.

Three nodes (B and C bootstrap from A) with short DHT intervals; the test process joins the
same DHT with an in-process node of its own to publish a genuine and a forged record.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kademlia.utils import digest
from websockets.sync.client import ClientConnection

from network import topic as topics
from network.dht import DhtConfig, DhtNode, LocalFacts
from network.identity import Identity, decode_key_file
from network.records import MAGIC, PeerRecord, encode_record
from orchestrator.discovery import NO_CAPABILITIES, PEER_NOT_FOUND
from tests.support.node_process import ApiClient, NodeProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

TOPIC = "remote-network-mesh"
STALE = 4.0
FAST = {"RN_DHT_REFRESH_SECONDS": "1", "RN_PEER_STALE_SECONDS": str(STALE),
        "RN_DHT_RPC_TIMEOUT": "0.5", "RN_PREFECT_WARMUP": "false"}
PEER_FIELDS = {"peer_id", "dht_node_id", "is_relay", "is_store", "files_count", "apps_count",
               "last_seen", "topic", "source", "is_behind_nat", "nat_type", "using_relay",
               "connected_relay_id",
               # Beside the reference's fields: what it offers, by content digest.
               "service_digests"}
T = TypeVar("T")


@dataclass
class Trio:
    nodes: list[NodeProcess]
    clients: list[ApiClient]
    peer_ids: list[str]
    dht_ids: list[str]


def login(node: NodeProcess) -> ApiClient:
    """A client signing with the node's own key, read with the node's own key loader."""
    seed = decode_key_file((node.data_dir / "identity.key").read_bytes(), None).seed
    return node.client(seed=seed)


def listed(client: ApiClient) -> dict[str, dict[str, Any]]:
    resp = client.get("/api/peers")
    assert resp.status_code == 200
    body = resp.json()
    assert body["total"] == len(body["peers"])
    return {p["peer_id"]: p for p in body["peers"]}




@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    root: Path = tmp_path_factory.mktemp("peers")
    a = NodeProcess(root / "a", env=FAST)
    nodes = [a]
    clients: list[ApiClient] = []
    try:
        a.start()
        for name in ("b", "c"):
            node = NodeProcess(root / name, env=FAST,
                               extra_args=["--bootstrap", f"127.0.0.1:{a.dht_port}"])
            nodes.append(node)
            node.start()
        clients = [login(n) for n in nodes]
        statuses = [c.get("/api/node/status").json() for c in clients]
        yield Trio(nodes, clients, [s["peer_id"] for s in statuses],
                   [s["dht_node_id"] for s in statuses])
    finally:
        for c in clients:
            c.close()
        for n in nodes:
            n.stop()


class ThreadedLoop:
    """An event loop in a thread, for in-process DHT nodes beside the blocking test client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def side_loop() -> Iterator[ThreadedLoop]:
    loop = ThreadedLoop()
    try:
        yield loop
    finally:
        loop.close()


def test_each_node_lists_the_other_two(trio: Trio) -> None:
    for i, client in enumerate(trio.clients):
        others = set(trio.peer_ids) - {trio.peer_ids[i]}
        wait_until(lambda c=client, o=others: set(listed(c)) == o, 30,
                   f"node {i} listing the other two")
        for pid, row in listed(client).items():
            j = trio.peer_ids.index(pid)
            assert set(row) == PEER_FIELDS
            assert row["dht_node_id"] == trio.dht_ids[j]
            assert row["topic"] == TOPIC and row["source"] == "dht"
            assert row["is_store"] is True and row["is_relay"] is False
            assert row["is_behind_nat"] is False and row["nat_type"] == ""
            assert row["using_relay"] is False and row["connected_relay_id"] == ""
            assert row["files_count"] >= 0 and row["apps_count"] >= 0
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["last_seen"])
        status = client.get("/api/node/status").json()
        assert status["known_peers"] == 2
        assert re.fullmatch(r"[0-9a-f]{40}", status["dht_node_id"])
        assert status["stats"]["dht_node_id"] == status["dht_node_id"]


def test_service_change_is_republished(trio: Trio) -> None:
    a, b, c = trio.clients
    b_id = trio.peer_ids[1]
    before = listed(a)[b_id]["apps_count"]
    resp = b.post("/api/services", json={"type": "DOCKER", "name": "peers-test-app",
                                         "endpoint": "local", "status": "available"})
    assert resp.status_code == 201, resp.text
    expected = b.get("/api/node/status").json()["apps_count"]
    assert expected == before + 1
    for client in (a, c):
        wait_until(lambda cl=client: listed(cl)[b_id]["apps_count"] == expected, 20,
                   "the new service count reaching the other nodes")


def test_peer_capabilities_from_the_dht_summary(trio: Trio) -> None:
    a, b = trio.clients[0], trio.clients[1]
    b_id = trio.peer_ids[1]
    wait_until(lambda: b_id in listed(a), 30, "B listed on A")
    resp = a.get(f"/api/peers/{b_id.upper()}/capabilities")
    assert resp.status_code == 200
    body = resp.json()
    assert body["peer_id"] == b_id and "error" not in body
    own = b.get("/api/node/capabilities").json()["system"]
    caps = body["capabilities"]
    assert set(caps) == set(own)
    for key in ("platform", "architecture", "cpu_cores", "total_memory_mb", "has_docker"):
        assert caps[key] == own[key], key
    assert len(caps["gpus"]) == len(own["gpus"])

    unknown = "0" * 40
    resp = a.get(f"/api/peers/{unknown}/capabilities")
    assert resp.status_code == 200
    assert resp.json() == {"peer_id": unknown, "error": PEER_NOT_FOUND}

    for bad in ("xyz", "g" * 40, "a" * 39):
        resp = a.get(f"/api/peers/{bad}/capabilities")
        assert resp.status_code == 400 and resp.json() == {"error": "Invalid peer ID"}
    resp = a.get("/api/peers//capabilities")
    assert resp.status_code == 400 and "error" in resp.json()
    resp = a.http.get(f"/api/peers/{b_id}/capabilities", headers={"Authorization": ""})
    assert resp.status_code == 401
    assert a.post("/api/peers").status_code == 405


def _ws(client: ApiClient) -> ClientConnection:
    return client.websocket()


def _await_event(ws: ClientConnection, type_: str, peer_id: str, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            msg = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        except TimeoutError:
            break
        if msg["type"] == type_ and msg["payload"].get("peer_id") == peer_id:
            return msg["payload"]  # type: ignore[no-any-return]
    raise AssertionError(f"no {type_} for {peer_id[:8]} within {limit}s")


def test_forged_record_is_ignored_and_a_genuine_one_announced(
        trio: Trio, side_loop: ThreadedLoop) -> None:
    a = trio.clients[0]
    seeds = [("127.0.0.1", n.dht_port) for n in trio.nodes]
    genuine = Identity.generate()
    victim, forger = Identity.generate(), Identity.generate()

    async def no_facts() -> LocalFacts:
        return LocalFacts(quic_addresses=(("127.0.0.1", 9),))  # no capability summary

    config = DhtConfig(host="127.0.0.1", port=0, topic=TOPIC, bootstrap=(seeds[0],),
                       rpc_timeout=0.5, refresh_interval=1.0)
    member = DhtNode(genuine, config, facts=no_facts, on_record=lambda r: None)

    async def forge() -> None:
        # The victim's record, signed by someone else, stored straight into every node's
        # DHT storage, and the victim's own announcement in the topic.
        record = PeerRecord(peer_id=victim.peer_id, public_key=victim.public_key_hex,
                            seq=int(time.time() * 1000), timestamp=time.time(), topic=TOPIC)
        body = encode_record(record, victim)[len(MAGIC) + 64:]
        forged = MAGIC + forger.sign(body) + body
        members = topics.encode(topics.announcement(victim, TOPIC, time.time()))
        assert member.server is not None
        proto = member.server.protocol
        for host, port in seeds:
            assert await proto.store((host, port), member.node_id, digest(victim.peer_id),
                                     forged) == (True, False)
            assert (await proto.store((host, port), member.node_id, digest(TOPIC), members))[0]

    with _ws(a) as ws:
        side_loop.run(member.start())
        try:
            payload = _await_event(ws, "PEER_UPDATED", genuine.peer_id, 30)
            assert payload["action"] == "added"
            side_loop.run(forge())
            for client in trio.clients:
                wait_until(lambda cl=client: genuine.peer_id in listed(cl), 30,
                           "the genuine in-process peer listed")
            # Several discovery rounds later, the forged peer is still nowhere.
            time.sleep(3)
            for client in trio.clients:
                assert victim.peer_id not in listed(client)
            resp = a.get(f"/api/peers/{genuine.peer_id}/capabilities")
            assert resp.json() == {"peer_id": genuine.peer_id, "error": NO_CAPABILITIES}
        finally:
            side_loop.run(member.stop())
    # It announced its departure on the way out.
    wait_until(lambda: genuine.peer_id not in listed(a), 10, "the departed peer dropped")


def test_killed_node_disappears(trio: Trio) -> None:
    a, b, _ = trio.clients
    c_id = trio.peer_ids[2]
    wait_until(lambda: c_id in listed(a) and c_id in listed(b), 30, "C listed")
    trio.nodes[2].kill()
    for client in (a, b):
        wait_until(lambda cl=client: c_id not in listed(cl), STALE + 15,
                   "the killed node dropped")
    assert a.get("/api/node/status").json()["known_peers"] == 1
