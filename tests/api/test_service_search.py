"""Service search and peer capabilities over QUIC between real node processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.support.node_process import ApiClient, NodeProcess, side_by_side
from tests.support.waiting import wait_for_peers

pytestmark = pytest.mark.timeout(240)


class Mesh:
    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes
        self.clients = [n.client() for n in nodes]
        self.peer_ids = [c.get("/api/node/status").json()["peer_id"] for c in self.clients]






@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Three nodes: A starts the network, B and C bootstrap from A."""
    root: Path = tmp_path_factory.mktemp("search-mesh")
    # Converge in seconds, not the default half minute; no workflows here, so no Prefect.
    env = {"RN_DHT_REFRESH_SECONDS": "1", "RN_PREFECT_WARMUP": "false"}
    a = NodeProcess(root / "a", env=env)
    others = [NodeProcess(root / name, env=env,
                          extra_args=["--bootstrap", f"127.0.0.1:{a.dht_port}"])
              for name in ("b", "c")]
    m: Mesh | None = None
    try:
        side_by_side([a, *others], "start")  # B and C retry the bootstrap until A answers
        m = Mesh([a, *others])
        wait_for_peers(m.clients[0], set(m.peer_ids[1:]))
        yield m
    finally:
        if m is not None:
            for c in m.clients:
                c.close()
        side_by_side([a, *others], "stop")


def _add_service(client: ApiClient, name: str, kind: str, *, status: str = "available",
                 description: str = "") -> int:
    resp = client.post("/api/services", json={"type": kind, "name": name, "status": status,
                                              "description": description,
                                              "endpoint": "local"})
    assert resp.status_code in (200, 201), resp.text
    return int(resp.json()["service"]["id"])


@contextlib.contextmanager
def _ws(client: ApiClient) -> Iterator[ClientConnection]:
    with client.websocket() as ws:
        yield ws


def _collect(ws: ClientConnection, until: str, *, limit: float = 30.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            msg = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        except TimeoutError:
            break
        messages.append(msg)
        if msg["type"] == until:
            return messages
    raise AssertionError(f"no {until} within {limit}s; got {[m['type'] for m in messages]}")


def _search(client: ApiClient, payload: dict[str, Any]) -> tuple[list[dict[str, Any]],
                                                                 dict[str, Any]]:
    with _ws(client) as ws:
        ws.send(json.dumps({"type": "SERVICE_SEARCH", "payload": payload}))
        messages = _collect(ws, "SERVICE_SEARCH_COMPLETE")
    results = [m["payload"] for m in messages if m["type"] == "SERVICE_SEARCH_RESULT"]
    return results, messages[-1]["payload"]


def test_search_streams_active_services_of_every_peer(mesh: Mesh) -> None:
    a, b, c = mesh.clients
    _, pb, pc = mesh.peer_ids
    b_id = _add_service(b, "search-resize-b", "docker", description="resizes images")
    _add_service(b, "search-hidden-b", "docker", status="unavailable")
    c_id = _add_service(c, "search-resize-c", "standalone")
    _add_service(a, "search-resize-a", "docker")  # our own: not a remote result

    results, done = _search(a, {"query": "search-", "search_id": "s1"})
    got = {(r["peer_id"], r["name"]) for r in results}
    assert got == {(pb, "search-resize-b"), (pc, "search-resize-c")}
    by_name = {r["name"]: r for r in results}
    rb = by_name["search-resize-b"]
    assert rb["service_id"] == b_id and rb["service_type"] == "DOCKER"
    assert rb["description"] == "resizes images"
    assert rb["pricing"] == {"amount": 0.0, "type": "FREE", "interval": "", "unit": ""}
    assert isinstance(rb["interfaces"], list)
    assert by_name["search-resize-c"]["service_id"] == c_id
    # Each result names the content its peer shows for that service.
    assert rb["content_digest"] == b.get(f"/api/services/{b_id}").json()["service"][
        "content_digest"]
    assert all(r["search_id"] == "s1" for r in results)
    assert done["search_id"] == "s1"
    assert done["peers_asked"] == 2 and done["peers_answered"] == 2
    assert done["errors"] == [] and done["results"] == 2

    # Filters: service type, query text, and the peer filter.
    results, _ = _search(a, {"query": "search-", "service_type": "STANDALONE"})
    assert [(r["peer_id"], r["name"]) for r in results] == [(pc, "search-resize-c")]
    results, _ = _search(a, {"query": "IMAGES"})
    assert [r["name"] for r in results] == ["search-resize-b"]
    results, done = _search(a, {"query": "search-", "peer_ids": [pc]})
    assert [r["peer_id"] for r in results] == [pc] and done["peers_asked"] == 1

    status = a.get("/api/node/status").json()
    assert status["stats"]["active_connections"] >= 2

    # The original web UI's search: its request, its streamed responses, its service shape.
    with _ws(a) as ws:
        ws.send(json.dumps({"type": "service.search.request", "payload": {
            "query": "search-", "service_type": "DOCKER,STANDALONE", "peer_ids": [],
            "active_only": True}}))
        messages = []
        while not (messages and messages[-1]["type"] == "service.search.response"
                   and messages[-1]["payload"].get("complete")):
            messages += [m for m in _collect(ws, "service.search.response")
                         if m["type"] == "service.search.response"]
    assert messages[-1]["payload"]["services"] == []
    found = [svc for m in messages for svc in m["payload"]["services"]]
    assert {(svc["peer_id"], svc["name"]) for svc in found} == {
        (pb, "search-resize-b"), (pc, "search-resize-c")}
    rb = next(svc for svc in found if svc["name"] == "search-resize-b")
    assert (rb["id"], rb["service_type"], rb["pricing_type"], rb["status"]) == (
        b_id, "DOCKER", "FREE", "ACTIVE")
    assert isinstance(rb["interfaces"], list) and all(
        m["payload"]["complete"] is False for m in messages[:-1])
    with _ws(a) as ws:  # one type: only that type
        ws.send(json.dumps({"type": "service.search.request", "payload": {
            "query": "search-", "service_type": "STANDALONE", "peer_ids": []}}))
        got: list[dict[str, Any]] = []
        while not (got and got[-1]["payload"].get("complete")):
            got += [m for m in _collect(ws, "service.search.response")
                    if m["type"] == "service.search.response"]
    assert [svc["name"] for m in got for svc in m["payload"]["services"]] == ["search-resize-c"]
    # The editor's panel names this node among the peers: its own services come too.
    pa = mesh.peer_ids[0]
    with _ws(a) as ws:
        ws.send(json.dumps({"type": "service.search.request", "payload": {
            "query": "search-resize", "service_type": "", "peer_ids": [pa, pc]}}))
        got = []
        while not (got and got[-1]["payload"].get("complete")):
            got += [m for m in _collect(ws, "service.search.response")
                    if m["type"] == "service.search.response"]
    assert {(svc["peer_id"], svc["name"]) for m in got for svc in m["payload"]["services"]} \
        == {(pa, "search-resize-a"), (pc, "search-resize-c")}


def test_bad_search_payload_is_an_error_message(mesh: Mesh) -> None:
    with _ws(mesh.clients[0]) as ws:
        ws.send(json.dumps({"type": "SERVICE_SEARCH", "payload": {"service_type": "boat"}}))
        [msg] = _collect(ws, "ERROR")
    assert msg["payload"]["request_type"] == "SERVICE_SEARCH"
    assert "Unknown service_type 'boat'" in msg["payload"]["error"]


def test_full_capabilities_arrive_over_quic(mesh: Mesh) -> None:
    a = mesh.clients[0]
    pb = mesh.peer_ids[1]
    with _ws(a) as ws:
        resp = a.get(f"/api/peers/{pb}/capabilities")
        assert resp.status_code == 200
        assert resp.json()["peer_id"] == pb
        messages = _collect(ws, "PEER_CAPABILITIES_UPDATED")
    payload = messages[-1]["payload"]
    assert payload["peer_id"] == pb
    caps = payload["capabilities"]
    assert caps["kernel_version"] and caps["cpu_threads"] > 0 and "gpus" in caps


def test_a_peer_that_never_answers_costs_its_timeout_and_is_reported(mesh: Mesh) -> None:
    a = mesh.clients[0]
    _, pb, pc = mesh.peer_ids
    frozen = mesh.nodes[2]
    # Make sure a knows c over QUIC, then freeze c: it neither answers nor closes.
    _search(a, {"query": "nothing-matches"})
    frozen.signal(signal.SIGSTOP)
    try:
        with _ws(a) as ws:
            ws.send(json.dumps({"type": "SERVICE_SEARCH",
                                "payload": {"query": "search-resize", "timeout": 1.5}}))
            # The socket keeps answering while the search waits on the frozen peer.
            ws.send("not json")
            messages = _collect(ws, "SERVICE_SEARCH_COMPLETE")
    finally:
        frozen.signal(signal.SIGCONT)
    kinds = [m["type"] for m in messages]
    assert "ERROR" in kinds and kinds.index("ERROR") < kinds.index("SERVICE_SEARCH_COMPLETE")
    results = [m["payload"] for m in messages if m["type"] == "SERVICE_SEARCH_RESULT"]
    done = messages[-1]["payload"]
    assert {r["peer_id"] for r in results} == {pb}
    assert done["peers_asked"] == 2 and done["peers_answered"] == 1
    [error] = done["errors"]
    assert error["peer_id"] == pc and "within 1.5s" in error["error"]


def test_blacklisting_a_peer_drops_it_and_refuses_it(mesh: Mesh) -> None:
    a, b, _ = mesh.clients
    pa, pb, pc = mesh.peer_ids
    _search(b, {"query": "search-", "peer_ids": [pa]})  # b holds a connection to a
    def listed(c: ApiClient) -> set[str]:
        return {p["peer_id"] for p in c.get("/api/peers").json()["peers"]}

    assert pb in listed(a)
    resp = a.post("/api/blacklist", json={"peer_id": pb, "reason": "search test"})
    assert resp.status_code in (200, 201), resp.text
    try:
        assert listed(a) == {pc}  # a blacklisted peer is no longer listed
        _, done = _search(b, {"query": "search-", "peer_ids": [pa], "timeout": 5})
        assert done["peers_answered"] == 0
        [error] = done["errors"]
        assert error["peer_id"] == pa and "blacklisted" in error["error"]
        # a no longer asks b.
        _, done = _search(a, {"query": "search-"})
        assert done["peers_asked"] == 1 and done["errors"] == []
    finally:
        a.delete(f"/api/blacklist/{pb}")
    assert pb in listed(a)
    # Lifted: b is served again.
    results, done = _search(b, {"query": "search-resize-a", "peer_ids": [pa]})
    assert [(r["peer_id"], r["name"]) for r in results] == [(pa, "search-resize-a")]
    assert pc not in {r["peer_id"] for r in results}
