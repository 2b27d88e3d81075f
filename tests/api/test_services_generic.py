"""The generic service endpoints, on the shared node."""

from __future__ import annotations

import re

import pytest

from tests.api.helpers import count, insert
from tests.support.node_process import ApiClient, NodeProcess

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _create(client: ApiClient, **body: object) -> dict:
    payload = {"type": "docker", "name": "svc", "endpoint": "local", **body}
    resp = client.post("/api/services", json=payload)
    assert resp.status_code == 201, resp.text
    return resp.json()["service"]


def test_create_get_list(client: ApiClient) -> None:
    resp = client.post("/api/services", json={
        "type": "docker", "name": "  generic-one ", "description": "A test service",
        "endpoint": "tcp://127.0.0.1:1", "capabilities": {"image_name": "x"}})
    assert resp.status_code == 201
    body = resp.json()
    assert body["message"] == "Service added successfully"
    svc = body["service"]
    assert svc["name"] == "generic-one"
    assert svc["type"] == "docker" and svc["service_type"] == "DOCKER"
    assert svc["status"] == "ACTIVE"
    assert svc["capabilities"] == {"image_name": "x"}
    assert svc["pricing_type"] == "FREE" and svc["pricing_amount"] == 0.0
    assert ISO.match(svc["created_at"]) and ISO.match(svc["updated_at"])
    assert svc["interfaces"] == []

    got = client.get(f"/api/services/{svc['id']}")
    assert got.status_code == 200
    assert got.json()["service"]["description"] == "A test service"

    listed = client.get("/api/services").json()
    assert listed["total"] == len(listed["services"])
    assert svc["id"] in [s["id"] for s in listed["services"]]


@pytest.mark.parametrize(("type_", "service_type", "name"), [
    ("storage", "DATA", "storage"), ("standalone", "STANDALONE", "standalone"),
    ("relay", "RELAY", "relay"), ("DOCKER", "DOCKER", "docker")])
def test_create_each_type(client: ApiClient, type_: str, service_type: str, name: str) -> None:
    svc = _create(client, type=type_, name=f"t-{type_}")
    assert svc["service_type"] == service_type and svc["type"] == name


def test_data_service_needs_no_endpoint(client: ApiClient) -> None:
    svc = _create(client, type="storage", endpoint="", status="inactive")
    assert svc["status"] == "INACTIVE"


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "x", "endpoint": "e"}, "type"),
    ({"type": "docker", "endpoint": "e"}, "name"),
    ({"type": "docker", "name": "x"}, "endpoint is required"),
    ({"type": "docker", "name": "   ", "endpoint": "e"}, "name is required"),
    ({"type": "banana", "name": "x", "endpoint": "e"}, "Invalid service type"),
    ({"type": "docker", "name": "x", "endpoint": "e", "status": "sleepy"}, "Invalid status"),
    ({"type": "docker", "name": "x", "endpoint": "e", "capabilities": [1]}, "capabilities"),
    ({"type": "docker", "name": "x" * 129, "endpoint": "e"}, "longer than 128"),
])
def test_create_rejects_bad_bodies(client: ApiClient, body: dict, fragment: str) -> None:
    resp = client.post("/api/services", json=body)
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]


def test_create_rejects_non_object_body(client: ApiClient) -> None:
    resp = client.post("/api/services", json=["type", "docker"])
    assert resp.status_code == 400
    assert resp.json() == {"error": "Invalid request body: expected a JSON object"}


def test_update(client: ApiClient) -> None:
    svc = _create(client, name="to-update")
    resp = client.put(f"/api/services/{svc['id']}",
                      json={"name": "updated-service-name", "description": "Updated description",
                            "status": "INACTIVE"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["message"] == "Service updated successfully"
    assert body["service"]["name"] == "updated-service-name"
    assert body["service"]["description"] == "Updated description"
    assert body["service"]["status"] == "INACTIVE"
    again = client.get(f"/api/services/{svc['id']}").json()["service"]
    assert again["name"] == "updated-service-name"
    assert again["updated_at"] >= svc["updated_at"]


@pytest.mark.parametrize("body", [{"name": ""}, {"status": "sideways"}, {"name": 7}, []])
def test_update_rejects_bad_bodies(client: ApiClient, body: object) -> None:
    svc = _create(client, name="bad-update")
    resp = client.put(f"/api/services/{svc['id']}", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]
    assert client.get(f"/api/services/{svc['id']}").json()["service"]["name"] == "bad-update"


def test_status(client: ApiClient) -> None:
    svc = _create(client, name="status")
    resp = client.put(f"/api/services/{svc['id']}/status", json={"status": "INACTIVE"})
    assert resp.status_code == 200
    assert resp.json() == {"message": "Service status updated successfully",
                           "status": "INACTIVE"}
    assert client.get(f"/api/services/{svc['id']}").json()["service"]["status"] == "INACTIVE"
    resp = client.put(f"/api/services/{svc['id']}/status", json={"status": "ACTIVE"})
    assert resp.json()["status"] == "ACTIVE"


@pytest.mark.parametrize("body", [{"status": "available"}, {"status": ""}, {}, {"status": 1}])
def test_status_rejects_bad_values(client: ApiClient, body: dict) -> None:
    svc = _create(client, name="status-bad")
    resp = client.put(f"/api/services/{svc['id']}/status", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]


def test_delete_cascades(node_proc: NodeProcess, client: ApiClient) -> None:
    svc = _create(client, name="to-delete")
    insert(node_proc, "service_interfaces", service_id=svc["id"], interface_type="STDIN",
           path="", mount_function="", description="in")
    insert(node_proc, "docker_service_details", service_id=svc["id"], image_name="img",
           image_tag="latest", image_id="", source="registry", compose_path="", entrypoint="",
           cmd="", build_path="")
    assert count(node_proc, "service_interfaces", "service_id = ?", svc["id"]) == 1
    resp = client.delete(f"/api/services/{svc['id']}")
    assert resp.status_code == 200
    assert resp.json() == {"message": "Service deleted successfully"}
    assert client.get(f"/api/services/{svc['id']}").status_code == 404
    assert count(node_proc, "service_interfaces", "service_id = ?", svc["id"]) == 0
    assert count(node_proc, "docker_service_details", "service_id = ?", svc["id"]) == 0
    again = client.delete(f"/api/services/{svc['id']}")
    assert again.status_code == 404
    assert again.json() == {"error": "Service not found"}


def test_interfaces(node_proc: NodeProcess, client: ApiClient) -> None:
    svc = _create(client, name="with-interfaces")
    empty = client.get(f"/api/services/{svc['id']}/interfaces").json()
    assert empty == {"interfaces": [], "total": 0}
    insert(node_proc, "service_interfaces", service_id=svc["id"], interface_type="STDIN",
           path="", mount_function="", description="Standard input stream")
    insert(node_proc, "service_interfaces", service_id=svc["id"], interface_type="MOUNT",
           path="/out", mount_function="OUTPUT", description="results")
    body = client.get(f"/api/services/{svc['id']}/interfaces").json()
    assert body["total"] == 2
    first, second = body["interfaces"]
    assert first == {"id": first["id"], "service_id": svc["id"], "interface_type": "STDIN",
                     "path": "", "mount_function": "", "description": "Standard input stream"}
    assert second["interface_type"] == "MOUNT" and second["path"] == "/out"
    full = client.get(f"/api/services/{svc['id']}").json()["service"]
    assert [i["id"] for i in full["interfaces"]] == [first["id"], second["id"]]


def test_passphrase(node_proc: NodeProcess, client: ApiClient) -> None:
    svc = _create(client, type="storage", name="secret-file", endpoint="")
    missing = client.get(f"/api/services/{svc['id']}/passphrase")
    assert missing.status_code == 404
    insert(node_proc, "data_service_details", service_id=svc["id"], file_path="/d/file.dat",
           original_name="file.dat", file_size=1024000, file_hash="ab" * 32,
           encryption_method="AES-256-GCM", passphrase="correct horse")
    resp = client.get(f"/api/services/{svc['id']}/passphrase")
    assert resp.status_code == 200
    body = resp.json()
    assert body["passphrase"] == "correct horse"
    details = body["data_details"]
    assert details["service_id"] == svc["id"]
    assert details["file_path"] == "/d/file.dat"
    assert details["file_size"] == 1024000
    assert details["file_hash"] == "ab" * 32
    assert details["encryption_method"] == "AES-256-GCM"
    # The passphrase is only ever returned by its own endpoint.
    listing = client.get("/api/services").text + client.get(f"/api/services/{svc['id']}").text
    assert "correct horse" not in listing


def test_passphrase_of_non_data_service_is_400(client: ApiClient) -> None:
    svc = _create(client, name="not-data")
    resp = client.get(f"/api/services/{svc['id']}/passphrase")
    assert resp.status_code == 400
    assert resp.json() == {"error": "Service is not a DATA service"}


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("GET", "", None), ("PUT", "", {"name": "x"}), ("DELETE", "", None),
    ("PUT", "/status", {"status": "ACTIVE"}), ("GET", "/passphrase", None),
    ("GET", "/interfaces", None)])
@pytest.mark.parametrize("bad_id", ["abc", "1.5", "-1", "0", "99999999999999999999"])
def test_invalid_id_is_400(client: ApiClient, method: str, suffix: str, body: object,
                           bad_id: str) -> None:
    resp = client.request(method, f"/api/services/{bad_id}{suffix}", json=body)
    assert resp.status_code == 400
    assert resp.json() == {"error": "Invalid service ID"}


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("GET", "", None), ("PUT", "", {"name": "x"}), ("DELETE", "", None),
    ("PUT", "/status", {"status": "ACTIVE"}), ("GET", "/passphrase", None),
    ("GET", "/interfaces", None)])
def test_unknown_id_is_404(client: ApiClient, method: str, suffix: str, body: object) -> None:
    resp = client.request(method, f"/api/services/987654{suffix}", json=body)
    assert resp.status_code == 404
    assert resp.json() == {"error": "Service not found"}


def test_wrong_method_is_405(client: ApiClient) -> None:
    for method, path in [("PATCH", "/api/services"), ("DELETE", "/api/services"),
                         ("POST", "/api/services/1/status"), ("PUT", "/api/services/1/interfaces")]:
        resp = client.request(method, path)
        assert resp.status_code == 405, (method, path)
        assert resp.json() == {"error": "Method not allowed"}
