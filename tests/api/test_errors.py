"""Error shapes, CORS and the OpenAPI pages."""

from __future__ import annotations

import pytest

from tests.api.helpers import raw_client
from tests.support.node_process import ApiClient, NodeProcess


def test_unknown_route_is_404(client: ApiClient) -> None:
    resp = client.get("/api/no-such-thing")
    assert resp.status_code == 404
    assert resp.json() == {"error": "Not found"}


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/api/node/status"), ("GET", "/api/node/restart"), ("PUT", "/api/workflows"),
    ("PATCH", "/api/services/1"), ("POST", "/api/health"), ("PUT", "/api/blacklist/check")])
def test_wrong_method_is_405(client: ApiClient, method: str, path: str) -> None:
    resp = client.request(method, path)
    assert resp.status_code == 405
    assert resp.json() == {"error": "Method not allowed"}
    assert resp.headers["content-type"].startswith("application/json")


def test_invalid_json_is_400(client: ApiClient) -> None:
    resp = client.post("/api/workflows", content=b'{"name": ',
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("Invalid request body")


def test_wrong_field_type_is_400_with_field_name(client: ApiClient) -> None:
    resp = client.post("/api/services", json={"type": "docker", "name": ["x"], "endpoint": "e"})
    assert resp.status_code == 400
    body = resp.json()
    assert set(body) == {"error"}
    assert "name" in body["error"]


def test_empty_body_is_400(client: ApiClient) -> None:
    resp = client.post("/api/blacklist")
    assert resp.status_code == 400
    assert set(resp.json()) == {"error"}


def test_cors_preflight(node_proc: NodeProcess) -> None:
    with raw_client(node_proc) as c:
        resp = c.options("/api/services", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] in ("*", "http://localhost:3000")
    assert "POST" in resp.headers["access-control-allow-methods"]
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()


def test_cors_header_on_simple_request(client: ApiClient) -> None:
    resp = client.get("/api/node/status", headers={"Origin": "http://example.test"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "*"


def test_openapi_and_docs(node_proc: NodeProcess) -> None:
    with raw_client(node_proc) as c:
        spec = c.get("/openapi.json")
        docs = c.get("/docs")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/api/auth/challenge" in paths and "/api/workflows/{id}/nodes/{node_id}" in paths
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_http_port_serves_the_same_api(node_proc: NodeProcess, client: ApiClient) -> None:
    import httpx

    with httpx.Client(base_url=node_proc.http_url, timeout=30,
                      headers={"Authorization": f"Bearer {client.token}"}) as c:
        assert c.get("/api/node/status").json()["peer_id"] == (
            client.get("/api/node/status").json()["peer_id"])
