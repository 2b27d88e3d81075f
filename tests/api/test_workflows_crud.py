"""Workflows, their nodes, connections and UI state, on the shared node."""

from __future__ import annotations

import pytest

from tests.api.helpers import count, insert
from tests.support.node_process import ApiClient, NodeProcess


@pytest.fixture(scope="module")
def service_id(client: ApiClient) -> int:
    resp = client.post("/api/services", json={"type": "docker", "name": "wf-svc",
                                              "endpoint": "local"})
    return int(resp.json()["service"]["id"])


def _workflow(client: ApiClient, name: str = "wf") -> dict:
    resp = client.post("/api/workflows", json={"name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _node(client: ApiClient, wf_id: int, service_id: int, **extra: object) -> dict:
    resp = client.post(f"/api/workflows/{wf_id}/nodes",
                       json={"service_id": service_id, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_workflow_crud(client: ApiClient) -> None:
    resp = client.post("/api/workflows", json={"name": "Pipeline", "description": "Multi-stage",
                                               "definition": {"nodes": [], "edges": []}})
    assert resp.status_code == 201
    wf = resp.json()
    assert set(wf) == {"id", "name", "description", "definition", "created_at", "updated_at"}
    assert wf["name"] == "Pipeline" and wf["definition"] == {"nodes": [], "edges": []}

    assert client.get(f"/api/workflows/{wf['id']}").json() == wf
    listed = client.get("/api/workflows").json()
    assert listed["total"] == len(listed["workflows"])
    assert wf in listed["workflows"]

    resp = client.put(f"/api/workflows/{wf['id']}",
                      json={"name": "Renamed", "description": "Updated"})
    assert resp.status_code == 200
    updated = resp.json()
    assert updated["name"] == "Renamed" and updated["description"] == "Updated"
    assert updated["definition"] == {"nodes": [], "edges": []}
    assert updated["created_at"] == wf["created_at"]

    resp = client.delete(f"/api/workflows/{wf['id']}")
    assert resp.json() == {"message": "Workflow deleted successfully"}
    assert client.get(f"/api/workflows/{wf['id']}").status_code == 404
    assert client.delete(f"/api/workflows/{wf['id']}").json() == {"error": "Workflow not found"}


def test_create_defaults(client: ApiClient) -> None:
    wf = _workflow(client, "bare")
    assert wf["description"] == "" and wf["definition"] == {}


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "  "}, {"name": 3},
                                  {"name": "x", "definition": []}, "name"])
def test_create_rejects_bad_bodies(client: ApiClient, body: object) -> None:
    resp = client.post("/api/workflows", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]


def test_update_requires_name(client: ApiClient) -> None:
    wf = _workflow(client)
    resp = client.put(f"/api/workflows/{wf['id']}", json={"description": "no name"})
    assert resp.status_code == 400
    assert client.put("/api/workflows/987654", json={"name": "x"}).status_code == 404


def test_nodes(client: ApiClient, service_id: int) -> None:
    wf = _workflow(client)
    node = _node(client, wf["id"], service_id, config={"timeout": 300},
                 gui_props={"position": {"x": 100, "y": 100}})
    own = client.get("/api/node/status").json()["peer_id"]
    assert node["workflow_id"] == wf["id"] and node["node_type"] == "SERVICE"
    assert node["peer_id"] == own and node["service_id"] == service_id
    assert node["config"] == {"timeout": 300}
    assert node["gui_props"] == {"position": {"x": 100, "y": 100}}

    remote = _node(client, wf["id"], 5, peer_id="b" * 40)
    assert remote["peer_id"] == "b" * 40

    listed = client.get(f"/api/workflows/{wf['id']}/nodes").json()
    assert listed["total"] == 2
    assert [n["id"] for n in listed["nodes"]] == [node["id"], remote["id"]]

    resp = client.put(f"/api/workflows/{wf['id']}/nodes/{node['id']}/gui-props",
                      json={"gui_props": {"position": {"x": 200, "y": 150}, "width": 200}})
    assert resp.json() == {"success": True, "message": "GUI properties updated"}
    resp = client.put(f"/api/workflows/{wf['id']}/nodes/{node['id']}/config",
                      json={"config": {"timeout": 600, "retry_count": 3}})
    assert resp.json() == {"success": True, "message": "Node configuration updated"}
    first = client.get(f"/api/workflows/{wf['id']}/nodes").json()["nodes"][0]
    assert first["gui_props"] == {"position": {"x": 200, "y": 150}, "width": 200}
    assert first["config"] == {"timeout": 600, "retry_count": 3}

    resp = client.delete(f"/api/workflows/{wf['id']}/nodes/{remote['id']}")
    assert resp.json() == {"message": "Node deleted successfully"}
    assert client.get(f"/api/workflows/{wf['id']}/nodes").json()["total"] == 1
    resp = client.delete(f"/api/workflows/{wf['id']}/nodes/{remote['id']}")
    assert resp.status_code == 404 and resp.json() == {"error": "Node not found"}


@pytest.mark.parametrize("body", [
    {}, {"service_id": 0}, {"service_id": "abc"}, {"service_id": 987654},
    {"service_id": True}, {"service_id": "7"}, {"node_type": "BOGUS", "service_id": "SVC"},
    {"service_id": "SVC", "config": {"timeout": "soon"}},
    {"service_id": "SVC", "config": {"retry_count": -1}},
    {"service_id": "SVC", "config": []}, {"service_id": "SVC", "gui_props": 5}])
def test_add_node_rejects_bad_bodies(client: ApiClient, service_id: int, body: dict) -> None:
    wf = _workflow(client)
    body = {k: (service_id if v == "SVC" else v) for k, v in body.items()}
    resp = client.post(f"/api/workflows/{wf['id']}/nodes", json=body)
    assert resp.status_code == 400, body
    assert resp.json()["error"]
    assert client.get(f"/api/workflows/{wf['id']}/nodes").json()["total"] == 0


def test_node_config_validation(client: ApiClient, service_id: int) -> None:
    wf = _workflow(client)
    node = _node(client, wf["id"], service_id)
    url = f"/api/workflows/{wf['id']}/nodes/{node['id']}"
    for body in ({"config": {"timeout": -5}}, {"config": "x"}, {}):
        assert client.put(f"{url}/config", json=body).status_code == 400
    for body in ({"gui_props": 3}, {}):
        assert client.put(f"{url}/gui-props", json=body).status_code == 400


def test_nodes_of_another_workflow_are_404(client: ApiClient, service_id: int) -> None:
    a, b = _workflow(client, "a"), _workflow(client, "b")
    node = _node(client, a["id"], service_id)
    base = f"/api/workflows/{b['id']}/nodes/{node['id']}"
    for method, path, body in [("DELETE", base, None),
                               ("PUT", f"{base}/gui-props", {"gui_props": {}}),
                               ("PUT", f"{base}/config", {"config": {}})]:
        resp = client.request(method, path, json=body)
        assert resp.status_code == 404, path
        assert resp.json() == {"error": "Node not found"}
    assert client.get(f"/api/workflows/{a['id']}/nodes").json()["total"] == 1


def test_connections(client: ApiClient, service_id: int) -> None:
    wf = _workflow(client)
    n1, n2, n3 = (_node(client, wf["id"], service_id) for _ in range(3))
    resp = client.post(f"/api/workflows/{wf['id']}/connections", json={
        "source_node_id": n1["id"], "source_interface_id": 1,
        "target_node_id": n2["id"], "target_interface_id": 2})
    assert resp.status_code == 201
    conn = resp.json()
    assert conn == {"id": conn["id"], "workflow_id": wf["id"], "source_node_id": n1["id"],
                    "source_interface_id": 1, "target_node_id": n2["id"],
                    "target_interface_id": 2}
    listed = client.get(f"/api/workflows/{wf['id']}/connections").json()
    assert listed == {"connections": [conn], "total": 1}

    resp = client.put(f"/api/workflows/{wf['id']}/connections/{conn['id']}",
                      json={"target_node_id": n3["id"], "target_interface_id": 3})
    assert resp.json() == {"success": True, "message": "Connection updated"}
    changed = client.get(f"/api/workflows/{wf['id']}/connections").json()["connections"][0]
    assert changed["target_node_id"] == n3["id"] and changed["target_interface_id"] == 3
    assert changed["source_node_id"] == n1["id"]

    resp = client.delete(f"/api/workflows/{wf['id']}/connections/{conn['id']}")
    assert resp.json() == {"message": "Connection deleted successfully"}
    assert client.get(f"/api/workflows/{wf['id']}/connections").json()["total"] == 0
    resp = client.delete(f"/api/workflows/{wf['id']}/connections/{conn['id']}")
    assert resp.status_code == 404 and resp.json() == {"error": "Connection not found"}


def test_connection_bodies_are_checked(client: ApiClient, service_id: int) -> None:
    wf, other = _workflow(client), _workflow(client, "other")
    n1, n2 = _node(client, wf["id"], service_id), _node(client, wf["id"], service_id)
    foreign = _node(client, other["id"], service_id)
    url = f"/api/workflows/{wf['id']}/connections"
    for body in ({"source_node_id": n1["id"]},
                 {"source_node_id": n1["id"], "target_node_id": foreign["id"]},
                 {"source_node_id": n1["id"], "target_node_id": n1["id"]},
                 {"source_node_id": n1["id"], "target_node_id": 987654},
                 {"source_node_id": "a", "target_node_id": n2["id"]},
                 {"source_node_id": n1["id"], "target_node_id": n2["id"],
                  "source_interface_id": "x"}):
        resp = client.post(url, json=body)
        assert resp.status_code == 400, body
        assert resp.json()["error"]
    conn = client.post(url, json={"source_node_id": n1["id"], "target_node_id": n2["id"]}).json()
    resp = client.put(f"{url}/{conn['id']}", json={"target_node_id": foreign["id"]})
    assert resp.status_code == 400


def test_connections_of_another_workflow_are_404(client: ApiClient, service_id: int) -> None:
    a, b = _workflow(client, "a"), _workflow(client, "b")
    n1, n2 = _node(client, a["id"], service_id), _node(client, a["id"], service_id)
    conn = client.post(f"/api/workflows/{a['id']}/connections",
                       json={"source_node_id": n1["id"], "target_node_id": n2["id"]}).json()
    path = f"/api/workflows/{b['id']}/connections/{conn['id']}"
    for method, body in (("PUT", {"target_node_id": n1["id"]}), ("DELETE", None)):
        resp = client.request(method, path, json=body)
        assert resp.status_code == 404
        assert resp.json() == {"error": "Connection not found"}
    assert client.get(f"/api/workflows/{a['id']}/connections").json()["total"] == 1


def test_deleting_a_node_removes_its_connections(client: ApiClient, service_id: int) -> None:
    wf = _workflow(client)
    n1, n2 = _node(client, wf["id"], service_id), _node(client, wf["id"], service_id)
    client.post(f"/api/workflows/{wf['id']}/connections",
                json={"source_node_id": n1["id"], "target_node_id": n2["id"]})
    client.delete(f"/api/workflows/{wf['id']}/nodes/{n2['id']}")
    assert client.get(f"/api/workflows/{wf['id']}/connections").json()["total"] == 0


def test_ui_state(client: ApiClient) -> None:
    wf = _workflow(client)
    url = f"/api/workflows/{wf['id']}/ui-state"
    assert client.get(url).json() == {"ui_state": {"zoom": 1.0, "pan_x": 0, "pan_y": 0}}
    state = {"zoom": 1.5, "pan_x": 100, "pan_y": 50, "selected": [1, 2]}
    resp = client.put(url, json={"ui_state": state})
    assert resp.json() == {"success": True, "message": "UI state updated"}
    assert client.get(url).json() == {"ui_state": state}
    for body in ({}, {"ui_state": [1]}, {"ui_state": "zoom"}):
        assert client.put(url, json=body).status_code == 400
    assert client.get("/api/workflows/987654/ui-state").status_code == 404
    assert client.put("/api/workflows/987654/ui-state",
                      json={"ui_state": {}}).status_code == 404


def test_delete_cascades(node_proc: NodeProcess, client: ApiClient, service_id: int) -> None:
    wf = _workflow(client)
    n1, n2 = _node(client, wf["id"], service_id), _node(client, wf["id"], service_id)
    client.post(f"/api/workflows/{wf['id']}/connections",
                json={"source_node_id": n1["id"], "target_node_id": n2["id"]})
    client.put(f"/api/workflows/{wf['id']}/ui-state", json={"ui_state": {"zoom": 2}})
    ex = insert(node_proc, "workflow_executions", workflow_id=wf["id"], status="COMPLETED",
                plan={}, progress=100, trigger="api", created_at="2024-12-25 10:00:00.000000")
    job = insert(node_proc, "job_executions", workflow_execution_id=ex, workflow_id=wf["id"],
                 peer_id="", requester_peer_id="", status="COMPLETED", attempt=0,
                 created_at="2024-12-25 10:00:00.000000")
    insert(node_proc, "job_execution_interfaces", job_execution_id=job, interface_type="STDOUT",
           direction="output", path="", value="hi", artifact_hash="", size=2)
    assert client.delete(f"/api/workflows/{wf['id']}").status_code == 200
    for table in ("workflow_nodes", "workflow_connections", "workflow_ui_states",
                  "workflow_executions"):
        assert count(node_proc, table, "workflow_id = ?", wf["id"]) == 0, table
    assert count(node_proc, "job_executions", "workflow_execution_id = ?", ex) == 0
    assert count(node_proc, "job_execution_interfaces", "job_execution_id = ?", job) == 0


_ROUTES = [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/nodes"), ("POST", "/nodes"),
           ("GET", "/connections"), ("POST", "/connections"), ("GET", "/ui-state"),
           ("PUT", "/ui-state"), ("GET", "/jobs"), ("GET", "/execution-instances"),
           ("GET", "/executions")]


@pytest.mark.parametrize(("method", "suffix"), _ROUTES)
def test_invalid_workflow_id_is_400(client: ApiClient, method: str, suffix: str) -> None:
    for bad in ("abc", "-3", "1e3"):
        resp = client.request(method, f"/api/workflows/{bad}{suffix}", json={})
        assert resp.status_code == 400
        assert resp.json() == {"error": "Invalid workflow ID"}


@pytest.mark.parametrize(("method", "suffix"), [r for r in _ROUTES if r[0] != "POST"])
def test_unknown_workflow_is_404(client: ApiClient, method: str, suffix: str) -> None:
    body = {"name": "x", "ui_state": {}}
    resp = client.request(method, f"/api/workflows/987654{suffix}", json=body)
    assert resp.status_code == 404
    assert resp.json() == {"error": "Workflow not found"}


def test_unknown_workflow_on_post_is_404(client: ApiClient, service_id: int) -> None:
    resp = client.post("/api/workflows/987654/nodes", json={"service_id": service_id})
    assert resp.status_code == 404
    resp = client.post("/api/workflows/987654/connections",
                       json={"source_node_id": 1, "target_node_id": 2})
    assert resp.status_code == 404


def test_invalid_node_and_connection_ids_are_400(client: ApiClient) -> None:
    wf = _workflow(client)
    base = f"/api/workflows/{wf['id']}"
    for method, path, message in [
            ("DELETE", f"{base}/nodes/x", "Invalid node ID"),
            ("PUT", f"{base}/nodes/0/gui-props", "Invalid node ID"),
            ("PUT", f"{base}/nodes/1.0/config", "Invalid node ID"),
            ("PUT", f"{base}/connections/abc", "Invalid connection ID"),
            ("DELETE", f"{base}/connections/-1", "Invalid connection ID"),
            ("DELETE", "/api/workflows/x/nodes/1", "Invalid workflow ID")]:
        resp = client.request(method, path, json={"gui_props": {}, "config": {}})
        assert resp.status_code == 400, path
        assert resp.json() == {"error": message}
