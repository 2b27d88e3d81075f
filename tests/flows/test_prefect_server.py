"""The Prefect server beside the node (``--prefect-ui``), and a node that uses another's server.

Two real node processes share the module: ``ui_node`` runs its own Prefect server with the UI on
a port of ours; ``client_node`` is pointed at that server with ``RN_PREFECT_API_URL``. Both run
real 2-node standalone workflows over their HTTPS API; the runs are then read back from Prefect's
own REST API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.node_process import REPO, ApiClient, NodeProcess, free_port
from tests.support.waiting import wait_until
from tests.support.workflows import (
    execute,
    jobs_by_node,
    make_workflow,
    sh_service,
    wait_done,
    wait_job_running,
)

# Prefect's server and its embedded PostgreSQL start beside the node; slow on a loaded machine.
WAIT = 240.0


class Node:
    """A node process, its logged-in client and, where it runs one, its Prefect server's port."""

    def __init__(self, proc: NodeProcess, api: ApiClient, prefect_port: int | None) -> None:
        self.proc = proc
        self.api = api
        self.prefect_port = prefect_port
        self.peer_id: str = api.get("/api/node/status").json()["peer_id"]

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"


@contextlib.contextmanager
def started(proc: NodeProcess, prefect_port: int | None) -> Iterator[Node]:
    try:
        proc.start()
        api = proc.client()
        try:
            yield Node(proc, api, prefect_port)
        finally:
            api.close()
    finally:
        proc.stop()
        stop_postgres(proc)


def stop_postgres(proc: NodeProcess) -> None:
    """Ends a PostgreSQL the node left behind (a failure the tests report, not leave running)."""
    left = postgres_of(proc)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
    _gone, alive = psutil.wait_procs(left, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


@pytest.fixture(scope="module")
def ui_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    port = free_port()
    proc = NodeProcess(tmp_path_factory.mktemp("prefect-ui"),
                       extra_args=["--prefect-ui", "--prefect-port", str(port)])
    with started(proc, port) as node:
        wait_prefect(node.prefect_url)
        yield node


@pytest.fixture(scope="module")
def client_node(ui_node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    proc = NodeProcess(tmp_path_factory.mktemp("prefect-client"),
                       env={"RN_PREFECT_API_URL": f"{ui_node.prefect_url}/api"})
    with started(proc, None) as node:
        yield node


def wait_prefect(url: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"no Prefect server answered at {url} in {WAIT}s")


def prefect_post(node: Node, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = httpx.post(f"{node.prefect_url}/api{path}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()
    return result


def completed_flow_run(server: Node, workflow_name: str, execution_id: int) -> dict[str, Any]:
    """The one flow run named after the workflow and execution, once Prefect has it COMPLETED."""
    deadline = time.monotonic() + 60
    while True:
        runs = prefect_post(server, "/flow_runs/filter",
                            {"flow_runs": {"name": {"like_": workflow_name}}})
        ours = [r for r in runs if workflow_name in r["name"] and str(execution_id) in r["name"]]
        assert len(ours) <= 1, [r["name"] for r in runs]
        if ours and ours[0]["state_type"] == "COMPLETED":
            return ours[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no COMPLETED flow run for {workflow_name} #{execution_id}: "
                                 f"{[(r['name'], r['state_type']) for r in runs]}")
        time.sleep(0.3)


def recorded_task_runs(server: Node, flow_run_id: str, count: int) -> list[dict[str, Any]]:
    """The flow run's task runs once all ``count`` are recorded COMPLETED: Prefect's server
    records them from their events in batches, flushed every second."""
    deadline = time.monotonic() + 30
    while True:
        tasks = prefect_post(server, "/task_runs/filter",
                             {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        if len(tasks) == count and all(t["state_type"] == "COMPLETED" for t in tasks):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"task runs of {flow_run_id}: "
                                 f"{[(t['name'], t['state_type']) for t in tasks]}")
        time.sleep(0.3)


def run_pair(node: Node) -> tuple[str, int, dict[str, int], dict[int, dict[str, Any]]]:
    """A 2-node workflow (printf -> tr) run to completion on ``node``.

    Returns the workflow name, the execution id, service name per workflow node id, and the jobs.
    """
    tag = uuid.uuid4().hex[:8]
    gen_name, upper_name = f"pf-gen-{tag}", f"pf-upper-{tag}"
    gen = sh_service(node.api, gen_name, "printf 'to prefect'")
    upper = sh_service(node.api, upper_name, "tr a-z A-Z")
    name = f"prefect-pair-{tag}"
    wf, ids = make_workflow(node.api, name, [(gen[0], {}), (upper[0], {})],
                            [(0, gen[1]["STDOUT"], 1, upper[1]["STDIN"])])
    eid = execute(node.api, wf)
    status = wait_done(node.api, eid, WAIT)
    assert status["status"] == "COMPLETED", status
    return name, eid, {ids[0]: gen_name, ids[1]: upper_name}, jobs_by_node(node.api, eid)


def check_runs_on(server: Node, node: Node) -> None:
    """A workflow run on ``node`` shows in ``server``'s Prefect with its tasks, names and tags."""
    name, eid, services, jobs = run_pair(node)
    flow_run = completed_flow_run(server, name, eid)
    status = node.api.get(f"/api/workflow-executions/{eid}/status").json()
    assert status["prefect_flow_run_id"] == flow_run["id"]
    # Created with the version and retry policy Prefect's engine would otherwise write back.
    assert flow_run["flow_version"], flow_run
    assert flow_run["empirical_policy"]["retries"] == 0, flow_run["empirical_policy"]
    assert flow_run["empirical_policy"]["retry_delay"] == 0, flow_run["empirical_policy"]

    tasks = recorded_task_runs(server, flow_run["id"], len(services))
    by_id = {t["id"]: t for t in tasks}
    for node_id, service_name in services.items():
        task_run = by_id[jobs[node_id]["prefect_task_run_id"]]
        assert service_name in task_run["name"]
        assert task_run["state_type"] == "COMPLETED"
        assert task_run["flow_run_id"] == flow_run["id"]
        assert any(node.peer_id in tag for tag in task_run["tags"]), task_run["tags"]
    # The task graph: the second task's inputs name the first task run, and the graph the UI
    # draws has that edge.
    first, second = (jobs[n]["prefect_task_run_id"] for n in services)
    upstream = by_id[second]["task_inputs"]["upstream"]
    assert {"input_type": "task_run", "id": first} in upstream, upstream
    r = httpx.get(f"{server.prefect_url}/api/flow_runs/{flow_run['id']}/graph-v2", timeout=30)
    assert r.status_code == 200, r.text
    graph = dict(r.json()["nodes"])
    assert r.json()["root_node_ids"] == [first]
    assert {p["id"] for p in graph[second]["parents"]} == {first}
    assert {c["id"] for c in graph[first]["children"]} == {second}
    # Each job's output lines are its task run's logs (sent in batches every 2 s).
    assert task_logs(server, second) == [("stdout", "TO PREFECT")]
    assert task_logs(server, first) == [("stdout", "to prefect")]


def task_logs(server: Node, task_run_id: str) -> list[tuple[str, str]]:
    """The (name, message) logs of a task run in Prefect, once it has some."""
    logs: list[dict[str, Any]] = []

    def arrived() -> bool:
        nonlocal logs
        logs = prefect_post(server, "/logs/filter", {
            "logs": {"task_run_id": {"any_": [task_run_id]}}, "sort": "TIMESTAMP_ASC"})
        return bool(logs)

    wait_until(arrived, 30, f"logs of task run {task_run_id}")
    return [(log["name"], log["message"]) for log in logs]


def listeners(port: int) -> list[str]:
    """Addresses with a TCP socket listening on ``port``."""
    return [c.laddr.ip for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def postgres_of(node: NodeProcess) -> list[psutil.Process]:
    """PostgreSQL processes whose command line names the node's data dir."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "postgres" in (p.info["name"] or "") + cmd and str(node.data_dir) in cmd:
            found.append(p)
    return found


def servers_under(node: NodeProcess) -> list[str]:
    """Command lines of the node's descendants that listen on TCP or are Prefect or PostgreSQL."""
    cmds = []
    for child in psutil.Process(node.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(child.cmdline())
            listening = any(c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp"))
            if listening or "prefect.server" in cmd or "postgres" in cmd:
                cmds.append(cmd)
    return cmds


def test_prefect_ui_server_on_loopback(ui_node: Node) -> None:
    assert httpx.get(f"{ui_node.prefect_url}/api/health", timeout=10).json() is True
    page = httpx.get(f"{ui_node.prefect_url}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<title>Prefect Server</title>" in page.text
    # The UI talks to this server's API, not Prefect's default port.
    ui = httpx.get(f"{ui_node.prefect_url}/ui-settings", timeout=10).json()
    assert ui["api_url"] == f"{ui_node.prefect_url}/api"
    assert any("prefect.server" in cmd for cmd in servers_under(ui_node.proc))
    addresses = listeners(ui_node.prefect_port or 0)
    assert addresses and set(addresses) == {"127.0.0.1"}, addresses
    # Prefect's database is the embedded PostgreSQL under the node's data dir.
    assert (ui_node.proc.data_dir / "prefect" / "pg").is_dir()
    assert postgres_of(ui_node.proc)
    # The node tells its user where the UI is, and its start-up run is named for what it is.
    assert f"Prefect UI:   {ui_node.prefect_url}  " in ui_node.proc.log()
    def warm_ups() -> set[str]:
        return {run["name"] for run in prefect_post(
            ui_node, "/flow_runs/filter", {"flows": {"name": {"any_": ["warm-up"]}}})}

    wait_until(warm_ups, 60, "the node's start-up flow run")
    assert warm_ups() == {"node start"}


def test_workflow_run_shows_in_prefect(ui_node: Node) -> None:
    check_runs_on(ui_node, ui_node)


def test_node_uses_existing_prefect_server(ui_node: Node, client_node: Node) -> None:
    check_runs_on(ui_node, client_node)
    log = client_node.proc.log()
    assert f"Prefect API:  {ui_node.prefect_url}/api  " in log and "Prefect UI:" not in log
    assert client_node.peer_id != ui_node.peer_id
    assert servers_under(client_node.proc) == []
    assert not (client_node.proc.data_dir / "prefect" / "pg").exists()
    assert postgres_of(client_node.proc) == []


def test_prefect_server_settings(ui_node: Node) -> None:
    """The server beside the node records task runs in batches, flushed at least every second
    (Prefect truncates the interval to whole seconds; 0 would spin its flush loop), and keeps
    no event history unless asked to (``--prefect-event-history``)."""
    r = httpx.get(f"{ui_node.prefect_url}/api/admin/settings", timeout=10)
    assert r.status_code == 200, r.text
    services = r.json()["server"]["services"]
    recorder = services["task_run_recorder"]
    assert recorder["enabled"] is True
    assert recorder["batch_size"] > 1
    assert float(recorder["flush_interval"]) >= 1
    assert float(recorder["flush_interval"]).is_integer()
    assert services["event_persister"]["enabled"] is False
    assert services["triggers"]["enabled"] is False


def test_tag_concurrency_limit_caps_jobs_on_a_peer(ui_node: Node) -> None:
    """A Prefect concurrency limit on the tag ``peer:<peer id>`` caps the jobs running on that
    peer: with a limit of 1, two branches that overlap without it (see the diamond test of
    ``tests/api/test_workflow_runs.py``) run one after the other."""
    api = ui_node.api
    r = httpx.post(f"{ui_node.prefect_url}/api/v2/concurrency_limits/",
                   json={"name": f"tag:peer:{ui_node.peer_id}", "limit": 1}, timeout=10)
    assert r.status_code in (200, 201), r.text
    limit_id = r.json()["id"]
    try:
        tag = uuid.uuid4().hex[:8]
        src = sh_service(api, f"tl-src-{tag}", "printf go")
        slow = sh_service(api, f"tl-slow-{tag}", "cat; sleep 1")
        wf, ids = make_workflow(
            api, f"tag-limit-{tag}", [(src[0], {}), (slow[0], {}), (slow[0], {})],
            [(0, src[1]["STDOUT"], 1, slow[1]["STDIN"]),
             (0, src[1]["STDOUT"], 2, slow[1]["STDIN"])])
        eid = execute(api, wf)
        assert wait_done(api, eid, WAIT)["status"] == "COMPLETED"
        jobs = jobs_by_node(api, eid)
        a, b = sorted((jobs[ids[1]], jobs[ids[2]]), key=lambda j: j["started_at"])
        assert a["completed_at"] <= b["started_at"], (a, b)
    finally:
        httpx.delete(f"{ui_node.prefect_url}/api/v2/concurrency_limits/{limit_id}", timeout=10)


def test_cancelled_execution_ends_cancelled_in_prefect(ui_node: Node) -> None:
    """Cancelling through the node's API ends the flow run Cancelled in Prefect, and the
    running job's task run too; the job downstream never gets a task run."""
    api = ui_node.api
    tag = uuid.uuid4().hex[:8]
    slow = sh_service(api, f"pc-slow-{tag}", "echo started; exec sleep 60")
    after = sh_service(api, f"pc-after-{tag}", "cat")
    name = f"prefect-cancel-{tag}"
    wf, ids = make_workflow(api, name, [(slow[0], {}), (after[0], {})],
                            [(0, slow[1]["STDOUT"], 1, after[1]["STDIN"])])
    eid = execute(api, wf)
    wait_job_running(api, eid, ids[0])
    assert api.post(f"/api/workflow-executions/{eid}/cancel").status_code == 200
    assert wait_done(api, eid)["status"] == "CANCELLED"
    flow_run_id = api.get(f"/api/workflow-executions/{eid}/status").json()["prefect_flow_run_id"]

    flow_run: dict[str, Any] = {}
    tasks: list[dict[str, Any]] = []

    def ended_in_prefect() -> bool:
        nonlocal flow_run, tasks
        r = httpx.get(f"{ui_node.prefect_url}/api/flow_runs/{flow_run_id}", timeout=10)
        flow_run = r.json()
        tasks = prefect_post(ui_node, "/task_runs/filter",
                             {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        return flow_run["state_type"] != "RUNNING" and bool(tasks) and all(
            t["state_type"] not in ("PENDING", "RUNNING") for t in tasks)

    wait_until(ended_in_prefect, 30, f"flow run {flow_run_id} ended in Prefect")
    assert flow_run["state_type"] == "CANCELLED", flow_run["state"]
    assert [t["state_type"] for t in tasks] == ["CANCELLED"], tasks
    jobs = jobs_by_node(api, eid)
    assert tasks[0]["id"] == jobs[ids[0]]["prefect_task_run_id"]
    assert {j["status"] for j in jobs.values()} == {"CANCELLED"}


def wait_gone(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while check() and time.monotonic() < deadline:
        time.sleep(0.2)


def prefect_server_of(node: NodeProcess) -> psutil.Process | None:
    for child in psutil.Process(node.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "prefect.server" in " ".join(child.cmdline()):
                return child
    return None


def test_prefect_worker_runs_the_deployment_of_prefect_yaml(
        ui_node: Node, tmp_path: Path) -> None:
    """``deployments/prefect.yaml``, followed as its comments say: a work pool, ``prefect
    deploy``, a real process worker on the node's data dir and Prefect server, and a run of the
    deployment for a workflow of the node. The worker records a new execution, trigger
    "schedule", in the node's database; its flow run bears the node's name for it."""
    gen = sh_service(ui_node.api, "wk-gen", "printf 'by a worker'")
    upper = sh_service(ui_node.api, "wk-upper", "tr a-z A-Z")
    wf, ids = make_workflow(ui_node.api, "worker-pair", [(gen[0], {}), (upper[0], {})],
                            [(0, gen[1]["STDOUT"], 1, upper[1]["STDIN"])])
    env = {**os.environ, "PREFECT_API_URL": f"{ui_node.prefect_url}/api",
           "PREFECT_HOME": str(tmp_path), "PREFECT_WORKER_QUERY_SECONDS": "1",
           "RN_DATA_DIR": str(ui_node.proc.data_dir), "RN_PROJECT_DIR": str(REPO)}
    prefect = [sys.executable, "-m", "prefect"]

    def prefect_cli(*args: str) -> str:
        done = subprocess.run([*prefect, *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    prefect_cli("work-pool", "create", "remote-network", "--type", "process")
    prefect_cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    prefect_cli("deployment", "run", "run_workflow/run-workflow", "--param", f"workflow_id={wf}")
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([*prefect, "worker", "start", "--pool", "remote-network"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    log.close()
    try:
        def by_worker() -> list[dict[str, Any]]:
            runs = ui_node.api.get(f"/api/workflows/{wf}/execution-instances").json()
            return [e for e in runs["executions"] if e["status"] in ("COMPLETED", "FAILED")]

        wait_until(by_worker, 120, "the worker's execution")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(5)
    (execution,) = by_worker()
    assert execution["status"] == "COMPLETED" and execution["trigger"] == "schedule", execution
    jobs = jobs_by_node(ui_node.api, execution["id"])
    final = ui_node.api.get(f"/api/job-executions/{jobs[ids[1]]['id']}/interfaces").json()
    assert [i["value"] for i in final["interfaces"] if i["interface_type"] == "STDOUT"
            and i["direction"] == "output"] == ["BY A WORKER"]
    flow_run = completed_flow_run(ui_node, "worker-pair", execution["id"])
    assert flow_run["name"] == f"worker-pair #{execution['id']}"
    assert flow_run["id"] == execution["prefect_flow_run_id"]
    assert flow_run["deployment_id"] is not None


def test_prefect_server_that_dies_is_started_again(ui_node: Node) -> None:
    """The node supervises the Prefect server it started: killed, it comes back on the same
    port and database, and executions run again."""
    first = prefect_server_of(ui_node.proc)
    assert first is not None
    first.kill()
    first.wait(10)

    def back() -> bool:
        again = prefect_server_of(ui_node.proc)
        if again is None or again.pid == first.pid:
            return False
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{ui_node.prefect_url}/api/health", timeout=2).status_code == 200
        return False

    wait_until(back, 120, "the Prefect server started again")
    name, eid, _services, _jobs = run_pair(ui_node)
    assert completed_flow_run(ui_node, name, eid)["state_type"] == "COMPLETED"
    assert "the Prefect server exited with code -9; starting it again" in ui_node.proc.log()


def test_embedded_postgres_that_dies_is_started_again(ui_node: Node) -> None:
    """Prefect's database killed: the node starts it again, then the Prefect server on it."""
    [postmaster] = postgres_of(ui_node.proc)
    postmaster.kill()
    postmaster.wait(10)

    def back() -> bool:
        again = postgres_of(ui_node.proc)
        return (len(again) == 1 and again[0].pid != postmaster.pid
                and "Prefect server running again" in ui_node.proc.log().split(
                    "the embedded PostgreSQL is gone")[-1])

    wait_until(back, 120, "PostgreSQL and the Prefect server started again")
    name, eid, _services, _jobs = run_pair(ui_node)
    assert completed_flow_run(ui_node, name, eid)["state_type"] == "COMPLETED"


def test_crashed_node_restarts_on_its_prefect_database(ui_node: Node) -> None:
    """kill -9: the Prefect server dies with the node; the next start takes up the database.

    PostgreSQL outlives the crash; the next test checks that a clean stop after this restart
    still ends it.
    """
    proc = ui_node.proc
    port = ui_node.prefect_port or 0
    assert proc.proc is not None
    old = proc.proc
    os.kill(old.pid, signal.SIGKILL)  # the node alone, not its process group
    old.wait(10)
    try:
        wait_gone(lambda: listeners(port))
        assert listeners(port) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(old.pid, signal.SIGKILL)
    proc.proc = None
    proc.start()
    wait_prefect(ui_node.prefect_url)
    assert len(postgres_of(proc)) == 1


def test_stopping_node_ends_prefect_server_and_postgres(ui_node: Node) -> None:
    proc = ui_node.proc
    port = ui_node.prefect_port or 0
    assert proc.proc is not None and listeners(port) and postgres_of(proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.signal(signal.SIGTERM)
    assert proc.proc.wait(60) == 0
    # Checked before NodeProcess.stop, which kills whatever is left in the process group.
    wait_gone(lambda: listeners(port) or postgres_of(proc))
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if any(p.pid == c.pid for c in children)]
    assert listeners(port) == [], left
    assert postgres_of(proc) == [], left
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{ui_node.prefect_url}/api/health", timeout=2)


