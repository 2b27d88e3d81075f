"""Workflows whose nodes run on other peers: real node processes on 127.0.0.1, real QUIC, real
Docker and real processes. Only the orchestrating node A runs Prefect; B and C only execute."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.node_process import ApiClient, NodeProcess, side_by_side
from tests.support.processes import sleeper, sleeping
from tests.support.upload_client import UploadSocket
from tests.support.waiting import wait_for_peers, wait_until
from tests.support.workflows import (
    TERMINAL,
    execute,
    interface_ids,
    jobs_by_node,
    make_workflow,
    sh_service,
    wait_done,
)

pytestmark = pytest.mark.timeout(300)

WAIT = 180.0  # Prefect starting beside A on a loaded 2-core machine
FAST = {"RN_DHT_REFRESH_SECONDS": "1"}  # the peers find each other in seconds
NO_PREFECT = {**FAST, "RN_PREFECT_WARMUP": "false"}


class Mesh:
    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes
        self.clients = [n.client() for n in nodes]
        self.peer_ids = [c.get("/api/node/status").json()["peer_id"] for c in self.clients]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A orchestrates (with Prefect); B and C bootstrap from A and only execute jobs."""
    root: Path = tmp_path_factory.mktemp("remote-mesh")
    a = NodeProcess(root / "a", env=FAST)
    others = [NodeProcess(root / name, env=NO_PREFECT,
                          extra_args=["--bootstrap", f"127.0.0.1:{a.dht_port}"])
              for name in ("b", "c")]
    m: Mesh | None = None
    try:
        side_by_side([a, *others], "start")
        m = Mesh([a, *others])
        for i, client in enumerate(m.clients):
            wait_for_peers(client, set(m.peer_ids) - {m.peer_ids[i]})
        yield m
    finally:
        if m is not None:
            for c in m.clients:
                c.close()
        side_by_side([a, *others], "stop")


# -- helpers ------------------------------------------------------------------------------------
def outputs(c: ApiClient, job_id: int) -> dict[str, dict[str, Any]]:
    items = c.get(f"/api/job-executions/{job_id}/interfaces").json()["interfaces"]
    return {i["interface_type"]: i for i in items if i["direction"] == "output"}


def job_rows(node: NodeProcess) -> list[dict[str, Any]]:
    """The job records of a node that only executes (no workflow of its own lists them)."""
    with contextlib.closing(sqlite3.connect(node.data_dir / "node.db")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM job_executions ORDER BY id")]


@contextlib.contextmanager
def websocket(client: ApiClient) -> Iterator[Any]:
    with client.websocket() as ws:
        yield ws


def drain(ws: Any, *, limit: float = 2.0) -> list[dict[str, Any]]:
    messages = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            messages.append(json.loads(ws.recv(timeout=max(deadline - time.monotonic(),
                                                           0.05))))
        except TimeoutError:
            break
    return messages


# -- tests --------------------------------------------------------------------------------------
@pytest.mark.docker
def test_workflow_across_three_peers(mesh: Mesh, registry: Any) -> None:
    """A's source -> B's Docker stage -> C's standalone stage -> the result on A."""
    a, b, c = mesh.clients
    pa, pb, pc = mesh.peer_ids
    src = sh_service(a, "mesh-source", "printf 'hello mesh\\n'")
    image, _, tag = registry.image.rpartition(":")
    r = b.post("/api/services/docker/from-registry", json={
        "service_name": "mesh-upper", "image_name": image, "image_tag": tag or "latest",
        "custom_interfaces": [{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}]})
    assert r.status_code in (200, 201, 202), r.text
    upper = int(r.json()["service"]["id"])
    upper_if = interface_ids(b, upper)
    rev = sh_service(c, "mesh-rev", "rev; echo rev-done >&2")
    wf, ids = make_workflow(
        a, "across-peers",
        [(src[0], {}, pa), (upper, {"cmd": ["tr", "a-z", "A-Z"]}, pb), (rev[0], {}, pc)],
        [(0, src[1]["STDOUT"], 1, upper_if["STDIN"]),
         (1, upper_if["STDOUT"], 2, rev[1]["STDIN"])])

    with websocket(a) as ws:
        eid = execute(a, wf)
        status = wait_done(a, eid)
        events = drain(ws)
    jobs = jobs_by_node(a, eid)
    assert status["status"] == "COMPLETED", (status, jobs)
    final = outputs(a, jobs[ids[2]]["id"])["STDOUT"]
    assert final["value"] == "HSEM OLLEH\n"  # fetched back to A, byte for byte
    assert [jobs[i]["peer_id"] for i in ids] == [pa, pb, pc]

    logs = [e["payload"] for e in events if e["type"] == "JOB_LOG"]
    # C's log line reached A's WebSocket, as a JOB_LOG of A's job for that node.
    assert any(p["job_id"] == jobs[ids[2]]["id"] and p["line"] == "rev-done" for p in logs), logs

    for node, service in ((mesh.nodes[1], upper), (mesh.nodes[2], rev[0])):
        rows = [r for r in job_rows(node) if r["service_id"] == service]
        assert [(r["requester_peer_id"], r["status"]) for r in rows] == [(pa, "COMPLETED")]
    # Every job is keyed where it ran, and the requester shows the key the executor told it.
    keys = [jobs[i]["job_key"] for i in ids]
    assert all(k.startswith("sha256:") for k in keys) and len(set(keys)) == 3
    assert [r["job_key"] for r in job_rows(mesh.nodes[1]) if r["service_id"] == upper] \
        == [keys[1]]


def upload_data(client: ApiClient, data: bytes, name: str) -> int:
    """A DATA service of ``data`` on the node of ``client`` (a WebSocket upload)."""

    async def upload() -> dict[str, Any]:
        async with UploadSocket(client) as ws:
            return await ws.upload(data, file_name=name, upload_type="data")

    done = asyncio.run(upload())
    assert done["type"] == "FILE_UPLOAD_COMPLETE", done
    return int(done["payload"]["service_id"])


def stored(node: NodeProcess, digest: str) -> bool:
    return (node.data_dir / "artifacts" / digest[:2] / digest).exists()


def test_outputs_connected_to_the_local_peer_are_delivered_here(mesh: Mesh) -> None:
    """The original web UI's editor: B's output feeds C and also goes to the requesting node
    ("Local Peer", ``to_node_id: null``) as b.txt; C's output goes there as final.txt. Every
    end is named by type only, as the UI names them."""
    a, b, c = mesh.clients
    _pa, pb, pc = mesh.peer_ids
    src = sh_service(b, "local-peer-src", "printf 'from b\\n'")
    rev = sh_service(c, "local-peer-rev", "rev")
    wf = a.post("/api/workflows", json={"name": "to-local-peer"}).json()["id"]
    first, second = (a.post(f"/api/workflows/{wf}/nodes", json={
        "service_id": sid, "peer_id": peer, "service_type": "STANDALONE", "gui_x": 10,
        "gui_y": 20}).json()["id"] for sid, peer in ((src[0], pb), (rev[0], pc)))
    for body in ({"from_node_id": first, "from_interface_type": "STDOUT",
                  "to_node_id": second, "to_interface_type": "STDIN"},
                 {"from_node_id": first, "from_interface_type": "STDOUT", "to_node_id": None,
                  "to_interface_type": "STDIN", "destination_file_name": "b.txt"},
                 {"from_node_id": second, "from_interface_type": "STDOUT", "to_node_id": None,
                  "to_interface_type": "STDIN", "destination_file_name": "final.txt"}):
        r = a.post(f"/api/workflows/{wf}/connections", json=body)
        assert r.status_code == 201 and r.json()["connection"]["id"] == r.json()["id"], r.text

    eid = execute(a, wf)
    status = wait_done(a, eid)
    assert status["status"] == "COMPLETED", status
    results = {r["file_name"]: r for r in status["results"]}
    assert set(results) == {"b.txt", "final.txt"}
    for name, expected in (("b.txt", b"from b\n"), ("final.txt", b"b morf\n")):
        result = results[name]
        assert (result["interface_type"], result["size"]) == ("STDOUT", len(expected))
        assert result["artifact_hash"] == hashlib.sha256(expected).hexdigest()
        body = a.get(f"/api/job-executions/{result['job_execution_id']}/interfaces/"
                     f"{result['interface_id']}/content")
        # Here, on the requesting node, byte for byte, under the name the connection gave.
        assert body.status_code == 200 and body.content == expected
        assert f'filename="{name}"' in body.headers["content-disposition"]
    by_node = {r["node_id"]: r for r in status["results"]}
    assert by_node[first]["file_name"] == "b.txt" and by_node[second]["file_name"] == "final.txt"


def test_data_services_feed_jobs_on_other_peers(mesh: Mesh) -> None:
    """A's DATA service feeds a job on C: A decrypts it for that job alone (its clear bytes are
    not left in A's store). B's DATA service is a node of A's workflow: B decrypts it and
    answers with the clear bytes, which feed a job on A. The encrypted files never move."""
    a, b, c = mesh.clients
    pa, pb, pc = mesh.peer_ids
    mine, theirs = os.urandom(150_000), os.urandom(90_000)
    data_a, data_b = upload_data(a, mine, "a.bin"), upload_data(b, theirs, "b.bin")
    # A DATA service is private unless its owner says otherwise: B admits A to its own.
    r = b.put(f"/api/services/{data_b}", json={"access": "peers", "allowed_peers": [pa]})
    assert r.status_code == 200 and r.json()["service"]["access"] == "peers", r.text
    digest = "sha256sum | cut -d' ' -f1"
    on_c, on_a = sh_service(c, "digest-on-c", digest), sh_service(a, "digest-on-a", digest)
    out_a, out_b = interface_ids(a, data_a), interface_ids(b, data_b)
    wf, ids = make_workflow(
        a, "data-across-peers",
        [(data_a, {}, pa), (on_c[0], {}, pc), (data_b, {}, pb), (on_a[0], {}, pa)],
        [(0, next(iter(out_a.values())), 1, on_c[1]["STDIN"]),
         (2, next(iter(out_b.values())), 3, on_a[1]["STDIN"])])
    eid = execute(a, wf)
    status = wait_done(a, eid, WAIT)
    jobs = jobs_by_node(a, eid)
    assert status["status"] == "COMPLETED", (status, jobs)
    clear_a, clear_b = hashlib.sha256(mine).hexdigest(), hashlib.sha256(theirs).hexdigest()
    assert outputs(a, jobs[ids[1]]["id"])["STDOUT"]["value"].strip() == clear_a
    assert outputs(a, jobs[ids[3]]["id"])["STDOUT"]["value"].strip() == clear_b
    assert not stored(mesh.nodes[0], clear_a)  # released once C's job had ended
    # C names A's clear bytes in no record of its own (its retention sweep then removes them).
    with contextlib.closing(sqlite3.connect(mesh.nodes[2].data_dir / "node.db")) as db:
        named = {row[0] for row in db.execute(
            "SELECT artifact_hash FROM job_execution_interfaces WHERE direction = 'input'")}
    assert clear_a not in named
    for node, data_id in ((mesh.nodes[0], data_a), (mesh.nodes[1], data_b)):
        sealed = (node.data_dir / "services" / str(data_id) / "data.enc").read_bytes()
        assert not stored(mesh.nodes[2], hashlib.sha256(sealed).hexdigest())


def test_killed_executing_peer_fails_its_job_naming_it(mesh: Mesh, tmp_path: Path) -> None:
    a = mesh.clients[0]
    pa = mesh.peer_ids[0]
    d = NodeProcess(tmp_path / "d", env=NO_PREFECT,
                    extra_args=["--bootstrap", f"127.0.0.1:{mesh.nodes[0].dht_port}"])
    duration = sleeper()
    try:
        d.start()
        dc = d.client()
        pd = dc.get("/api/node/status").json()["peer_id"]
        wait_for_peers(a, {pd})
        wait_for_peers(dc, {pa})
        sid, _ = sh_service(dc, "sleeper", f"exec sleep {duration}")
        dc.close()
        wf, ids = make_workflow(a, "dies-midway", [(sid, {"retry_count": 0}, pd)], [])
        eid = execute(a, wf)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not sleeping(duration):
            assert a.get(f"/api/workflow-executions/{eid}/status").json()["status"] \
                not in TERMINAL
            time.sleep(0.2)
        assert sleeping(duration)
        d.kill()
        status = wait_done(a, eid, timeout=60)  # far below the job's 300 s timeout
        job = jobs_by_node(a, eid)[ids[0]]
        assert status["status"] == "FAILED"
        assert job["status"] == "FAILED" and pd in job["error"], job
        assert pd in status["error"]
        # The job's sandbox dies with its node: nothing of it is left running.
        wait_until(lambda: not sleeping(duration), 20, "the job's processes to end")
    finally:
        d.stop()
        for pid in sleeping(duration):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_cancelling_an_execution_stops_its_remote_job(mesh: Mesh, tmp_path: Path) -> None:
    a, b, _ = mesh.clients
    pb = mesh.peer_ids[1]
    duration = sleeper()
    sid, _ = sh_service(b, "cancel-me", f"exec sleep {duration}")
    wf, _ = make_workflow(a, "cancelled-remotely", [(sid, {}, pb)], [])
    eid = execute(a, wf)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not sleeping(duration):
        time.sleep(0.2)
    pids = sleeping(duration)
    assert len(pids) == 1, pids
    pid = pids[0]
    try:
        r = a.post(f"/api/workflow-executions/{eid}/cancel")
        assert r.status_code == 200, r.text
        assert wait_done(a, eid)["status"] == "CANCELLED"
        deadline = time.monotonic() + 30
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [row for row in job_rows(mesh.nodes[1]) if row["service_id"] == sid]
            if rows and rows[0]["status"] in TERMINAL:
                break
            time.sleep(0.2)
        assert [row["status"] for row in rows] == ["CANCELLED"]
        with pytest.raises(ProcessLookupError):  # the process on B is gone
            os.kill(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_blacklisted_requester_is_refused(mesh: Mesh) -> None:
    a, b, _ = mesh.clients
    pa, pb, _ = mesh.peer_ids
    sid, _ = sh_service(b, "refuses-a", "cat")
    wf, ids = make_workflow(a, "refused", [(sid, {}, pb)], [])
    r = b.post("/api/blacklist", json={"peer_id": pa, "reason": "test"})
    assert r.status_code in (200, 201), r.text
    try:
        eid = execute(a, wf)
        status = wait_done(a, eid)
        job = jobs_by_node(a, eid)[ids[0]]
        assert status["status"] == "FAILED"
        assert job["status"] == "FAILED" and pb in job["error"], job
        assert not [row for row in job_rows(mesh.nodes[1]) if row["service_id"] == sid]
    finally:
        assert b.delete(f"/api/blacklist/{pa}").status_code == 200

