"""Register a workflow definition on a node, run it, watch it and collect its outputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flows.client.node_client import NodeClient, NodeError
from flows.client.resolve import ServiceCatalog, resolve

if TYPE_CHECKING:
    from flows.client.define import Workflow

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
ProgressCallback = Callable[[dict[str, Any]], None]


class WaitTimeout(TimeoutError):
    def __init__(self, execution_id: int, status: str, seconds: float) -> None:
        super().__init__(f"execution {execution_id} still {status} after {seconds:g} s")
        self.execution_id = execution_id
        self.status = status


@dataclass
class JobOutputs:
    """One job of an execution: its state and the values of its outputs."""

    job_id: int
    node_id: int | None
    step: str
    status: str
    exit_code: int | None = None
    error: str | None = None
    # True when no connection takes this job's outputs onward: they are workflow results.
    final: bool = True
    # "STDOUT", "STDERR", "LOGS", "MOUNT /out" -> the text (None when only an artifact exists)
    outputs: dict[str, str | None] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


@dataclass
class Execution:
    id: int
    workflow_id: int
    status: str
    error: str | None = None
    progress: float | None = None
    jobs: list[JobOutputs] = field(default_factory=list)
    # The outputs delivered to the node that ran it (``Workflow.deliver``), by file name: each
    # {job_execution_id, node_id, interface_id, interface_type, file_name, artifact_hash, size}.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def job(self, step: str) -> JobOutputs:
        for job in self.jobs:
            if job.step == step:
                return job
        raise KeyError(f"no job for step '{step}' in execution {self.id} "
                       f"(steps: {', '.join(j.step for j in self.jobs) or 'none'})")

    def output(self, step: str, kind: str = "STDOUT") -> str | None:
        """The text a step produced on ``kind`` (``STDOUT``, ``STDERR``, ``LOGS``, ``MOUNT /p``)."""
        return self.job(step).outputs.get(kind.upper() if " " not in kind else kind)


def register(workflow: Workflow, client: NodeClient) -> int:
    """Create ``workflow`` on the node, or replace the one of the same name, keeping its id.

    Every service and interface is resolved first, so a bad reference changes nothing.
    """
    resolved = resolve(workflow, ServiceCatalog.load(client, workflow))
    same_name = [w for w in client.workflows() if w["name"] == workflow.name]
    if len(same_name) > 1:
        ids = ", ".join(str(w["id"]) for w in same_name)
        raise NodeError(f"{len(same_name)} workflows are named '{workflow.name}' (ids {ids}): "
                        "delete the extra ones first", status=409)
    body = {"name": workflow.name, "description": workflow.description,
            "definition": workflow.to_dict()}
    if same_name:
        wid = int(same_name[0]["id"])
        client.put(f"/api/workflows/{wid}", json=body)
        for conn in client.get(f"/api/workflows/{wid}/connections")["connections"]:
            client.delete(f"/api/workflows/{wid}/connections/{conn['id']}")
        for node in client.get(f"/api/workflows/{wid}/nodes")["nodes"]:
            client.delete(f"/api/workflows/{wid}/nodes/{node['id']}")
    else:
        wid = int(client.post("/api/workflows", json=body)["id"])
    node_ids: dict[str, int] = {}
    for node in resolved.nodes:
        node_ids[node.step] = int(client.post(f"/api/workflows/{wid}/nodes", json=node.body)["id"])
    for conn in resolved.connections:
        client.post(f"/api/workflows/{wid}/connections", json=conn.body(node_ids))
    workflow.id, workflow.node_ids = wid, node_ids
    return wid


def start(client: NodeClient, workflow_id: int) -> int:
    """Start an execution; its id."""
    answer = client.post(f"/api/workflows/{workflow_id}/execute")
    if "execution_id" not in answer:
        raise NodeError("the node started the workflow but returned no execution_id")
    return int(answer["execution_id"])


def wait_until_done(client: NodeClient, execution_id: int, *, timeout: float = 600.0,
         poll_interval: float = 0.5, on_progress: ProgressCallback | None = None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the execution's status until it ends; its last status. Bounded by ``timeout``."""
    deadline = clock() + timeout
    while True:
        status = client.get(f"/api/workflow-executions/{execution_id}/status")
        if on_progress is not None:
            on_progress(status)
        if status.get("status") in TERMINAL:
            return dict(status)
        if clock() >= deadline:
            raise WaitTimeout(execution_id, str(status.get("status")), timeout)
        sleep(max(0.0, min(poll_interval, deadline - clock())))


def collect(client: NodeClient, status: dict[str, Any]) -> Execution:
    """The execution's jobs and their output values."""
    execution_id, workflow_id = int(status["id"]), int(status["workflow_id"])
    names = step_names(client, workflow_id)
    feeding = {c["source_node_id"] for c in
               client.get(f"/api/workflows/{workflow_id}/connections")["connections"]
               if c.get("target_node_id") is not None}
    execution = Execution(execution_id, workflow_id, str(status["status"]), status.get("error"),
                          status.get("progress"),
                          results={str(r["file_name"]): r for r in status.get("results") or []})
    for job in client.get(f"/api/workflow-executions/{execution_id}/jobs")["jobs"]:
        node_id = job.get("node_id")
        outputs = JobOutputs(int(job["id"]), node_id, names.get(node_id, f"node-{node_id}"),
                             str(job["status"]), job.get("exit_code"), job.get("error"),
                             final=node_id not in feeding)
        interfaces = client.get(f"/api/job-executions/{job['id']}/interfaces")["interfaces"]
        for item in interfaces:
            if str(item.get("direction", "output")).lower() != "output":
                continue
            key = str(item["interface_type"]).upper()
            if item.get("path"):
                key = f"{key} {item['path']}"
            outputs.outputs[key] = item.get("value")
            if item.get("artifact_hash"):
                outputs.artifacts[key] = str(item["artifact_hash"])
        execution.jobs.append(outputs)
    return execution


def run(client: NodeClient, workflow_id: int, *, wait: bool = True, timeout: float = 600.0,
        poll_interval: float = 0.5, on_progress: ProgressCallback | None = None) -> Execution:
    execution_id = start(client, workflow_id)
    if not wait:
        status = client.get(f"/api/workflow-executions/{execution_id}/status")
        return Execution(execution_id, workflow_id, str(status["status"]), status.get("error"),
                         status.get("progress"))
    final = wait_until_done(client, execution_id, timeout=timeout, poll_interval=poll_interval,
                            on_progress=on_progress)
    return collect(client, final)


def step_names(client: NodeClient, workflow_id: int) -> dict[int | None, str]:
    """Node id -> step name (the label ``register`` stored), else the service name."""
    names: dict[int | None, str] = {}
    for node in client.get(f"/api/workflows/{workflow_id}/nodes")["nodes"]:
        label = (node.get("gui_props") or {}).get("label")
        names[node["id"]] = str(label or node.get("service_name") or f"node-{node['id']}")
    return names
