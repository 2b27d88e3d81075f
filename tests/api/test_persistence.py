"""Everything the API stores survives a stop and start, and a crash, on the same data dir."""

from __future__ import annotations

import secrets
from typing import Any

from tests.api.helpers import insert
from tests.support.node_process import ApiClient, NodeProcess


def _populate(node: NodeProcess, c: ApiClient) -> dict[str, Any]:
    svc = c.post("/api/services", json={"type": "docker", "name": "persisted",
                                        "endpoint": "local", "capabilities": {"k": 1}})
    svc_id = svc.json()["service"]["id"]
    insert(node, "service_interfaces", service_id=svc_id, interface_type="STDOUT", path="",
           mount_function="", description="out")
    data = c.post("/api/services", json={"type": "storage", "name": "file"}).json()["service"]
    insert(node, "data_service_details", service_id=data["id"], file_path="/x", original_name="x",
           file_size=1, file_hash="", encryption_method="AES-256-GCM", passphrase="pw")
    wf = c.post("/api/workflows", json={"name": "persisted-wf",
                                        "definition": {"nodes": [1]}}).json()
    n1 = c.post(f"/api/workflows/{wf['id']}/nodes",
                json={"service_id": svc_id, "config": {"timeout": 5},
                      "gui_props": {"position": {"x": 1, "y": 2}}}).json()
    n2 = c.post(f"/api/workflows/{wf['id']}/nodes", json={"service_id": svc_id}).json()
    conn = c.post(f"/api/workflows/{wf['id']}/connections",
                  json={"source_node_id": n1["id"], "target_node_id": n2["id"],
                        "source_interface_id": 1}).json()
    c.put(f"/api/workflows/{wf['id']}/ui-state", json={"ui_state": {"zoom": 2.5}})
    peer = secrets.token_hex(20)
    c.post("/api/blacklist", json={"peer_id": peer, "reason": "kept"})
    return {
        "status": c.get("/api/node/status").json(),
        "services": c.get("/api/services").json(),
        "passphrase": c.get(f"/api/services/{data['id']}/passphrase").json(),
        "workflow": c.get(f"/api/workflows/{wf['id']}").json(),
        "nodes": c.get(f"/api/workflows/{wf['id']}/nodes").json(),
        "connections": c.get(f"/api/workflows/{wf['id']}/connections").json(),
        "ui_state": c.get(f"/api/workflows/{wf['id']}/ui-state").json(),
        "blacklist": c.get("/api/blacklist").json(),
        "ids": {"wf": wf["id"], "data": data["id"], "conn": conn["id"], "peer": peer},
    }


def _read(c: ApiClient, ids: dict[str, Any]) -> dict[str, Any]:
    wf = ids["wf"]
    return {
        "services": c.get("/api/services").json(),
        "passphrase": c.get(f"/api/services/{ids['data']}/passphrase").json(),
        "workflow": c.get(f"/api/workflows/{wf}").json(),
        "nodes": c.get(f"/api/workflows/{wf}/nodes").json(),
        "connections": c.get(f"/api/workflows/{wf}/connections").json(),
        "ui_state": c.get(f"/api/workflows/{wf}/ui-state").json(),
        "blacklist": c.get("/api/blacklist").json(),
    }


def test_data_survives_stop_and_crash(fresh_node: NodeProcess) -> None:
    fresh_node.env["RN_PREFECT_WARMUP"] = "false"  # no workflows run here
    fresh_node.start()
    c = fresh_node.client()
    try:
        before = _populate(fresh_node, c)
        old_token = c.token
    finally:
        c.close()
    assert fresh_node.stop() == 0

    fresh_node.start()
    c = fresh_node.client()
    try:
        assert c.get("/api/node/status").json()["peer_id"] == before["status"]["peer_id"]
        after = _read(c, before["ids"])
        for key, value in after.items():
            assert value == before[key], key
        assert after["ui_state"] == {"ui_state": {"zoom": 2.5}}
        assert before["ids"]["peer"] in after["blacklist"]["peer_ids"]
        # Tokens issued before the restart stay valid: the JWT secret is kept too.
        c.http.headers["Authorization"] = f"Bearer {old_token}"
        assert c.get("/api/services").status_code == 200
        # Written just before a crash: still there after kill -9.
        wf2 = c.post("/api/workflows", json={"name": "before-crash"}).json()
    finally:
        c.close()
    fresh_node.kill()

    fresh_node.start()
    c = fresh_node.client()
    try:
        assert c.get(f"/api/workflows/{wf2['id']}").json()["name"] == "before-crash"
        assert _read(c, before["ids"])["nodes"] == before["nodes"]
    finally:
        c.close()
