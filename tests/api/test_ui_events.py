"""The original UI's WebSocket dialect: the translations, and a real node's sockets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from api import ui_events
from api.ui_events import Sources
from orchestrator import events as ev
from orchestrator.db import Database
from orchestrator.errors import Forbidden, NotFound
from orchestrator.events import EventBus
from orchestrator.models import StandaloneDetails
from orchestrator.peer_policy import PeerPolicy, PolicyConfig
from orchestrator.registry import ServiceRegistry
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import Interface
from tests.api.test_websocket import call, next_of, ws_connect
from tests.support.node_process import ApiClient, insecure_tls
from tests.support.workflows import WAIT, execute, make_workflow, sh_service, wait_done

T0 = dt.datetime(2024, 1, 2, 3, 4, 5)
T0_UNIX = int(T0.replace(tzinfo=dt.UTC).timestamp())


# -- the pure part -----------------------------------------------------------------------------
class Records:
    def __init__(self, rows: dict[int, Any]) -> None:
        self.rows = rows

    def execution(self, execution_id: int) -> Any:
        if execution_id not in self.rows:
            raise NotFound("Workflow execution not found")
        return self.rows[execution_id]

    def latest_statuses(self) -> dict[int, str]:
        latest: dict[int, Any] = {}
        for row_id in sorted(self.rows):
            latest[self.rows[row_id].workflow_id] = self.rows[row_id].status
        return latest


class NoRelays:
    def relay_server(self) -> Any:
        raise Forbidden("not a relay")

    def relay_client(self) -> Any:
        raise Forbidden("not behind NAT")


@pytest.fixture
def registry(tmp_path: Path) -> ServiceRegistry:
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    db.migrate()
    return ServiceRegistry(db, EventBus())


def sources(registry: ServiceRegistry | None = None, **over: Any) -> Sources:
    parts: dict[str, Any] = {
        "records": Records({}),
        "services": registry or SimpleNamespace(list=lambda: []),
        "policy": PeerPolicy(PolicyConfig()),
        "workflows": SimpleNamespace(list=lambda: []),
        "blacklist": SimpleNamespace(list=lambda: []),
        "discovery": SimpleNamespace(list_peers=lambda: {"peers": [], "total": 0}),
        "control": SimpleNamespace(status=lambda: {"peer_id": "me"}),
        "relays": NoRelays(),
    }
    parts.update(over)
    return Sources(**parts)


@pytest.mark.parametrize(("kind", "ui"), [
    ("ping", True), ("service.search.request", True), ("file.upload.start", True),
    ("PING", False), ("SERVICE_SEARCH", False), ("FILE_UPLOAD_START", False),
    ("NO_SUCH_TYPE", False), ("pong2", False), ("", False), ("Service.Search", False),
    ("service.", False), (".x", False),
])
def test_dialect_rule(kind: str, ui: bool) -> None:
    assert ui_events.speaks_ui(kind) is ui


def test_envelope_and_error() -> None:
    assert ui_events.envelope("x.y", {"a": 1}, now=12.9) == {
        "type": "x.y", "payload": {"a": 1}, "timestamp": 12}
    err = ui_events.error("bad", request_type="file.upload.start")
    assert err["type"] == "error" and isinstance(err["timestamp"], int)
    assert err["payload"] == {"error": "bad", "request_type": "file.upload.start"}


def test_execution_updated_reads_the_times() -> None:
    row = SimpleNamespace(started_at=T0, completed_at=None, plan={})
    src = sources(records=Records({7: row}))
    payload = {"execution_id": 7, "workflow_id": 3, "status": "RUNNING", "progress": 0,
               "error": None}
    [msg] = ui_events.translate(ev.EXECUTION_UPDATED, payload, src)
    assert msg["type"] == "execution.updated"
    assert msg["payload"] == {"execution_id": 7, "workflow_id": 3, "status": "RUNNING",
                              "error": None, "started_at": "2024-01-02T03:04:05Z",
                              "completed_at": None}
    # A vanished execution: the event's fields, no times.
    [gone] = ui_events.translate(ev.EXECUTION_UPDATED, {**payload, "execution_id": 8}, src)
    assert gone["payload"]["started_at"] is None and gone["payload"]["execution_id"] == 8


def test_job_status_updated_names_the_service() -> None:
    plan = {"nodes": [{"node_id": 11, "service_id": 5, "service_name": "gen"},
                      {"node_id": 12, "service_id": 6, "service_name": ""}]}
    src = sources(records=Records({7: SimpleNamespace(plan=plan)}))
    job = {"job_id": 40, "execution_id": 7, "node_id": 11, "workflow_id": 3,
           "status": "FAILED", "attempt": 1, "exit_code": 2, "error": "boom"}
    [msg] = ui_events.translate(ev.JOB_UPDATED, job, src)
    assert msg["type"] == "job.status.updated"
    assert msg["payload"] == {"job_execution_id": 40, "execution_id": 7, "status": "FAILED",
                              "error": "boom", "job_name": "gen", "workflow_job_id": 11}
    [other] = ui_events.translate(ev.JOB_UPDATED, {**job, "node_id": 12}, src)
    assert other["payload"]["job_name"] == "service-6"
    # Another peer's job has no local execution: nothing for the UI.
    remote = {**job, "execution_id": None, "requester_peer_id": "p"}
    assert ui_events.translate(ev.JOB_UPDATED, remote, src) == []


def test_services_updated_is_the_full_list(registry: ServiceRegistry) -> None:
    for name in ("cat", "tac"):
        registry.create(name=name, service_type=ServiceType.STANDALONE,
                        interfaces=[Interface(InterfaceType.STDIN)],
                        details=StandaloneDetails(executable_path="/bin/cat"))
    src = sources(registry)
    [msg] = ui_events.translate(ev.SERVICE_UPDATED,
                                {"action": "created", "service_id": 2}, src)
    assert msg["type"] == "services.updated"
    services = msg["payload"]["services"]
    assert [s["name"] for s in services] == ["cat", "tac"]
    for s in services:
        assert isinstance(s["created_at"], int) and isinstance(s["updated_at"], int)
        row = registry.get(s["id"]).service
        assert s["created_at"] == int(row.created_at.replace(tzinfo=dt.UTC).timestamp())
        assert s["config"] == s["capabilities"]
        assert s["service_type"] == "STANDALONE" and s["interfaces"]
        assert {"id", "type", "endpoint", "status", "description", "pricing_amount"} <= set(s)


def test_snapshots_of_workflows_blacklist_and_peers() -> None:
    wf = SimpleNamespace(id=1, name="w", description="", definition={}, created_at=T0,
                         updated_at=T0)
    ran = SimpleNamespace(id=2, name="r", description="", definition={}, created_at=T0,
                          updated_at=T0)
    runs = Records({1: SimpleNamespace(workflow_id=2, status="FAILED"),
                    2: SimpleNamespace(workflow_id=2, status="COMPLETED")})
    entry = SimpleNamespace(peer_id="a" * 40, reason="spam", blacklisted_at=T0)
    peer = {"peer_id": "b" * 40, "dht_node_id": "", "is_relay": False,
            "last_seen": "2024-01-02T03:04:05Z"}
    broken = {**peer, "peer_id": "c" * 40, "last_seen": ""}
    src = sources(records=runs, workflows=SimpleNamespace(list=lambda: [wf, ran]),
                  blacklist=SimpleNamespace(list=lambda: [entry]),
                  discovery=SimpleNamespace(list_peers=lambda: {"peers": [peer, broken]}))
    [w] = ui_events.translate(ev.WORKFLOW_UPDATED, {"action": "created"}, src)
    assert w["type"] == "workflows.updated"
    # Never run: "idle"; else its latest execution's status, lowercase.
    assert w["payload"]["workflows"] == [
        {"id": 1, "name": "w", "description": "", "definition": {}, "created_at": T0_UNIX,
         "updated_at": T0_UNIX, "status": "idle"},
        {"id": 2, "name": "r", "description": "", "definition": {}, "created_at": T0_UNIX,
         "updated_at": T0_UNIX, "status": "completed"}]
    [b] = ui_events.translate(ev.BLACKLIST_UPDATED, {"action": "added"}, src)
    assert b == {**b, "type": "blacklist.updated", "payload": {"blacklist": [
        {"peer_id": "a" * 40, "reason": "spam", "added_at": T0_UNIX}]}}
    [p] = ui_events.translate(ev.PEER_UPDATED, {"action": "added"}, src)
    assert p["type"] == "peers.updated"
    assert p["payload"]["peers"] == [{**peer, "last_seen": T0_UNIX}]


def test_renamed_events_keep_their_payload(registry: ServiceRegistry) -> None:
    src = sources(registry)
    caps = {"peer_id": "p", "capabilities": {"cpu_cores": 2}}
    [c] = ui_events.translate(ev.PEER_CAPABILITIES_UPDATED, caps, src)
    assert (c["type"], c["payload"]) == ("peer.capabilities.updated", caps)
    relay = {"candidates": [], "connected_relay": ""}
    [r] = ui_events.translate(ev.RELAY_CANDIDATES, relay, src)
    assert (r["type"], r["payload"]) == ("relay.candidates", relay)
    start = {"operation_id": "op", "message": "m", "percentage": 0}
    [s] = ui_events.translate(ev.DOCKER_OPERATION_START, start, src)
    assert (s["type"], s["payload"]) == ("docker.operation.start", start)
    [g] = ui_events.translate(ev.DOCKER_OPERATION_PROGRESS,
                              {"operation_id": "op", "message": "m", "log": "Step 1"}, src)
    assert g["type"] == "docker.operation.progress" and g["payload"]["stream"] == "Step 1"
    pull = {"operation_id": "op", "message": "Pulling", "percentage": 40, "phase": "pull",
            "service_name": "web", "image_name": "nginx:1", "log": "Downloading layer"}
    [g, p] = ui_events.translate(ev.DOCKER_OPERATION_PROGRESS, pull, src)
    assert g["type"] == "docker.operation.progress"
    assert (p["type"], p["payload"]) == ("docker.pull.progress", {
        "service_name": "web", "image_name": "nginx:1", "status": "Downloading layer",
        "progress": 40})
    build = {**pull, "phase": "build", "log": "Step 1/2 : FROM busybox"}
    [g, b] = ui_events.translate(ev.DOCKER_OPERATION_PROGRESS, build, src)
    assert (b["type"], b["payload"]) == ("docker.build.output", {
        "service_name": "web", "image_name": "nginx:1", "stream": "Step 1/2 : FROM busybox",
        "error": None})
    assert "stream" not in g["payload"]  # the wizard prints a line once, not once per message
    # A build step without a line of output says nothing in the UI's build log.
    assert len(ui_events.translate(ev.DOCKER_OPERATION_PROGRESS,
                                   {**build, "log": None}, src)) == 1
    [e] = ui_events.translate(ev.DOCKER_OPERATION_ERROR,
                              {"operation_id": "op", "message": "m", "error": "x"}, src)
    assert e["type"] == "docker.operation.error" and e["payload"]["error"] == "x"
    view = registry.create(name="img", service_type=ServiceType.STANDALONE,
                           details=StandaloneDetails(executable_path="/bin/cat"))
    [done] = ui_events.translate(ev.DOCKER_OPERATION_COMPLETE, {
        "operation_id": "op", "service_id": view.service.id, "image": "i:1"}, src)
    assert done["type"] == "docker.operation.complete"
    assert done["payload"]["service"]["id"] == view.service.id
    assert ui_events.translate(ev.JOB_LOG, {"line": "x"}, src) == []


def test_periodic_snapshots_and_their_periods() -> None:
    assert ui_events.due(0) == list(ui_events.PERIODS)
    assert set(ui_events.due(5)) == {"node.status", "relay.sessions", "relay.candidates"}
    assert set(ui_events.due(10)) == {"node.status", "relay.sessions", "relay.candidates",
                                      "peers.updated"}
    assert "services.updated" in ui_events.due(15) and "blacklist.updated" in ui_events.due(30)
    assert "blacklist.updated" not in ui_events.due(15)
    # Outside relay and NAT mode there are no relay snapshots.
    kinds = [m["type"] for m in ui_events.periodic(0, sources())]
    assert kinds == ["node.status", "peers.updated", "services.updated", "workflows.updated",
                     "blacklist.updated"]
    [status] = ui_events.periodic(5, sources())
    assert status["payload"] == {"peer_id": "me"}


def test_relay_snapshots_in_their_modes() -> None:
    server = SimpleNamespace(sessions=lambda: [{"session_id": "s", "client_peer_id": "x",
                                                "ingress_bytes": 1, "egress_bytes": 2,
                                                "total_bytes": 3, "earnings": 0.5}])
    client = SimpleNamespace(candidates=lambda: [{"peer_id": "r"}], connected_relay_id="r")
    relays = SimpleNamespace(relay_server=lambda: server, relay_client=lambda: client)
    by_type = {m["type"]: m["payload"] for m in ui_events.periodic(5, sources(relays=relays))}
    assert by_type["relay.sessions"]["sessions"][0]["remote_peer_id"] == "x"
    assert by_type["relay.candidates"] == {"candidates": [{"peer_id": "r"}],
                                           "connected_relay": "r"}


def test_a_failing_snapshot_leaves_the_others() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("down")

    kinds = [m["type"] for m in ui_events.periodic(
        0, sources(discovery=SimpleNamespace(list_peers=broken)))]
    assert "peers.updated" not in kinds and "node.status" in kinds


# -- over a real node's WebSocket ----------------------------------------------------------------
class Collector:
    """Every message a socket receives, read in the background."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                self.messages.append(json.loads(await self.ws.recv()))

    async def wait_for(self, kind: str, pred: Any = None, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if m.get("type") == kind and (pred is None or pred(m["payload"])):
                    return m
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {kind} within {timeout} s: "
                             f"{[m.get('type') for m in self.messages][-20:]}")

    def types(self) -> list[str]:
        return [m.get("type", "") for m in self.messages]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def switch_to_ui(ws: Any) -> None:
    await ws.send(json.dumps({"type": "ping", "timestamp": int(time.time() * 1000)}))
    await next_of(ws, "pong")


def is_reference_type(kind: str) -> bool:
    return kind == kind.upper() and "." not in kind


async def test_ui_connection_gets_full_snapshots_and_reference_client_does_not(
        client: ApiClient) -> None:
    async with ws_connect(client) as ref_ws, ws_connect(client) as ui_ws:
        await switch_to_ui(ui_ws)
        ui, ref = Collector(ui_ws), Collector(ref_ws)
        try:
            first = await ui.wait_for("node.status")
            assert first["payload"]["peer_id"]
            assert isinstance(first["timestamp"], int)
            assert {"uptime_seconds", "known_peers", "stats"} <= set(first["payload"])

            name = f"ui-{secrets.token_hex(4)}"
            svc = (await call(client, "POST", "/api/services",
                              json={"type": "docker", "name": name, "endpoint": "e"}))["service"]
            listed = await call(client, "GET", "/api/services")
            msg = await ui.wait_for("services.updated", lambda p: any(
                s["id"] == svc["id"] for s in p["services"]))
            services = msg["payload"]["services"]
            assert {s["id"] for s in services} >= {s["id"] for s in listed["services"]}
            mine = next(s for s in services if s["id"] == svc["id"])
            assert mine["name"] == name and mine["type"] == svc["type"]
            assert isinstance(mine["created_at"], int) and isinstance(mine["updated_at"], int)
            # The UI connection still gets the reference's events too.
            await ui.wait_for("SERVICE_UPDATED", lambda p: p.get("service_id") == svc["id"])

            await ref.wait_for("SERVICE_UPDATED", lambda p: p.get("service_id") == svc["id"])

            # node.status comes again about 5 s after the first.
            await ui.wait_for("node.status", lambda p: True)
            start = len([t for t in ui.types() if t == "node.status"])
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline and ui.types().count("node.status") == start:
                await asyncio.sleep(0.1)
            assert ui.types().count("node.status") > start

            # Errors: both spellings for the UI, the reference's alone for the other.
            await ui_ws.send('{"type": "NO_SUCH_TYPE", "payload": {}}')
            await ref_ws.send('{"type": "NO_SUCH_TYPE", "payload": {}}')
            err = await ui.wait_for("error")
            assert "Unsupported message type 'NO_SUCH_TYPE'" in err["payload"]["error"]
            await ui.wait_for("ERROR")
            await ref.wait_for("ERROR")
            await call(client, "DELETE", f"/api/services/{svc['id']}")
            await ref.wait_for("SERVICE_UPDATED", lambda p: p.get("action") == "deleted"
                               and p.get("service_id") == svc["id"])
            assert all(is_reference_type(t) for t in ref.types()), ref.types()
        finally:
            await ui.close()
            await ref.close()


async def test_a_browser_connection_speaks_the_ui_dialect_from_the_start(
        client: ApiClient) -> None:
    """A page in a browser sends Origin with its WebSocket: it gets the UI's snapshots at once,
    without a ping, and still the reference's messages."""
    async with connect(client.ws_url(), ssl=insecure_tls(), open_timeout=30,
                       origin=Origin(client.base_url.replace("https://", "http://"))) as ws:
        status = await next_of(ws, "node.status")
        assert status["payload"]["stats"]["peer_id"] == status["payload"]["peer_id"]
        await ws.send('{"type": "NO_SUCH_TYPE", "payload": {}}')
        await next_of(ws, "ERROR")


async def test_dot_case_request_switches_the_connection(client: ApiClient) -> None:
    async with ws_connect(client) as ws:
        await ws.send('{"type": "chat.message.send", "payload": {}}')
        await next_of(ws, "error")
        await next_of(ws, "node.status")


async def test_workflow_execution_yields_execution_and_job_updates(client: ApiClient) -> None:
    gen = await asyncio.to_thread(sh_service, client, "ui-gen", "echo hi")
    wf, ids = await asyncio.to_thread(make_workflow, client, "ui-events", [(gen[0], {})], [])
    async with ws_connect(client) as ws:
        await switch_to_ui(ws)
        ui = Collector(ws)
        try:
            eid = await asyncio.to_thread(execute, client, wf)
            status = await asyncio.to_thread(wait_done, client, eid, WAIT)
            assert status["status"] == "COMPLETED", status
            done = await ui.wait_for("execution.updated", lambda p: p["execution_id"] == eid
                                     and p["status"] == "COMPLETED")
            assert done["payload"]["workflow_id"] == wf
            assert done["payload"]["started_at"] and done["payload"]["completed_at"]
            assert set(done["payload"]) == {"execution_id", "workflow_id", "status", "error",
                                            "started_at", "completed_at"}
            jobs = (await call(client, "GET", f"/api/workflow-executions/{eid}/jobs"))["jobs"]
            job = await ui.wait_for("job.status.updated", lambda p: p["execution_id"] == eid
                                    and p["status"] == "COMPLETED")
            assert job["payload"]["job_execution_id"] == jobs[0]["id"]
            assert job["payload"]["workflow_job_id"] == ids[0]
            assert job["payload"]["job_name"] == "ui-gen"
            assert job["payload"]["error"] is None
        finally:
            await ui.close()
