"""The execution read endpoints, over rows written straight into the node's database."""

from __future__ import annotations

import pytest

from tests.api.helpers import insert
from tests.support.node_process import ApiClient, NodeProcess

T0, T1 = "2024-12-25 10:00:00.000000", "2024-12-25 10:05:00.000000"


@pytest.fixture(scope="module")
def records(node_proc: NodeProcess, client: ApiClient) -> dict[str, int]:
    """Two workflows; the first with two executions, jobs and job interfaces."""
    wf = client.post("/api/workflows", json={"name": "executed"}).json()["id"]
    other = client.post("/api/workflows", json={"name": "never run"}).json()["id"]
    done = insert(node_proc, "workflow_executions", workflow_id=wf, status="COMPLETED", plan={},
                  progress=100, trigger="api", created_at=T0, started_at=T0, completed_at=T1)
    running = insert(node_proc, "workflow_executions", workflow_id=wf, status="RUNNING",
                     plan={}, progress=50, trigger="schedule", created_at=T1, started_at=T1,
                     error=None, prefect_flow_run_id="0b8a-run")
    job = insert(node_proc, "job_executions", workflow_execution_id=done, workflow_id=wf,
                 node_id=7, service_id=3, peer_id="p" * 40, requester_peer_id="r" * 40,
                 status="COMPLETED", attempt=1, exit_code=0, created_at=T0, started_at=T0,
                 completed_at=T1)
    failed = insert(node_proc, "job_executions", workflow_execution_id=done, workflow_id=wf,
                    node_id=8, peer_id="", requester_peer_id="", status="FAILED", attempt=0,
                    exit_code=2, error="exit 2", created_at=T0)
    out = insert(node_proc, "job_execution_interfaces", job_execution_id=job, interface_id=11,
                 interface_type="STDOUT", direction="output", path="", value="Output data...",
                 artifact_hash="cd" * 32, size=14)
    insert(node_proc, "job_execution_interfaces", job_execution_id=job, interface_type="MOUNT",
           direction="output", path="/out", value=None, artifact_hash="ef" * 32, size=1024)
    return {"wf": wf, "other": other, "done": done, "running": running, "job": job,
            "failed": failed, "out": out}


def test_execution_status(client: ApiClient, records: dict[str, int]) -> None:
    resp = client.get(f"/api/workflow-executions/{records['done']}/status")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == records["done"] and body["workflow_id"] == records["wf"]
    assert body["status"] == "COMPLETED" and body["progress"] == 100
    assert body["started_at"] == "2024-12-25T10:00:00Z"
    assert body["completed_at"] == "2024-12-25T10:05:00Z"
    assert body["error"] is None
    running = client.get(f"/api/workflow-executions/{records['running']}/status").json()
    assert running["status"] == "RUNNING" and running["progress"] == 50
    assert running["completed_at"] is None


def test_execution_status_also_in_the_original_uis_shape(client: ApiClient,
                                                         records: dict[str, int]) -> None:
    """Beside the reference's fields: ``execution`` (the same object), ``jobs`` with the names
    the original web UI reads, and ``total``."""
    body = client.get(f"/api/workflow-executions/{records['done']}/status").json()
    bare = {k: v for k, v in body.items() if k not in ("execution", "jobs", "total",
                                                       "results")}
    assert body["execution"] == bare and bare["id"] == records["done"]
    assert body["results"] == []  # nothing of it went to the requesting node
    assert body["total"] == 2 and [j["id"] for j in body["jobs"]] == [records["job"],
                                                                       records["failed"]]
    first, second = body["jobs"]
    assert (first["status"], first["node_id"], first["executor_peer_id"]) == (
        "COMPLETED", 7, "p" * 40)
    assert first["job_name"] == "service-3"  # the plan of this row names no service
    assert (second["status"], second["error"]) == ("FAILED", "exit 2")


def test_execution_jobs(client: ApiClient, records: dict[str, int]) -> None:
    body = client.get(f"/api/workflow-executions/{records['done']}/jobs").json()
    assert [j["id"] for j in body["jobs"]] == [records["job"], records["failed"]]
    first = body["jobs"][0]
    assert first["workflow_execution_id"] == records["done"]
    assert first["node_id"] == 7 and first["status"] == "COMPLETED"
    assert first["started_at"] == "2024-12-25T10:00:00Z"
    assert first["completed_at"] == "2024-12-25T10:05:00Z"
    assert body["jobs"][1]["error"] == "exit 2" and body["jobs"][1]["exit_code"] == 2
    empty = client.get(f"/api/workflow-executions/{records['running']}/jobs").json()
    assert empty["jobs"] == []


def test_job_interfaces(client: ApiClient, records: dict[str, int]) -> None:
    body = client.get(f"/api/job-executions/{records['job']}/interfaces").json()
    assert len(body["interfaces"]) == 2
    first = body["interfaces"][0]
    assert first["id"] == records["out"] and first["job_execution_id"] == records["job"]
    assert first["interface_type"] == "STDOUT" and first["value"] == "Output data..."
    assert body["interfaces"][1]["path"] == "/out"
    none = client.get(f"/api/job-executions/{records['failed']}/interfaces").json()
    assert none["interfaces"] == []


def test_workflow_execution_instances(client: ApiClient, records: dict[str, int]) -> None:
    body = client.get(f"/api/workflows/{records['wf']}/execution-instances").json()
    assert body["total"] == 2
    assert [e["id"] for e in body["executions"]] == [records["done"], records["running"]]
    for e in body["executions"]:
        assert {"id", "workflow_id", "status", "started_at", "completed_at", "error"} <= set(e)
    assert client.get(f"/api/workflows/{records['other']}/execution-instances").json() == {
        "executions": [], "total": 0}


def test_legacy_jobs_and_executions(client: ApiClient, records: dict[str, int]) -> None:
    jobs = client.get(f"/api/workflows/{records['wf']}/jobs").json()
    assert jobs["total"] == 2
    assert jobs["jobs"][0] == {"id": records["job"], "workflow_id": records["wf"],
                               "status": "COMPLETED", "created_at": "2024-12-25T10:00:00Z"}
    legacy = client.get(f"/api/workflows/{records['wf']}/executions").json()
    assert legacy["total"] == 2
    assert legacy["executions"][1]["status"] == "FAILED"
    assert client.get(f"/api/workflows/{records['other']}/executions").json() == {
        "executions": [], "total": 0}


@pytest.mark.parametrize(("path", "message"), [
    ("/api/workflow-executions/{}/status", "Workflow execution not found"),
    ("/api/workflow-executions/{}/jobs", "Workflow execution not found"),
    ("/api/job-executions/{}/interfaces", "Job execution not found")])
def test_unknown_ids_are_404(client: ApiClient, path: str, message: str) -> None:
    resp = client.get(path.format(987654))
    assert resp.status_code == 404
    assert resp.json() == {"error": message}


@pytest.mark.parametrize(("path", "message"), [
    ("/api/workflow-executions/{}/status", "Invalid workflow execution ID"),
    ("/api/workflow-executions/{}/jobs", "Invalid workflow execution ID"),
    ("/api/job-executions/{}/interfaces", "Invalid job execution ID")])
def test_invalid_ids_are_400(client: ApiClient, path: str, message: str) -> None:
    for bad in ("abc", "0", "-2", "\uff13"):
        resp = client.get(path.format(bad))
        assert resp.status_code == 400
        assert resp.json() == {"error": message}
