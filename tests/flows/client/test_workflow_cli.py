"""Workflows in Python and ``remote-network workflow`` against a real node process.

Services are real standalone services created through POST /api/services/standalone/from-local;
the client mints its token from the node's data dir as ``remote-network token`` does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.client.define import DefinitionError, Workflow
from flows.client.node_client import NodeClient, NodeError
from orchestrator.cli import main as cli_main
from tests.support.node_process import REPO, NodeProcess

BUSYBOX = "/bin/busybox"


@pytest.fixture(scope="module")
def node_client(node_proc: NodeProcess) -> Iterator[NodeClient]:
    with NodeClient.local(node_proc.data_dir, url=node_proc.http_url) as client:
        yield client


@pytest.fixture(scope="module")
def svc(node_client: NodeClient) -> dict[str, int]:
    """Three standalone services with unique names; name -> id."""
    tag = uuid.uuid4().hex[:6]
    specs: dict[str, tuple[list[str], list[dict[str, Any]] | None]] = {
        f"f-gen-{tag}": (["printf", "hello remote network\n"], None),
        f"f-upper-{tag}": (["tr", "a-z", "A-Z"], None),
        f"f-count-{tag}": (["wc", "-c"], [
            {"interface_type": "STDIN"}, {"interface_type": "STDOUT"},
            {"interface_type": "ENV", "path": "LABEL"},
            {"interface_type": "MOUNT", "path": "/in", "mount_function": "INPUT"}]),
    }
    return {name: node_client.ensure_standalone_service(name, BUSYBOX, arguments=args,
                                                        interfaces=ifaces)
            for name, (args, ifaces) in specs.items()}


def names(svc: dict[str, int]) -> tuple[str, str, str]:
    gen, upper, count = svc
    return gen, upper, count


def cli(*args: str, node: NodeProcess, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``remote-network workflow ...`` in this process, aimed at ``node``."""
    capsys.readouterr()
    code = cli_main(["workflow", *args, "--data-dir", str(node.data_dir), "--url",
                     node.http_url])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the client --------------------------------------------------------------------------------
def test_local_client_mints_a_token_the_node_accepts(node_client: NodeClient,
                                                     node_proc: NodeProcess) -> None:
    status = node_client.get("/api/node/status")
    assert len(status["peer_id"]) == 40 and status["peer_id"] == node_client.peer_id()
    with NodeClient(node_proc.http_url, "not-a-token") as bad, \
            pytest.raises(NodeError, match="401") as err:
        bad.services()
    assert err.value.status == 401


def test_no_node_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match="no node data in"):
        NodeClient.local(tmp_path)
    assert list(tmp_path.iterdir()) == []  # a client creates nothing


# -- register ----------------------------------------------------------------------------------
def test_register_creates_nodes_and_connections_with_real_interface_ids(
        node_client: NodeClient, svc: dict[str, int]) -> None:
    gen, upper, count = names(svc)
    with Workflow(f"f-reg-{uuid.uuid4().hex[:6]}", "register test") as wf:
        a = wf.step(gen, name="gen", timeout=20)
        b = wf.step(upper, name="upper", retry_count=2)
        c = wf.step(svc[count], name="count")
        a.stdout >> b.stdin
        b.stdout >> c.stdin
        a.stdout >> c.env("LABEL")
    wid = wf.register(node_client)

    stored = node_client.get(f"/api/workflows/{wid}")
    assert stored["name"] == wf.name and stored["definition"] == wf.to_dict()
    nodes = {n["gui_props"]["label"]: n for n in
             node_client.get(f"/api/workflows/{wid}/nodes")["nodes"]}
    assert {k: (n["service_id"], n["config"]) for k, n in nodes.items()} == {
        "gen": (svc[gen], {"timeout": 20}), "upper": (svc[upper], {"retry_count": 2}),
        "count": (svc[count], {})}
    assert all(n["peer_id"] == node_client.peer_id() for n in nodes.values())
    assert wf.node_ids == {k: n["id"] for k, n in nodes.items()}

    def iface(service: str, kind: str, path: str = "") -> int:
        return next(i["id"] for i in node_client.interfaces(svc[service])
                    if i["interface_type"] == kind and (i["path"] or "") == path)

    conns = {(c["source_node_id"], c["source_interface_id"], c["target_node_id"],
              c["target_interface_id"])
             for c in node_client.get(f"/api/workflows/{wid}/connections")["connections"]}
    assert conns == {
        (nodes["gen"]["id"], iface(gen, "STDOUT"), nodes["upper"]["id"], iface(upper, "STDIN")),
        (nodes["upper"]["id"], iface(upper, "STDOUT"), nodes["count"]["id"],
         iface(count, "STDIN")),
        (nodes["gen"]["id"], iface(gen, "STDOUT"), nodes["count"]["id"],
         iface(count, "ENV", "LABEL")),
    }


def test_register_again_replaces_the_definition_and_keeps_the_id(
        node_client: NodeClient, svc: dict[str, int]) -> None:
    gen, upper, count = names(svc)
    name = f"f-replace-{uuid.uuid4().hex[:6]}"
    first = Workflow(name)
    first.connect(first.step(gen).stdout, first.step(upper).stdin)
    wid = first.register(node_client)
    assert len(node_client.get(f"/api/workflows/{wid}/nodes")["nodes"]) == 2

    second = Workflow(name, "now three steps")
    a, b, c = second.step(gen), second.step(upper), second.step(count)
    a.stdout >> b.stdin
    b.stdout >> c.stdin
    assert second.register(node_client) == wid
    nodes = node_client.get(f"/api/workflows/{wid}/nodes")["nodes"]
    assert sorted((n["gui_props"]["label"], n["service_id"]) for n in nodes) == sorted(
        (name_, svc[name_]) for name_ in (gen, upper, count))
    assert second.node_ids == {n["gui_props"]["label"]: n["id"] for n in nodes}
    assert len(node_client.get(f"/api/workflows/{wid}/connections")["connections"]) == 2
    assert node_client.get(f"/api/workflows/{wid}")["description"] == "now three steps"
    assert [w["id"] for w in node_client.workflows() if w["name"] == name] == [wid]


def test_bad_references_change_nothing_on_the_node(node_client: NodeClient,
                                                   svc: dict[str, int]) -> None:
    gen, upper, _count = names(svc)
    before = len(node_client.workflows())
    typo = Workflow(f"f-typo-{uuid.uuid4().hex[:6]}")
    typo.connect(typo.step(gen).stdout, typo.step(upper[:-1] + "x", name="up").stdin)
    with pytest.raises(DefinitionError, match=f"no service named '{upper[:-1]}x' on this node "
                       f"\\(did you mean: {upper}"):
        typo.register(node_client)
    no_iface = Workflow(f"f-iface-{uuid.uuid4().hex[:6]}")
    no_iface.connect(no_iface.step(gen).stdout, no_iface.step(upper).mount("/in"))
    with pytest.raises(DefinitionError, match=f"service '{upper}' \\(id {svc[upper]}\\) has no "
                       "MOUNT /in interface"):
        no_iface.register(node_client)
    assert len(node_client.workflows()) == before


# -- the command -------------------------------------------------------------------------------
def test_apply_python_yaml_and_template_files(node_proc: NodeProcess, node_client: NodeClient,
                                              svc: dict[str, int], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    gen, upper, count = names(svc)
    name = f"f-chain-{uuid.uuid4().hex[:6]}"
    code, out, err = cli("apply", str(REPO / "templates" / "chain.yaml.j2"), "--set",
                         f"services={gen},{upper},{count}", "--set", f"name={name}",
                         "--set", "timeout=45", node=node_proc, capsys=capsys)
    assert (code, err) == (0, "")
    wid = node_client.find_workflow(name)["id"]
    assert out == f"workflow '{name}' registered as id {wid} (3 steps, 2 connections)\n"
    configs = [n["config"] for n in node_client.get(f"/api/workflows/{wid}/nodes")["nodes"]]
    assert configs == [{"timeout": 45}] * 3

    path = tmp_path / "pipe.yaml"
    path.write_text(f"name: {name}\nnodes:\n  g: {{service: {gen}}}\n  u: {{service: {upper}}}\n"
                    "edges: ['g.stdout -> u.stdin']\n")
    code, out, _ = cli("apply", str(path), node=node_proc, capsys=capsys)
    assert code == 0 and f"registered as id {wid} (2 steps, 1 connections)" in out

    code, out, err = cli("apply", str(REPO / "examples" / "text_pipeline.py"), node=node_proc,
                         capsys=capsys)
    assert code == 0, err
    pipeline = node_client.find_workflow("text-pipeline")
    assert f"registered as id {pipeline['id']} (3 steps, 2 connections)" in out
    # setup() created the example's services on the node.
    assert {"text-generate", "text-upper", "text-count"} <= {
        s["name"] for s in node_client.services()}


def test_apply_errors_are_one_line_and_a_usage_code(node_proc: NodeProcess, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli("apply", str(REPO / "templates" / "chain.yaml.j2"), node=node_proc,
                         capsys=capsys)
    assert (code, out) == (2, "")
    assert err == ("remote-network: template chain.yaml.j2: parameter 'services' is required "
                   "(give it with --set KEY=VALUE)\n")
    code, _, err = cli("apply", str(REPO / "templates" / "chain.yaml.j2"), "--set",
                       "services=f-no-such-service-xyz", node=node_proc, capsys=capsys)
    assert code == 2 and "no service named 'f-no-such-service-xyz'" in err
    code, _, err = cli("run", "f-no-such-workflow", node=node_proc, capsys=capsys)
    assert code == 1 and err == "remote-network: no workflow named 'f-no-such-workflow' on " \
        "this node\n"


def test_list_from_a_real_command_process(node_proc: NodeProcess, node_client: NodeClient,
                                          svc: dict[str, int]) -> None:
    gen, _, _ = names(svc)
    wf = Workflow(f"f-list-{uuid.uuid4().hex[:6]}", "listed")
    wf.step(gen)
    wid = wf.register(node_client)
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "workflow", "list",
                           "--data-dir", str(node_proc.data_dir), "--url", node_proc.http_url],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "UPDATED", "DESCRIPTION"]
    mine = [r for r in rows if r.split()[:2] == [str(wid), wf.name]]
    assert len(mine) == 1 and mine[0].endswith("listed")


# -- watching an execution and collecting its outputs (records written as the engine does) ------
def test_wait_and_collect_read_the_execution_records(node_proc: NodeProcess,
                                                     node_client: NodeClient,
                                                     svc: dict[str, int]) -> None:
    from flows.client.submit import WaitTimeout, collect, wait_until_done
    from tests.api.helpers import insert

    gen, upper, _ = names(svc)
    wf = Workflow(f"f-collect-{uuid.uuid4().hex[:6]}")
    wf.connect(wf.step(gen, name="gen").stdout, wf.step(upper, name="up").stdin)
    wid = wf.register(node_client)
    now = "2026-01-01 00:00:00"
    done = insert(node_proc, "workflow_executions", workflow_id=wid, status="COMPLETED",
                  progress=100, plan={}, trigger="api", created_at=now)
    jobs = {}
    for step_name, text in (("gen", "hello\n"), ("up", "HELLO\n")):
        jobs[step_name] = insert(node_proc, "job_executions", workflow_execution_id=done,
                                 workflow_id=wid, node_id=wf.node_ids[step_name],
                                 service_id=svc[gen if step_name == "gen" else upper],
                                 peer_id="", requester_peer_id="", status="COMPLETED",
                                 attempt=1, exit_code=0, created_at=now)
        insert(node_proc, "job_execution_interfaces", job_execution_id=jobs[step_name],
               interface_type="STDOUT", direction="output", path="", value=text,
               artifact_hash="ab" * 32, size=len(text))
        insert(node_proc, "job_execution_interfaces", job_execution_id=jobs[step_name],
               interface_type="STDIN", direction="input", path="", value="ignored",
               artifact_hash="", size=7)

    seen: list[str] = []
    final = wait_until_done(node_client, done, timeout=30,
                            on_progress=lambda s: seen.append(s["status"]))
    assert seen == ["COMPLETED"] and final["progress"] == 100
    execution = collect(node_client, final)
    assert execution.ok and execution.workflow_id == wid
    assert [(j.step, j.job_id, j.final) for j in execution.jobs] == [
        ("gen", jobs["gen"], False), ("up", jobs["up"], True)]
    assert execution.output("up") == "HELLO\n" and execution.output("gen") == "hello\n"
    assert execution.job("up").outputs == {"STDOUT": "HELLO\n"}
    assert execution.job("up").artifacts == {"STDOUT": "ab" * 32}
    with pytest.raises(KeyError, match="no job for step 'nope'"):
        execution.job("nope")

    running = insert(node_proc, "workflow_executions", workflow_id=wid, status="RUNNING",
                     progress=50, plan={}, trigger="api", created_at=now)
    with pytest.raises(WaitTimeout, match=f"execution {running} still RUNNING after 0.3 s"):
        wait_until_done(node_client, running, timeout=0.3, poll_interval=0.1)


def test_progress_bar_writes_a_line_per_change() -> None:
    import io

    from flows.client.cli_workflow import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(stream, 7)
    for status, progress in (("PENDING", 0), ("RUNNING", 0), ("RUNNING", 0), ("RUNNING", 50),
                             ("COMPLETED", 100)):
        bar({"status": status, "progress": progress})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "execution 7 [------------------------------]   0% PENDING",
        "execution 7 [------------------------------]   0% RUNNING",
        "execution 7 [###############---------------]  50% RUNNING",
        "execution 7 [##############################] 100% COMPLETED",
    ]


# -- end to end: the examples run on the node's workflow engine --------------------------------
def test_text_pipeline_example_end_to_end(node_proc: NodeProcess, node_client: NodeClient,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, err = cli("apply", str(REPO / "examples" / "text_pipeline.py"), "--run", "--json",
                         "--timeout", "240", node=node_proc, capsys=capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "COMPLETED" and result["error"] is None
    jobs = {j["step"]: j for j in result["jobs"]}
    assert sorted(jobs) == ["count", "generate", "upper"]
    assert [jobs[s]["final"] for s in ("generate", "upper", "count")] == [False, False, True]
    assert jobs["generate"]["outputs"]["STDOUT"] == "hello from the remote network\n"
    assert jobs["upper"]["outputs"]["STDOUT"] == "HELLO FROM THE REMOTE NETWORK\n"
    assert jobs["count"]["outputs"]["STDOUT"] == "30\n"
    assert "100% COMPLETED" in err.splitlines()[-1]  # the progress on stderr

    # Run again by name, waiting, with the human-readable report.
    code, out, err = cli("run", "text-pipeline", "--wait", node=node_proc, capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("execution ") and lines[0].endswith(": COMPLETED")
    assert lines[1:4] == ["  generate: COMPLETED", "  upper: COMPLETED", "  count: COMPLETED"]
    assert lines[4:] == ["--- count stdout ---", "30"]
    assert int(lines[0].split()[1].rstrip(":")) != result["execution_id"]


def test_template_example_runs_through_the_python_api(node_client: NodeClient) -> None:
    from flows.client.files import load

    loaded = load(REPO / "examples" / "fan_out.py")
    assert loaded.setup is not None
    loaded.setup(node_client)
    wf = loaded.workflow
    seen: list[str] = []
    execution = wf.run(node_client, timeout=240, poll_interval=0.2,
                       on_progress=lambda s: seen.append(s["status"]))
    assert execution.ok, execution.error
    assert seen[-1] == "COMPLETED"
    assert {j.step: (j.outputs["STDOUT"], j.final) for j in execution.jobs} == {
        "text-lines": ("one two three\nfour five\nsix\n", False),
        "count-lines": ("3\n", True), "count-words": ("6\n", True),
        "count-bytes": ("28\n", True)}


def test_a_delivered_output_comes_back_under_its_name(node_client: NodeClient,
                                                     svc: dict[str, int]) -> None:
    gen, upper, _ = names(svc)
    wf = Workflow(f"f-deliver-{uuid.uuid4().hex[:6]}")
    a, b = wf.step(gen, name="gen"), wf.step(upper, name="upper")
    a.stdout >> b.stdin
    wf.deliver(b.stdout, as_name="shout.txt")
    execution = wf.run(node_client, timeout=240, poll_interval=0.2)
    assert execution.ok, execution.error
    result = execution.results["shout.txt"]
    assert (result["interface_type"], result["node_id"]) == ("STDOUT", wf.node_ids["upper"])
    assert result["size"] == len("HELLO REMOTE NETWORK\n")
    # A step whose output is only delivered is still a result of the workflow.
    assert {j.step: j.final for j in execution.jobs} == {"gen": False, "upper": True}
    rows = node_client.get(f"/api/workflows/{wf.id}/connections")["connections"]
    assert [(r["target_node_id"], r.get("destination_file_name")) for r in rows
            if r["source_node_id"] == wf.node_ids["upper"]] == [(None, "shout.txt")]


def test_schedule_create_list_delete(node_proc: NodeProcess, node_client: NodeClient,
                                     svc: dict[str, int],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    gen, _, _ = names(svc)
    wf = Workflow(f"f-sched-{uuid.uuid4().hex[:6]}")
    wf.step(gen)
    wid = wf.register(node_client)

    code, out, err = cli("schedule", wf.name, "--cron", "*/5 * * * *", "--timezone",
                         "Europe/Paris", node=node_proc, capsys=capsys)
    assert code == 0, err
    schedules = node_client.get(f"/api/workflows/{wid}/schedules")["schedules"]
    assert [(s["cron"], s["timezone"], s["active"]) for s in schedules] == [
        ("*/5 * * * *", "Europe/Paris", True)]
    sid = schedules[0]["id"]
    assert out == f"schedule {sid} created: workflow {wid} at '*/5 * * * *' (Europe/Paris)\n"

    code, out, _ = cli("schedule", "list", str(wid), node=node_proc, capsys=capsys)
    assert code == 0
    assert out.splitlines()[1].split()[:5] == [str(sid), "*/5", "*", "*", "*"]

    code, _, err = cli("schedule", wf.name, "--cron", "not a cron", node=node_proc,
                       capsys=capsys)
    assert code == 1 and "400" in err and "not a cron" in err
    code, _, err = cli("schedule", wf.name, node=node_proc, capsys=capsys)
    assert code == 2 and "--cron" in err

    code, out, _ = cli("schedule", "delete", wf.name, str(sid), node=node_proc, capsys=capsys)
    assert (code, out) == (0, f"schedule {sid} of workflow {wid} deleted\n")
    assert node_client.get(f"/api/workflows/{wid}/schedules") == {"schedules": [], "total": 0}
    code, out, _ = cli("schedule", "list", wf.name, node=node_proc, capsys=capsys)
    assert (code, out) == (0, f"workflow {wid} has no schedules\n")


def test_interrupted_wait_then_status_and_cancel(node_proc: NodeProcess,
                                                node_client: NodeClient,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C stops waiting, not the execution; ``status`` and ``cancel`` take it from there."""
    tag = uuid.uuid4().hex[:6]
    node_client.ensure_standalone_service(f"f-sleep-{tag}", BUSYBOX,
                                          arguments=["sh", "-c", "echo begun; exec sleep 60"])
    wf = Workflow(f"f-interrupt-{tag}")
    wf.step(f"f-sleep-{tag}", name="nap")
    wf.register(node_client)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "workflow", "run",
                             wf.name, "--wait", "--data-dir", str(node_proc.data_dir),
                             "--url", node_proc.http_url],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # a line per progress change; bounded by the execution
            seen.append(line)
            if "RUNNING" in line:
                break
        assert seen and "RUNNING" in seen[-1], seen
        execution_id = int(seen[-1].split()[1])
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert err.strip().endswith(
        f"stopped waiting; execution {execution_id} goes on on the node ('remote-network "
        f"workflow status {execution_id}' shows it, 'remote-network workflow cancel "
        f"{execution_id}' stops it)"), err

    code, out, _ = cli("status", str(execution_id), node=node_proc, capsys=capsys)
    assert (code, out) == (0, f"execution {execution_id} of workflow {wf.id}: RUNNING, "
                              "0% of its jobs done\n")
    code, out, _ = cli("cancel", str(execution_id), node=node_proc, capsys=capsys)
    assert (code, out) == (0, f"execution {execution_id}: CANCELLED\n")
    code, out, _ = cli("status", str(execution_id), node=node_proc, capsys=capsys)
    assert code == 1
    assert out.splitlines()[:2] == [f"execution {execution_id}: CANCELLED: cancelled",
                                    "  nap: CANCELLED: cancelled"]
    code, _, err = cli("cancel", str(execution_id), node=node_proc, capsys=capsys)
    assert code == 1 and "409" in err and "already finished" in err
