"""Building workflows through a node's REST API, for tests."""

from __future__ import annotations

from typing import Any

from tests.support.node_process import ApiClient
from tests.support.waiting import wait_until

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
# Prefect starting beside a node on a loaded 2-core machine.
WAIT = 240.0

# A node: (service id, config), or (service id, config, peer id) for a service on another peer.
NodeSpec = tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], str]


def make_workflow(c: ApiClient, name: str, nodes: list[NodeSpec],
                  edges: list[tuple[int, int, int, int]]) -> tuple[int, list[int]]:
    """Create a workflow; edges as (src index, src iface, dst index, dst iface)."""
    wf = c.post("/api/workflows", json={"name": name}).json()["id"]
    ids = []
    for node in nodes:
        body: dict[str, Any] = {"service_id": node[0], "config": node[1]}
        if len(node) == 3:
            body["peer_id"] = node[2]
        r = c.post(f"/api/workflows/{wf}/nodes", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for src, src_if, dst, dst_if in edges:
        r = c.post(f"/api/workflows/{wf}/connections", json={
            "source_node_id": ids[src], "source_interface_id": src_if,
            "target_node_id": ids[dst], "target_interface_id": dst_if})
        assert r.status_code == 201, r.text
    return wf, ids


def sh_service(c: ApiClient, name: str, script: str,
               interfaces: list[dict[str, str]] | None = None) -> tuple[int, dict[str, int]]:
    """A standalone service running ``/bin/sh -c script``; returns (id, interface ids)."""
    ifaces = interfaces or [{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}]
    r = c.post("/api/services/standalone/from-local", json={
        "service_name": name, "executable_path": "/bin/sh", "arguments": ["-c", script],
        "custom_interfaces": ifaces})
    assert r.status_code in (200, 201), r.text
    sid = int(r.json()["service"]["id"])
    return sid, interface_ids(c, sid)


def interface_ids(c: ApiClient, sid: int) -> dict[str, int]:
    """A service's interface ids by path, or by type for interfaces without one."""
    listed = c.get(f"/api/services/{sid}/interfaces").json()["interfaces"]
    return {(i["path"] or i["interface_type"]): i["id"] for i in listed}


def execute(c: ApiClient, wf: int) -> int:
    r = c.post(f"/api/workflows/{wf}/execute")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["message"] == ("Workflow execution started - validation and execution in "
                               "progress")
    assert body["workflow_id"] == wf and "note" in body
    return int(body["execution_id"])


def wait_done(c: ApiClient, execution_id: int, timeout: float = WAIT) -> dict[str, Any]:
    """The execution's status once it has ended."""
    status: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal status
        status = c.get(f"/api/workflow-executions/{execution_id}/status").json()
        return status["status"] in TERMINAL

    try:
        wait_until(ended, timeout, f"execution {execution_id} finished")
    except AssertionError:
        raise AssertionError(f"execution {execution_id} not finished: {status}") from None
    return status


def jobs_by_node(c: ApiClient, execution_id: int) -> dict[int, dict[str, Any]]:
    jobs = c.get(f"/api/workflow-executions/{execution_id}/jobs").json()["jobs"]
    return {j["node_id"]: j for j in jobs}


def wait_job_running(c: ApiClient, execution_id: int, node_id: int) -> dict[str, Any]:
    """The job of ``node_id`` once it is RUNNING (it must not end before)."""
    job: dict[str, Any] = {}

    def running() -> bool:
        nonlocal job
        job = jobs_by_node(c, execution_id)[node_id]
        assert job["status"] in ("PENDING", "RUNNING"), job
        return job["status"] == "RUNNING"

    wait_until(running, WAIT, f"job of node {node_id} running")
    return job
