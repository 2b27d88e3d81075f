"""Workflows run end to end over HTTPS against a real node: Prefect, real processes, real Docker."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.node_process import ApiClient, NodeProcess, free_port
from tests.support.processes import sleeper, sleeping
from tests.support.waiting import wait_until
from tests.support.workflows import (
    TERMINAL,
    WAIT,
    execute,
    jobs_by_node,
    make_workflow,
    sh_service,
    wait_done,
    wait_job_running,
)

# Prefect starts beside each node; on a loaded 2-core machine that can take a while.


@pytest.fixture(scope="module")
def wf_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path_factory.mktemp("wfnode"),
                       env={"RN_SCHEDULE_POLL_SECONDS": "0.5"}).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def api(wf_node: NodeProcess) -> Iterator[ApiClient]:
    c = wf_node.client()
    try:
        yield c
    finally:
        c.close()


def outputs(c: ApiClient, job_id: int) -> dict[str, dict[str, Any]]:
    items = c.get(f"/api/job-executions/{job_id}/interfaces").json()["interfaces"]
    return {i["interface_type"]: i for i in items if i["direction"] == "output"}


def logged(node: NodeProcess, line: str) -> None:
    """Wait for ``line`` in the node's log (written as the execution's flow run ends)."""
    wait_until(lambda: line in node.log(), 30, repr(line))


def test_three_stage_pipeline_output_byte_for_byte(api: ApiClient, wf_node: NodeProcess) -> None:
    gen = sh_service(api, "gen", "printf 'hello, workflow\\nsecond line\\n'")
    upper = sh_service(api, "upper", "tr a-z A-Z")
    count = sh_service(api, "count", "wc -c")
    wf, ids = make_workflow(api, "pipeline", [(gen[0], {}), (upper[0], {}), (count[0], {})], [
        (0, gen[1]["STDOUT"], 1, upper[1]["STDIN"]),
        (1, upper[1]["STDOUT"], 2, count[1]["STDIN"])])
    eid = execute(api, wf)
    status = wait_done(api, eid)
    assert status["status"] == "COMPLETED", status
    assert status["progress"] == 100 and status["error"] is None
    jobs = jobs_by_node(api, eid)
    assert all(j["status"] == "COMPLETED" and j["exit_code"] == 0 for j in jobs.values())
    assert all(j["prefect_task_run_id"] for j in jobs.values())
    assert outputs(api, jobs[ids[1]]["id"])["STDOUT"]["value"] == "HELLO, WORKFLOW\nSECOND LINE\n"
    final = outputs(api, jobs[ids[2]]["id"])["STDOUT"]
    assert final["value"].strip() == str(len("hello, workflow\nsecond line\n"))
    assert final["interface_id"] == count[1]["STDOUT"]
    # The same bytes through the download endpoint.
    body = api.get(f"/api/job-executions/{jobs[ids[2]]['id']}/interfaces/{final['id']}/content")
    assert body.status_code == 200 and body.content.decode() == final["value"]
    # Observed through the workflow's execution instances, with the Prefect flow run id.
    instances = api.get(f"/api/workflows/{wf}/execution-instances").json()["executions"]
    assert [e["id"] for e in instances] == [eid]
    assert instances[0]["prefect_flow_run_id"]
    logged(wf_node, f"execution {eid} of 'pipeline' (api) COMPLETED in ")


def test_large_output_is_not_inline_but_downloadable(api: ApiClient) -> None:
    big = sh_service(api, "big", "head -c 100000 /dev/zero | tr '\\0' x")
    wf, ids = make_workflow(api, "big-output", [(big[0], {})], [])
    eid = execute(api, wf)
    assert wait_done(api, eid)["status"] == "COMPLETED"
    job = jobs_by_node(api, eid)[ids[0]]
    out = outputs(api, job["id"])["STDOUT"]
    assert out["value"] is None and out["size"] == 100000
    body = api.get(f"/api/job-executions/{job['id']}/interfaces/{out['id']}/content")
    assert body.content == b"x" * 100000


def test_diamond_branches_overlap(api: ApiClient) -> None:
    src = sh_service(api, "src", "printf abc")
    left = sh_service(api, "left", "sleep 2; tr a-z A-Z")
    right = sh_service(api, "right", "sleep 2; rev")
    join = sh_service(api, "join", "cat l r", [
        {"interface_type": "MOUNT", "path": "/l", "mount_function": "INPUT"},
        {"interface_type": "MOUNT", "path": "/r", "mount_function": "INPUT"},
        {"interface_type": "STDOUT"}])
    wf, ids = make_workflow(
        api, "diamond", [(src[0], {}), (left[0], {}), (right[0], {}), (join[0], {})],
        [(0, src[1]["STDOUT"], 1, left[1]["STDIN"]), (0, src[1]["STDOUT"], 2, right[1]["STDIN"]),
         (1, left[1]["STDOUT"], 3, join[1]["/l"]), (2, right[1]["STDOUT"], 3, join[1]["/r"])])
    eid = execute(api, wf)
    assert wait_done(api, eid)["status"] == "COMPLETED"
    jobs = jobs_by_node(api, eid)
    a, b = jobs[ids[1]], jobs[ids[2]]
    # Each branch started before the other ended (timestamps from the records).
    assert a["started_at"] < b["completed_at"] and b["started_at"] < a["completed_at"]
    assert outputs(api, jobs[ids[3]]["id"])["STDOUT"]["value"] == "ABCcba\n" or \
        outputs(api, jobs[ids[3]]["id"])["STDOUT"]["value"] == "ABCcba"


def test_failing_middle_node(api: ApiClient, wf_node: NodeProcess) -> None:
    gen = sh_service(api, "gen-f", "echo data")
    boom = sh_service(api, "boom", "echo broken >&2; exit 7")
    after = sh_service(api, "after", "cat")
    wf, ids = make_workflow(api, "fails", [(gen[0], {}), (boom[0], {}), (after[0], {})], [
        (0, gen[1]["STDOUT"], 1, boom[1]["STDIN"]),
        (1, boom[1]["STDOUT"], 2, after[1]["STDIN"])])
    eid = execute(api, wf)
    status = wait_done(api, eid)
    assert status["status"] == "FAILED"
    assert f"node {ids[1]} (boom)" in status["error"]
    assert status["error"].endswith("exit code 7: broken"), status["error"]
    jobs = jobs_by_node(api, eid)
    assert jobs[ids[0]]["status"] == "COMPLETED"
    assert jobs[ids[1]]["status"] == "FAILED" and jobs[ids[1]]["exit_code"] == 7
    assert outputs(api, jobs[ids[1]]["id"])["STDERR"]["value"] == "broken\n"
    assert jobs[ids[2]]["status"] == "CANCELLED" and jobs[ids[2]]["started_at"] is None
    # The original web UI's execution page reads the jobs from the status, by these names.
    ui_jobs = {j["node_id"]: j for j in status["jobs"]}
    assert [ui_jobs[i]["job_name"] for i in ids] == ["gen-f", "boom", "after"]
    assert [ui_jobs[i]["status"] for i in ids] == ["COMPLETED", "FAILED", "CANCELLED"]
    logged(wf_node, f"execution {eid} of 'fails' (api) FAILED in ")
    assert f"{status['error']}" in wf_node.log()
    # The workflow list says how its latest run ended (the original web UI's status badge);
    # a workflow that never ran has no status.
    listed = {w["id"]: w for w in api.get("/api/workflows").json()["workflows"]}
    assert listed[wf]["status"] == "failed"
    never = api.post("/api/workflows", json={"name": "never-ran"}).json()
    assert "status" not in {w["id"]: w for w in api.get("/api/workflows").json()[
        "workflows"]}[never["id"]]
    api.delete(f"/api/workflows/{never['id']}")


def test_retry_succeeds_on_second_attempt(api: ApiClient) -> None:
    # The job cannot write outside its own directory, so it counts its attempts by asking a
    # counter on 127.0.0.1: the first call answers 1 (fail), the second 2 (succeed).
    with attempt_counter() as port:
        ask = (f"python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', {port}));"
               f" print(s.recv(16).decode())\"")
        flaky = sh_service(api, "flaky", f"n=$({ask}); if [ \"$n\" -ge 2 ]; then echo ok; "
                                         "else exit 3; fi")
        wf, ids = make_workflow(api, "retry", [(flaky[0], {"retry_count": 1})], [])
        eid = execute(api, wf)
        assert wait_done(api, eid)["status"] == "COMPLETED"
    job = jobs_by_node(api, eid)[ids[0]]
    assert job["attempt"] == 2 and job["status"] == "COMPLETED"
    assert outputs(api, job["id"])["STDOUT"]["value"] == "ok\n"


@contextlib.contextmanager
def attempt_counter() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers each connection with how many came so far."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        count = 0
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            count += 1
            with conn:
                conn.sendall(str(count).encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_timeout_fails_the_node(api: ApiClient) -> None:
    slow = sh_service(api, "slow", "sleep 30")
    wf, ids = make_workflow(api, "timeout", [(slow[0], {"timeout": 1})], [])
    eid = execute(api, wf)
    status = wait_done(api, eid)
    assert status["status"] == "FAILED" and "timed out after 1s" in status["error"]
    assert jobs_by_node(api, eid)[ids[0]]["status"] == "FAILED"


def test_cancel_stops_the_running_process(api: ApiClient) -> None:
    # The job runs in a PID namespace of its own: it is found from outside by its unique command.
    seconds = sleeper()
    slow = sh_service(api, "sleeper", f"exec sleep {seconds}")
    after = sh_service(api, "after-cancel", "cat")
    wf, ids = make_workflow(api, "cancel", [(slow[0], {}), (after[0], {})],
                            [(0, slow[1]["STDOUT"], 1, after[1]["STDIN"])])
    eid = execute(api, wf)
    wait_job_running(api, eid, ids[0])
    deadline = time.monotonic() + 30
    while not sleeping(seconds) and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = sleeping(seconds)
    assert pids
    r = api.post(f"/api/workflow-executions/{eid}/cancel")
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "Execution cancelled", "status": "CANCELLED"}
    assert wait_done(api, eid)["status"] == "CANCELLED"
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
    jobs = jobs_by_node(api, eid)
    assert {j["status"] for j in jobs.values()} == {"CANCELLED"}
    assert jobs[ids[1]]["started_at"] is None
    again = api.post(f"/api/workflow-executions/{eid}/cancel")
    assert again.status_code == 409 and "error" in again.json()
    assert api.post("/api/workflow-executions/999999/cancel").status_code == 404


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()


def test_rejections_name_the_culprit(api: ApiClient) -> None:
    one = sh_service(api, "loop-a", "cat")
    two = sh_service(api, "loop-b", "cat")
    wf, ids = make_workflow(api, "cycle", [(one[0], {}), (two[0], {})], [
        (0, one[1]["STDOUT"], 1, two[1]["STDIN"]), (1, two[1]["STDOUT"], 0, one[1]["STDIN"])])
    r = api.post(f"/api/workflows/{wf}/execute")
    assert r.status_code == 400
    assert "cycle" in r.json()["error"] and f"node {ids[0]}" in r.json()["error"]
    empty = api.post("/api/workflows", json={"name": "empty"}).json()["id"]
    r = api.post(f"/api/workflows/{empty}/execute")
    assert r.status_code == 400 and "no nodes" in r.json()["error"]
    wf2, _ = make_workflow(api, "out-to-out", [(one[0], {}), (two[0], {})],
                              [(0, one[1]["STDOUT"], 1, two[1]["STDOUT"])])
    r = api.post(f"/api/workflows/{wf2}/execute")
    assert r.status_code == 400 and "is an output" in r.json()["error"]
    assert api.post("/api/workflows/999999/execute").status_code == 404
    assert api.post("/api/workflows/abc/execute").status_code == 400


def test_schedule_produces_a_run(api: ApiClient) -> None:
    hello = sh_service(api, "scheduled", "echo scheduled")
    wf, ids = make_workflow(api, "scheduled", [(hello[0], {})], [])
    bad = api.post(f"/api/workflows/{wf}/schedules", json={"cron": "not a cron"})
    assert bad.status_code == 400 and "cron" in bad.json()["error"]
    r = api.post(f"/api/workflows/{wf}/schedules", json={"cron": "* * * * *"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["message"] == "Schedule created successfully"
    schedule = body["schedule"]
    assert schedule["cron"] == "* * * * *" and schedule["timezone"] == "UTC"
    assert schedule["active"] is True and schedule["workflow_id"] == wf
    listed = api.get(f"/api/workflows/{wf}/schedules").json()
    assert listed["total"] == 1 and listed["schedules"][0]["id"] == schedule["id"]
    # Trigger the deployment now rather than wait for the minute.
    deadline = time.monotonic() + WAIT
    run = api.post(f"/api/workflows/{wf}/schedules/{schedule['id']}/run")
    while run.status_code == 503 and time.monotonic() < deadline:  # Prefect still starting
        time.sleep(1)
        run = api.post(f"/api/workflows/{wf}/schedules/{schedule['id']}/run")
    assert run.status_code == 202, run.text
    done: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not done:
        items = api.get(f"/api/workflows/{wf}/execution-instances").json()["executions"]
        done = [e for e in items if e["trigger"] == "schedule" and e["status"] in TERMINAL]
        time.sleep(0.3)
    assert done and done[0]["status"] == "COMPLETED", done
    assert done[0]["prefect_flow_run_id"]
    job = jobs_by_node(api, done[0]["id"])[ids[0]]
    assert outputs(api, job["id"])["STDOUT"]["value"] == "scheduled\n"
    r = api.delete(f"/api/workflows/{wf}/schedules/{schedule['id']}")
    assert r.json() == {"message": "Schedule deleted successfully"}
    assert api.get(f"/api/workflows/{wf}/schedules").json()["total"] == 0
    assert api.delete(f"/api/workflows/{wf}/schedules/{schedule['id']}").status_code == 404


def prefect_api(node: NodeProcess) -> str:
    """The API of the Prefect server the node runs beside itself (a child process of it)."""
    for child in psutil.Process(node.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = child.cmdline()
            if "prefect.server.api.server:create_app" in cmd:
                return f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}/api"
    raise AssertionError("no Prefect server beside the node")


def test_deleting_a_workflow_removes_its_deployments(api: ApiClient,
                                                     wf_node: NodeProcess) -> None:
    hello = sh_service(api, "short-lived", "true")
    wf, _ = make_workflow(api, "short-lived", [(hello[0], {})], [])
    keep, _ = make_workflow(api, "kept", [(hello[0], {})], [])
    for workflow in (wf, keep):
        r = api.post(f"/api/workflows/{workflow}/schedules", json={"cron": "0 3 * * *"})
        assert r.status_code == 201, r.text
    deployments: dict[int, str] = {}
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and len(deployments) < 2:  # Prefect may still be starting
        for workflow in (wf, keep):
            listed = api.get(f"/api/workflows/{workflow}/schedules").json()["schedules"]
            if listed[0]["deployment_id"]:
                deployments[workflow] = listed[0]["deployment_id"]
        time.sleep(0.5)
    assert len(deployments) == 2, deployments
    prefect = prefect_api(wf_node)
    for deployment in deployments.values():
        assert httpx.get(f"{prefect}/deployments/{deployment}").status_code == 200

    r = api.delete(f"/api/workflows/{wf}")
    assert r.status_code == 200, r.text
    assert httpx.get(f"{prefect}/deployments/{deployments[wf]}").status_code == 404
    assert httpx.get(f"{prefect}/deployments/{deployments[keep]}").status_code == 200
    assert api.get(f"/api/workflows/{wf}/schedules").status_code == 404
    assert api.delete(f"/api/workflows/{keep}").status_code == 200
    assert httpx.get(f"{prefect}/deployments/{deployments[keep]}").status_code == 404


@pytest.mark.docker
def test_docker_stage_with_mount_between_stages(api: ApiClient, registry: Any) -> None:
    image, _, tag = registry.image.rpartition(":")
    r = api.post("/api/services/docker/from-registry", json={
        "service_name": "box-writer", "image_name": image, "image_tag": tag or "latest",
        "custom_interfaces": [{"interface_type": "STDIN"},
                              {"interface_type": "MOUNT", "path": "/out",
                               "mount_function": "OUTPUT"}]})
    assert r.status_code in (200, 201, 202), r.text
    sid = r.json()["service"]["id"]
    listed = api.get(f"/api/services/{sid}/interfaces").json()["interfaces"]
    box = {(i["path"] or i["interface_type"]): i["id"] for i in listed}
    src = sh_service(api, "words", "printf 'from the host'")
    reader = sh_service(api, "reader", "cat in/result.txt", [
        {"interface_type": "MOUNT", "path": "/in", "mount_function": "INPUT"},
        {"interface_type": "STDOUT"}])
    wf, ids = make_workflow(
        api, "docker-mount",
        [(src[0], {}), (sid, {"cmd": ["sh", "-c", "tr a-z A-Z > /out/result.txt"]}),
         (reader[0], {})],
        [(0, src[1]["STDOUT"], 1, box["STDIN"]), (1, box["/out"], 2, reader[1]["/in"])])
    eid = execute(api, wf)
    status = wait_done(api, eid)
    assert status["status"] == "COMPLETED", (status, jobs_by_node(api, eid))
    jobs = jobs_by_node(api, eid)
    assert outputs(api, jobs[ids[2]]["id"])["STDOUT"]["value"] == "FROM THE HOST"
    mount = outputs(api, jobs[ids[1]]["id"])["MOUNT"]
    assert mount["path"] == "/out" and mount["interface_id"] == box["/out"]


def test_kill_mid_run_marks_execution_interrupted(fresh_node: NodeProcess) -> None:
    fresh_node.start()
    c = fresh_node.client()
    try:
        slow = sh_service(c, "long", "sleep 60")
        wf, ids = make_workflow(c, "interrupted", [(slow[0], {})], [])
        eid = execute(c, wf)
        wait_job_running(c, eid, ids[0])
    finally:
        c.close()
    fresh_node.kill()
    fresh_node.start()
    c = fresh_node.client()
    try:
        status = c.get(f"/api/workflow-executions/{eid}/status").json()
        assert status["status"] == "FAILED" and "interrupted" in status["error"]
        job = jobs_by_node(c, eid)[ids[0]]
        assert job["status"] == "FAILED" and "interrupted" in job["error"]
    finally:
        c.close()


def test_retention_deletes_old_executions_their_outputs_and_flow_runs(tmp_path: Path) -> None:
    """A node keeping executions for 0.0001 days (8.6 s), swept every half second: an ended
    execution goes with its jobs, its flow run and logs in Prefect, and the outputs only it
    held; the workflow stays."""
    prefect_port = free_port()
    node = NodeProcess(tmp_path / "node", extra_args=["--prefect-ui", "--prefect-port",
                                                      str(prefect_port)],
                       env={"RN_RETENTION_DAYS": "0.0001", "RN_RETENTION_SWEEP_SECONDS": "0.5"})
    node.start()
    c = node.client()
    try:
        gen = sh_service(c, "kept-briefly", "echo retention-$$")  # its pid: unique bytes
        wf, ids = make_workflow(c, "short-lived", [(gen[0], {})], [])
        eid = execute(c, wf)
        assert wait_done(c, eid)["status"] == "COMPLETED"
        job = jobs_by_node(c, eid)[ids[0]]
        digest = outputs(c, job["id"])["STDOUT"]["artifact_hash"]
        artifact = node.data_dir / "artifacts" / digest[:2] / digest
        (instance,) = c.get(f"/api/workflows/{wf}/execution-instances").json()["executions"]
        flow_run = f"http://127.0.0.1:{prefect_port}/api/flow_runs/{instance['prefect_flow_run_id']}"
        assert artifact.is_file()
        assert httpx.get(flow_run, timeout=10).status_code == 200
        logs_url = f"http://127.0.0.1:{prefect_port}/api/logs/filter"
        its_logs = {"logs": {"flow_run_id": {"any_": [instance["prefect_flow_run_id"]]}}}

        def logs() -> list[Any]:
            found: list[Any] = httpx.post(logs_url, json=its_logs, timeout=10).json()
            return found

        wait_until(logs, 30, "the job's output lines as its task run's logs")

        def swept() -> bool:
            return c.get(f"/api/workflow-executions/{eid}/status").status_code == 404

        wait_until(swept, 60, f"execution {eid} deleted")
        assert c.get(f"/api/job-executions/{job['id']}/interfaces").status_code == 404
        wait_until(lambda: not artifact.exists(), 30, "its output removed")
        wait_until(lambda: httpx.get(flow_run, timeout=10).status_code == 404, 30,
                   "its flow run deleted from Prefect")
        wait_until(lambda: not logs(), 60, "its logs deleted from Prefect")
        assert c.get(f"/api/workflows/{wf}").status_code == 200
        assert "retention: deleted 1 execution(s)" in node.log()
    finally:
        c.close()
        node.stop()
