"""Results you can trust and reuse, across real node processes on 127.0.0.1: signed receipts,
resume, the result cache (this node's records and the DHT's provider records), placement by
content digest with failover, and the placement preview.

A orchestrates (its own Prefect server, whose API the test reads); D is a second requester
using A's Prefect server; B and C only execute.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import http.server
import itertools
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from tests.support.node_process import ApiClient, NodeProcess, free_port, side_by_side
from tests.support.waiting import wait_for_peers, wait_until
from tests.support.workflows import execute, jobs_by_node, wait_done

pytestmark = pytest.mark.timeout(400)

FAST = {"RN_DHT_REFRESH_SECONDS": "1"}
NO_PREFECT = {**FAST, "RN_PREFECT_WARMUP": "false"}
REPO = Path(__file__).resolve().parents[2]


class Mesh:
    def __init__(self, nodes: list[NodeProcess], prefect_url: str) -> None:
        self.nodes = nodes
        self.clients = [n.client() for n in nodes]
        self.peer_ids = [c.get("/api/node/status").json()["peer_id"] for c in self.clients]
        self.prefect_url = prefect_url


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root: Path = tmp_path_factory.mktemp("trusted-mesh")
    port = free_port()
    a = NodeProcess(root / "a", env=FAST, extra_args=["--prefect-ui", "--prefect-port",
                                                      str(port)])
    a.start(wait=240)
    boot = ["--bootstrap", f"127.0.0.1:{a.dht_port}"]
    b, c = (NodeProcess(root / n, env=NO_PREFECT, extra_args=boot) for n in ("b", "c"))
    d = NodeProcess(root / "d", extra_args=boot,
                    env={**NO_PREFECT, "RN_PREFECT_API_URL": f"http://127.0.0.1:{port}/api"})
    nodes = [a, b, c, d]
    m: Mesh | None = None
    try:
        side_by_side([b, c, d], "start")
        m = Mesh(nodes, f"http://127.0.0.1:{port}")
        for i, client in enumerate(m.clients):
            wait_for_peers(client, set(m.peer_ids) - {m.peer_ids[i]})
        yield m
    finally:
        if m is not None:
            for client in m.clients:
                client.close()
        side_by_side(nodes, "stop")


@pytest.fixture
def hits() -> Iterator[tuple[str, list[str]]]:
    """An HTTP endpoint on 127.0.0.1 that counts the requests it gets (a job's runs)."""
    seen: list[str] = []

    class Count(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Count)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- helpers ------------------------------------------------------------------------------------
def service(c: ApiClient, name: str, script: str, *, cwd: Path | None = None) -> int:
    body: dict[str, Any] = {
        "service_name": name, "executable_path": "/bin/sh", "arguments": ["-c", script],
        "custom_interfaces": [{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}]}
    if cwd is not None:
        body["working_directory"] = str(cwd)
    r = c.post("/api/services/standalone/from-local", json=body)
    assert r.status_code in (200, 201), r.text
    return int(r.json()["service"]["id"])


Node = tuple[int, dict[str, Any], str]  # service id (0: placed by digest), config, peer id


def chain(c: ApiClient, name: str, nodes: list[Node]) -> tuple[int, list[int]]:
    """A workflow of ``nodes`` in a line, STDOUT -> STDIN, every end named by type."""
    wf = c.post("/api/workflows", json={"name": name}).json()["id"]
    ids = []
    for sid, config, peer in nodes:
        body: dict[str, Any] = {"config": config, "peer_id": peer}
        if sid:
            body["service_id"] = sid
        r = c.post(f"/api/workflows/{wf}/nodes", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for first, second in itertools.pairwise(ids):
        r = c.post(f"/api/workflows/{wf}/connections", json={
            "source_node_id": first, "source_interface_type": "STDOUT",
            "target_node_id": second, "target_interface_type": "STDIN"})
        assert r.status_code == 201, r.text
    return wf, ids


def runs_of(node: NodeProcess, service_id: int) -> list[dict[str, Any]]:
    """The jobs a node ran of one of its services (each one a process that ran)."""
    with contextlib.closing(sqlite3.connect(node.data_dir / "node.db")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(
            "SELECT * FROM job_executions WHERE service_id = ? AND workflow_execution_id IS NULL"
            " ORDER BY id", (service_id,))]


def stdout_of(c: ApiClient, job_id: int) -> str:
    items = c.get(f"/api/job-executions/{job_id}/interfaces").json()["interfaces"]
    out = [i for i in items if i["direction"] == "output" and i["interface_type"] == "STDOUT"]
    return str(out[0]["value"])


def statement_of(envelope: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(envelope["payload"])))


def verify_cli(path: Path, *keys: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "orchestrator.cli", "verify", str(path)]
    for key in keys:
        args += ["--key", key]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO)


# -- tests --------------------------------------------------------------------------------------
@pytest.fixture
def flags() -> Iterator[Path]:
    """A directory a job's service may read (its working directory): not under /tmp, which
    every job gets a private one of."""
    path = Path(tempfile.mkdtemp(prefix="rn-flags-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_resume_reruns_only_what_did_not_complete(mesh: Mesh, hits: tuple[str, list[str]],
                                                  flags: Path,
                                                  tmp_path_factory: pytest.TempPathFactory,
                                                  ) -> None:
    """A (here) -> B (on peer 2) -> C (on peer 3); B fails on the first execution. The resume
    reruns B and C only: A's process does not run again (its runs are counted over HTTP)."""
    a, b, c, _ = mesh.clients
    pa, pb, pc, _ = mesh.peer_ids
    url, seen = hits
    src = service(a, "resume-src", f"/bin/busybox wget -q -O /dev/null {url}/run; "
                  "printf 'hello\\n'")
    mid = service(b, "resume-upper", "[ -e go ] || exit 3; tr a-z A-Z", cwd=flags)
    end = service(c, "resume-rev", "rev")
    wf, ids = chain(a, "resume", [(src, {}, pa), (mid, {}, pb), (end, {}, pc)])

    first = execute(a, wf)
    status = wait_done(a, first)
    assert status["status"] == "FAILED", status
    before = jobs_by_node(a, first)
    assert [before[i]["status"] for i in ids] == ["COMPLETED", "FAILED", "CANCELLED"]
    assert len(seen) == 1 and before[ids[0]]["receipt_digest"].startswith("sha256:")

    (flags / "go").write_text("")
    r = a.post(f"/api/workflow-executions/{first}/resume")
    assert r.status_code == 202, r.text
    second = int(r.json()["execution_id"])
    assert second != first and r.json()["resumed_from"] == first
    status = wait_done(a, second)
    jobs = jobs_by_node(a, second)
    assert status["status"] == "COMPLETED", (status, jobs)
    assert stdout_of(a, jobs[ids[2]]["id"]) == "OLLEH\n"  # byte-exact, back on A
    assert len(seen) == 1  # A's job was reused: its process did not run again
    assert jobs[ids[0]]["cached_from"] == before[ids[0]]["receipt_digest"]
    assert jobs[ids[1]]["cached_from"] == "" and jobs[ids[2]]["cached_from"] == ""
    assert [r["status"] for r in runs_of(mesh.nodes[1], mid)] == ["FAILED", "COMPLETED"]
    assert [r["status"] for r in runs_of(mesh.nodes[2], end)] == ["COMPLETED"]
    # The old and the new execution name each other.
    assert status["resumed_from"] == first
    assert a.get(f"/api/workflow-executions/{first}/status").json()["resumed_by"] == [second]

    # In Prefect the reused task run is Completed, named Cached, its message naming the job.
    task_run = httpx.get(f"{mesh.prefect_url}/api/task_runs/"
                         f"{jobs[ids[0]]['prefect_task_run_id']}", timeout=30).json()
    assert task_run["state"]["type"] == "COMPLETED" and task_run["state"]["name"] == "Cached"
    assert f"job {before[ids[0]]['id']} of execution {first}" in task_run["state"]["message"]

    # The receipts: one per job, chained in execution order, each signed by the peer that ran
    # it, and checked offline with only their public keys.
    chain_body = a.get(f"/api/workflow-executions/{second}/receipts").json()
    assert chain_body["total"] == 3
    receipts = chain_body["receipts"]
    builders = [statement_of(e)["predicate"]["runDetails"]["builder"]["id"] for e in receipts]
    assert builders == [f"peer:{pa}", f"peer:{pb}", f"peer:{pc}"]
    one = a.get(f"/api/job-executions/{jobs[ids[1]]['id']}/receipt").json()
    assert one == receipts[1]
    outputs = {s["name"]: s["digest"]["sha256"] for s in statement_of(one)["subject"]}
    assert outputs["STDOUT"] == hashlib.sha256(b"HELLO\n").hexdigest()
    keys = [e["signatures"][0]["keyid"] for e in receipts]
    for envelope, key in zip(receipts, keys, strict=True):  # an independent DSSE verifier
        signer = SSlibKey(key, "ed25519", "ed25519", {"public": key})
        assert signer.keyid in Envelope.from_dict(copy.deepcopy(envelope)).verify([signer], 1)
    path = tmp_path_factory.mktemp("receipts") / "chain.json"
    path.write_text(json.dumps(receipts))
    ok = verify_cli(path, *keys)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert verify_cli(path, keys[0]).returncode != 0  # B's and C's keys not given
    missing = a.get(f"/api/job-executions/{before[ids[1]]['id']}/receipt")
    assert missing.status_code == 404 and "error" in missing.json()


def test_a_cached_node_runs_once_and_a_second_requester_gets_it_from_the_dht(
        mesh: Mesh) -> None:
    a, b, _, d = mesh.clients
    _, pb, _, _ = mesh.peer_ids
    upper = service(b, "cached-upper", "tr a-z A-Z")
    node = (upper, {"cache": True, "stdin": "cache me\n"}, pb)
    wf, ids = chain(a, "cached", [node])

    first = execute(a, wf)
    assert wait_done(a, first)["status"] == "COMPLETED"
    second = execute(a, wf)
    assert wait_done(a, second)["status"] == "COMPLETED"
    one, two = (jobs_by_node(a, e)[ids[0]] for e in (first, second))
    assert one["cached_from"] == "" and two["cached_from"] == one["receipt_digest"] != ""
    assert two["job_key"] == one["job_key"] and stdout_of(a, two["id"]) == "CACHE ME\n"
    assert len(runs_of(mesh.nodes[1], upper)) == 1  # ran once

    # D never ran it: its own records have nothing; B's provider record in the DHT names it.
    wf_d, ids_d = chain(d, "cached-elsewhere", [node])
    third = execute(d, wf_d)
    assert wait_done(d, third)["status"] == "COMPLETED"
    three = jobs_by_node(d, third)[ids_d[0]]
    assert three["cached_from"] == one["receipt_digest"]
    assert stdout_of(d, three["id"]) == "CACHE ME\n"
    assert len(runs_of(mesh.nodes[1], upper)) == 1

    # A node without the flag runs every time.
    wf_plain, ids_plain = chain(a, "not-cached", [(upper, {"stdin": "cache me\n"}, pb)])
    plain = execute(a, wf_plain)
    assert wait_done(a, plain)["status"] == "COMPLETED"
    assert jobs_by_node(a, plain)[ids_plain[0]]["cached_from"] == ""
    assert len(runs_of(mesh.nodes[1], upper)) == 2

    # The preview says so, without running anything.
    preview = a.post(f"/api/workflows/{wf}/plan")
    assert preview.status_code == 200, preview.text
    planned = preview.json()["nodes"]
    assert [(n["node_id"], n["peer_id"], n["cached"], n["job_key"]) for n in planned] == [
        (ids[0], pb, True, one["job_key"])]
    assert planned[0]["reached"] in ("direct", "relayed", "not_connected")
    assert len(runs_of(mesh.nodes[1], upper)) == 2


@pytest.mark.docker
def test_a_node_placed_by_digest_fails_over_when_its_peer_is_killed(mesh: Mesh,
                                                                    registry: Any) -> None:
    """Two peers offer the same image; the one the first attempt goes to is killed (SIGKILL)
    while the job runs there, and the execution completes on the other. Runs last: B or C
    stays dead."""
    a, b, c, _ = mesh.clients
    pa, pb, pc, _ = mesh.peer_ids
    image, _, tag = registry.image.rpartition(":")
    digests = {}
    for client, peer in ((b, pb), (c, pc)):
        r = client.post("/api/services/docker/from-registry", json={
            "service_name": "same-image", "image_name": image, "image_tag": tag or "latest",
            "custom_interfaces": [{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}]})
        assert r.status_code in (200, 201, 202), r.text
        sid = int(r.json()["service"]["id"])

        def digest_known(client: ApiClient = client, sid: int = sid, peer: str = peer) -> bool:
            digest = client.get(f"/api/services/{sid}").json()["service"]["content_digest"]
            digests[peer] = digest
            return bool(digest)

        wait_until(digest_known, 120, "the image's digest")
    assert digests[pb] == digests[pc]

    def in_record() -> bool:  # B's signed DHT record summarises what it offers by digest
        peers = a.get("/api/peers").json()["peers"]
        return any(p["peer_id"] == pb and digests[pb] in p["service_digests"] for p in peers)

    wait_until(in_record, 60, "the digest in B's record")
    placed = {"service_digest": digests[pb], "placement": "any",
              "cmd": ["sh", "-c", "sleep 4; tr a-z A-Z"], "stdin": "fail over\n"}
    wf, ids = chain(a, "placed", [(0, placed, "")])
    plan = a.post(f"/api/workflows/{wf}/plan").json()["nodes"][0]
    assert plan["candidates"] == sorted([pb, pc]) and plan["peer_id"] == min(pb, pc)

    first_peer = min(pb, pc)
    victim = mesh.nodes[1] if first_peer == pb else mesh.nodes[2]
    eid = execute(a, wf)

    def running_there() -> bool:
        job = jobs_by_node(a, eid)[ids[0]]
        return job["status"] == "RUNNING" and job["peer_id"] == first_peer

    wait_until(running_there, 120, "the job running on the first peer")
    time.sleep(1.0)
    victim.signal(signal.SIGKILL)
    status = wait_done(a, eid)
    job = jobs_by_node(a, eid)[ids[0]]
    assert status["status"] == "COMPLETED", (status, job)
    assert job["peer_id"] == max(pb, pc) and job["attempt"] >= 2
    assert stdout_of(a, job["id"]) == "FAIL OVER\n"
    assert pa not in (job["peer_id"],)
