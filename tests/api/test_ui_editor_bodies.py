"""The workflow editor's bodies as the original web UI sends them, beside the reference's:
``{x, y}`` for gui-props, ``{entrypoint, cmd}`` for a node's config, and a bare editor state for
ui-state; on the shared node, over real HTTPS."""

from __future__ import annotations

import pytest

from tests.support.node_process import ApiClient


@pytest.fixture(scope="module")
def node_url(client: ApiClient) -> str:
    svc = client.post("/api/services", json={"type": "docker", "name": "editor-svc",
                                             "endpoint": "local"}).json()["service"]
    wf = client.post("/api/workflows", json={"name": "editor"}).json()
    node = client.post(f"/api/workflows/{wf['id']}/nodes",
                       json={"service_id": svc["id"]}).json()
    return f"/api/workflows/{wf['id']}/nodes/{node['id']}"


def _node(client: ApiClient, node_url: str) -> dict:
    wf_url, _, node_id = node_url.rpartition("/nodes/")
    nodes = client.get(f"{wf_url}/nodes").json()["nodes"]
    return next(n for n in nodes if n["id"] == int(node_id))


def test_gui_props_from_x_and_y_are_merged_and_rounded(client: ApiClient,
                                                       node_url: str) -> None:
    client.put(f"{node_url}/gui-props", json={"gui_props": {"width": 200, "x": 1}})
    resp = client.put(f"{node_url}/gui-props", json={"x": 250.6, "y": 149.4})
    assert resp.json() == {"success": True, "message": "GUI properties updated"}
    assert _node(client, node_url)["gui_props"] == {"width": 200, "x": 251, "y": 149}


def test_config_from_entrypoint_and_cmd_is_merged(client: ApiClient, node_url: str) -> None:
    client.put(f"{node_url}/config", json={"config": {"timeout": 60, "cmd": ["old"]}})
    resp = client.put(f"{node_url}/config", json={"entrypoint": ["python", "main.py"],
                                                  "cmd": []})
    assert resp.json() == {"success": True, "message": "Node configuration updated"}
    # An empty list, as the UI sends for an empty field, drops the key.
    assert _node(client, node_url)["config"] == {"timeout": 60,
                                                 "entrypoint": ["python", "main.py"]}


@pytest.mark.parametrize(("path", "body"), [
    ("gui-props", {"x": "far"}),
    ("gui-props", {"x": 1e12}),
    ("gui-props", {"y": True}),
    ("config", {"entrypoint": "python"}),
    ("config", {"cmd": [1, 2]}),
    ("config", {"unrelated": 1}),
])
def test_bad_editor_bodies_are_400_and_change_nothing(client: ApiClient, node_url: str,
                                                      path: str, body: dict) -> None:
    before = _node(client, node_url)
    resp = client.put(f"{node_url}/{path}", json=body)
    assert resp.status_code == 400 and "error" in resp.json()
    assert _node(client, node_url) == before


def test_a_bare_ui_state_is_merged_into_the_stored_one(client: ApiClient) -> None:
    wf = client.post("/api/workflows", json={"name": "editor-state"}).json()
    url = f"/api/workflows/{wf['id']}/ui-state"
    client.put(url, json={"ui_state": {"zoom": 2.0, "selected": [3]}})
    # What the UI sends: the state it read, echoed with its own keys (and ids it ignores).
    resp = client.put(url, json={"id": 9, "workflow_id": wf["id"], "created_at": "x",
                                 "snap_to_grid": True, "self_peer_x": 80, "self_peer_y": 40.5})
    assert resp.json() == {"success": True, "message": "UI state updated"}
    got = client.get(url).json()
    assert got["ui_state"] == {"zoom": 2.0, "selected": [3], "snap_to_grid": True,
                               "self_peer_x": 80, "self_peer_y": 40.5}
    # Beside the reference's ui_state, the UI's keys at the top level (its defaults if unset).
    assert {k: v for k, v in got.items() if k != "ui_state"} == {
        "snap_to_grid": True, "zoom_level": 1, "pan_x": 0, "pan_y": 0, "self_peer_x": 80,
        "self_peer_y": 40.5}
    for bad in ({"snap_to_grid": "yes"}, {"pan_x": float("1e300")}, {"id": 1}):
        assert client.put(url, json=bad).status_code == 400, bad
    assert client.get(url).json()["ui_state"]["snap_to_grid"] is True

    # The UI sends back the whole object it read, with its own key changed: that key wins.
    echoed = {**client.get(url).json(), "snap_to_grid": False, "self_peer_x": 120}
    assert client.put(url, json=echoed).status_code == 200
    got = client.get(url).json()
    assert (got["snap_to_grid"], got["self_peer_x"]) == (False, 120)
    assert got["ui_state"]["selected"] == [3] and got["ui_state"]["snap_to_grid"] is False


def test_a_card_as_the_ui_sends_it_comes_back_whole(client: ApiClient) -> None:
    """W6/W7: the editor keeps the whole node it sent as the card's data; its position and
    command go into the reference's gui_props and config, the rest is kept as sent."""
    svc = client.post("/api/services", json={"type": "docker", "name": "card-svc",
                                             "endpoint": "local"}).json()["service"]
    own = client.get("/api/node/status").json()["peer_id"]
    wf = client.post("/api/workflows", json={"name": "cards"}).json()
    interfaces = [{"interface_type": "STDIN", "path": ""},
                  {"interface_type": "MOUNT", "path": "/out", "mount_function": "OUTPUT"}]
    sent = {"workflow_id": wf["id"], "service_id": svc["id"], "peer_id": own,
            "service_name": "card-svc", "service_type": "DOCKER", "order": 0,
            "gui_x": 250.4, "gui_y": 149.6, "interfaces": interfaces,
            "entrypoint": ["python", "main.py"], "cmd": [], "pricing_amount": 0,
            "pricing_type": "ONE_TIME", "pricing_interval": 1, "pricing_unit": "MONTHS"}
    resp = client.post(f"/api/workflows/{wf['id']}/nodes", json=sent)
    assert resp.status_code == 201, resp.text
    node = resp.json()
    (listed,) = client.get(f"/api/workflows/{wf['id']}/nodes").json()["nodes"]
    assert listed == node
    assert (node["gui_x"], node["gui_y"], node["gui_props"]) == (250, 150, {"x": 250, "y": 150})
    assert node["config"] == {"entrypoint": ["python", "main.py"]}
    assert node["entrypoint"] == ["python", "main.py"] and "cmd" not in node
    assert (node["service_type"], node["order"], node["interfaces"]) == ("DOCKER", 0, interfaces)
    assert (node["pricing_amount"], node["pricing_type"], node["pricing_interval"],
            node["pricing_unit"]) == (0, "ONE_TIME", "1", "MONTHS")
    # A reference node shows none of the card's fields it does not have.
    plain = client.post(f"/api/workflows/{wf['id']}/nodes",
                        json={"service_id": svc["id"]}).json()
    assert not {"service_type", "interfaces", "gui_x", "pricing_type"} & set(plain)


@pytest.mark.parametrize("extra", [
    {"interfaces": [{"interface_type": {"nested": 1}}]},
    {"interfaces": ["STDIN"]},
    {"interfaces": [{"interface_type": "STDIN"}] * 65},
    {"gui_x": "left"},
    {"order": -1},
    {"entrypoint": "python main.py"},
    {"pricing_amount": -2},
])
def test_a_bad_card_is_refused_and_adds_nothing(client: ApiClient, extra: dict) -> None:
    svc = client.post("/api/services", json={"type": "docker", "name": "card-bad",
                                             "endpoint": "local"}).json()["service"]
    wf = client.post("/api/workflows", json={"name": "bad-cards"}).json()
    resp = client.post(f"/api/workflows/{wf['id']}/nodes",
                       json={"service_id": svc["id"], **extra})
    assert resp.status_code == 400 and "error" in resp.json()
    assert client.get(f"/api/workflows/{wf['id']}/nodes").json()["total"] == 0
