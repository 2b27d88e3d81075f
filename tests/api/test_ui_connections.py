"""Connections in the original web UI's names (``from_*``/``to_*``, ``to_node_id: null`` for
its "Local Peer") beside the reference's, on the shared node over real HTTPS. (Connections of
nodes made in the reference's shape keep the reference's exact answers:
tests/api/test_workflows_crud.py.)"""

from __future__ import annotations

import pytest

from tests.api.helpers import count, insert
from tests.support.node_process import ApiClient, NodeProcess


@pytest.fixture(scope="module")
def editor(client: ApiClient, node_proc: NodeProcess) -> dict:
    svc = client.post("/api/services", json={"type": "docker", "name": "conn-svc",
                                             "endpoint": "local"}).json()["service"]
    mount_out = insert(node_proc, "service_interfaces", service_id=svc["id"],
                       interface_type="MOUNT", path="/out", mount_function="OUTPUT",
                       description="")
    wf = client.post("/api/workflows", json={"name": "ui-connections"}).json()
    # Cards, as the editor places them: their connections are listed in both name sets.
    nodes = [client.post(f"/api/workflows/{wf['id']}/nodes",
                         json={"service_id": svc["id"], "service_type": "DOCKER",
                               "gui_x": 100 * i, "gui_y": 40}).json()["id"] for i in range(2)]
    return {"url": f"/api/workflows/{wf['id']}/connections", "workflow": wf["id"],
            "nodes": nodes, "mount_out": mount_out}


def _rows(client: ApiClient, editor: dict) -> list[dict]:
    return client.get(editor["url"]).json()["connections"]


def test_the_ui_connects_an_output_to_the_local_peer(client: ApiClient, editor: dict) -> None:
    a, _b = editor["nodes"]
    body = {"from_node_id": a, "from_interface_type": "STDOUT", "to_node_id": None,
            "to_interface_type": "STDIN", "destination_file_name": " result.txt "}
    resp = client.post(editor["url"], json=body)
    assert resp.status_code == 201, resp.text
    made = resp.json()
    # The reference's fields, and the row in the UI's names where the UI reads it.
    assert made == {"id": made["id"], "workflow_id": editor["workflow"], "source_node_id": a,
                    "source_interface_id": None, "target_node_id": None,
                    "target_interface_id": None, "destination_file_name": "result.txt",
                    "connection": {"id": made["id"], "workflow_id": editor["workflow"],
                                   "from_node_id": a, "from_interface_type": "STDOUT",
                                   "to_node_id": None, "to_interface_type": "STDIN",
                                   "destination_file_name": "result.txt"}}
    (row,) = [r for r in _rows(client, editor) if r["id"] == made["id"]]
    assert "to_node_id" in row and row["to_node_id"] is None  # explicit null, never absent
    assert (row["from_interface_type"], row["source_interface_type"]) == ("STDOUT", "STDOUT")

    # The rename box: one PUT with destination_file_name alone; empty clears it.
    url = f"{editor['url']}/{made['id']}"
    assert client.put(url, json={"destination_file_name": "out.txt"}).json() == {
        "success": True, "message": "Connection updated"}
    (row,) = [r for r in _rows(client, editor) if r["id"] == made["id"]]
    assert (row["destination_file_name"], row["to_node_id"], row["from_node_id"]) == (
        "out.txt", None, a)
    client.put(url, json={"destination_file_name": ""})
    (row,) = [r for r in _rows(client, editor) if r["id"] == made["id"]]
    assert row["destination_file_name"] is None
    assert client.delete(url).status_code == 200


def test_the_reference_names_the_requesting_node_with_a_null_target(
        client: ApiClient, editor: dict) -> None:
    a, b = editor["nodes"]
    resp = client.post(editor["url"], json={"source_node_id": b, "target_node_id": None,
                                            "source_interface_type": "STDERR"})
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made == {"id": made["id"], "workflow_id": editor["workflow"], "source_node_id": b,
                    "source_interface_id": None, "target_node_id": None,
                    "target_interface_id": None}
    (row,) = [r for r in _rows(client, editor) if r["id"] == made["id"]]
    assert (row["from_interface_type"], row["to_node_id"]) == ("STDERR", None)
    # A reference update may move the target to a node and back.
    url = f"{editor['url']}/{made['id']}"
    client.put(url, json={"target_node_id": a})
    assert [r["target_node_id"] for r in _rows(client, editor) if r["id"] == made["id"]] == [a]
    client.put(url, json={"target_node_id": None})
    assert [r["to_node_id"] for r in _rows(client, editor) if r["id"] == made["id"]] == [None]
    client.delete(url)


def test_an_interface_named_by_id_is_listed_with_its_type(client: ApiClient,
                                                          editor: dict) -> None:
    a, b = editor["nodes"]
    resp = client.post(editor["url"], json={"source_node_id": a,
                                            "source_interface_id": editor["mount_out"],
                                            "target_node_id": b})
    made = resp.json()
    assert "source_interface_type" not in made  # the reference's answer, as it was
    (row,) = [r for r in _rows(client, editor) if r["id"] == made["id"]]
    assert (row["from_interface_type"], row["to_interface_type"]) == ("MOUNT", "STDIN")
    client.delete(f"{editor['url']}/{made['id']}")


@pytest.mark.parametrize(("body", "message"), [
    ({"from_node_id": None, "from_interface_type": "STDOUT", "to_node_id": "B"},
     "the requesting node is a target only"),
    ({"from_node_id": "A", "to_interface_type": "STDIN"}, "target_node_id (or to_node_id) is "
     "required; null: the requesting node"),
    ({"source_node_id": "A"}, "target_node_id (or to_node_id) is required"),
    ({"from_node_id": "A", "target_node_id": None}, "use either the from_*/to_* names"),
    ({"from_node_id": "A", "to_node_id": None, "to_interface_type": "MOUNT"},
     "A connection to the requesting node ends at its one input, STDIN"),
    ({"source_node_id": "A", "target_node_id": None, "target_interface_id": 1},
     "A connection to the requesting node ends at its one input"),
    ({"from_node_id": "A", "to_node_id": None, "destination_file_name": "../../etc/passwd"},
     "destination_file_name must be a plain file name"),
    ({"from_node_id": "A", "to_node_id": None, "destination_file_name": ".."},
     "destination_file_name must be a plain file name"),
    ({"from_node_id": "A", "to_node_id": None, "destination_file_name": "a\u0000b"},
     "destination_file_name must be a plain file name"),
    ({"from_node_id": "A", "to_node_id": None, "destination_file_name": "x" * 256},
     "destination_file_name must be a plain file name"),
    ({"from_node_id": "A", "from_interface_type": "BOGUS", "to_node_id": None},
     "source_interface_type must be one of"),
    ({"from_node_id": "A", "from_interface_type": "STDIN", "to_node_id": "B"},
     "source_interface_type STDIN is not an output"),
    ({"from_node_id": "A", "to_node_id": "B", "to_interface_type": "STDOUT"},
     "target_interface_type STDOUT is not an input"),
    ({"from_node_id": "A", "to_node_id": "A"}, "A connection cannot join a node to itself"),
    ({"from_node_id": "A", "to_node_id": 987654}, "target_node_id 987654 is not a node"),
])
def test_bad_ui_bodies_are_refused_by_name_and_add_nothing(
        client: ApiClient, editor: dict, node_proc: NodeProcess, body: dict,
        message: str) -> None:
    a, b = editor["nodes"]
    body = {k: {"A": a, "B": b}.get(v, v) if isinstance(v, str) and k.endswith("node_id")
            else v for k, v in body.items()}
    before = count(node_proc, "workflow_connections", "workflow_id = ?", editor["workflow"])
    resp = client.post(editor["url"], json=body)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]
    assert count(node_proc, "workflow_connections", "workflow_id = ?",
                 editor["workflow"]) == before


def test_a_bad_update_changes_nothing(client: ApiClient, editor: dict) -> None:
    a, b = editor["nodes"]
    made = client.post(editor["url"], json={"from_node_id": a, "to_node_id": None,
                                            "destination_file_name": "keep.txt"}).json()
    url = f"{editor['url']}/{made['id']}"
    for body in ({"destination_file_name": "a/b"}, {"to_node_id": a},
                 {"from_node_id": b, "source_node_id": b}, {"to_interface_type": "ENV"}):
        assert client.put(url, json=body).status_code == 400, body
    (row,) = [r for r in _rows(client, editor) if r["id"] == made["id"]]
    assert (row["from_node_id"], row["to_node_id"], row["destination_file_name"]) == (
        a, None, "keep.txt")
    client.delete(url)


def test_a_second_source_into_one_stdin_is_refused_when_made(
        client: ApiClient, editor: dict, node_proc: NodeProcess) -> None:
    """The UI offers every output of a card at once (STDOUT, STDERR, LOGS into one STDIN):
    the first connection is made, the others are refused then, and the workflow stays one
    that runs."""
    wf = editor["workflow"]
    svc = client.get(f"/api/workflows/{wf}/nodes").json()["nodes"][0]["service_id"]
    a, b = (client.post(f"/api/workflows/{wf}/nodes", json={
        "service_id": svc, "service_type": "DOCKER", "gui_x": 500 + 100 * i, "gui_y": 300,
    }).json()["id"] for i in range(2))
    made = client.post(editor["url"], json={"from_node_id": a, "from_interface_type": "STDOUT",
                                            "to_node_id": b, "to_interface_type": "STDIN"})
    assert made.status_code == 201, made.text
    before = count(node_proc, "workflow_connections", "workflow_id = ?", wf)
    for output in ("STDERR", "LOGS"):
        refused = client.post(editor["url"], json={
            "from_node_id": a, "from_interface_type": output, "to_node_id": b,
            "to_interface_type": "STDIN"})
        assert refused.status_code == 400
        assert refused.json() == {"error": f"STDIN of node {b} already has a source "
                                           f"(connection {made.json()['id']}): one "
                                           "connection feeds it"}
    assert count(node_proc, "workflow_connections", "workflow_id = ?", wf) == before
    client.delete(f"{editor['url']}/{made.json()['id']}")
    for node in (a, b):
        client.delete(f"/api/workflows/{wf}/nodes/{node}")
