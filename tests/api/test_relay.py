"""The relay endpoints on a node in neither relay nor NAT mode: 403 with the documented text."""

from __future__ import annotations

import pytest

from tests.support.node_process import ApiClient

RELAY = [("GET", "/api/relay/sessions", None),
         ("POST", "/api/relay/sessions/session-abc/disconnect", None),
         ("POST", "/api/relay/sessions/session-abc/blacklist", None)]
NAT = [("GET", "/api/relay/candidates", None),
       ("POST", "/api/relay/connect", {"peer_id": "peer-123"}),
       ("POST", "/api/relay/disconnect", None),
       ("POST", "/api/relay/prefer", {"peer_id": "peer-123"}),
       # The mode is checked before the body.
       ("POST", "/api/relay/connect", {}),
       ("POST", "/api/relay/prefer", None)]


@pytest.mark.parametrize(("method", "path", "body"), RELAY)
def test_relay_mode_endpoints_are_403(client: ApiClient, method: str, path: str,
                                      body: object) -> None:
    resp = client.request(method, path, json=body)
    assert resp.status_code == 403
    assert resp.json() == {"error": "Node is not in relay mode"}


@pytest.mark.parametrize(("method", "path", "body"), NAT)
def test_nat_mode_endpoints_are_403(client: ApiClient, method: str, path: str,
                                    body: object) -> None:
    resp = client.request(method, path, json=body)
    assert resp.status_code == 403
    assert resp.json() == {"error": "Node is not in NAT mode"}


def test_status_reports_neither_mode(client: ApiClient) -> None:
    stats = client.get("/api/node/status").json()["stats"]
    assert stats["relay_mode"] is False and stats["nat_mode"] is False


def test_relay_wrong_method_is_405(client: ApiClient) -> None:
    resp = client.post("/api/relay/sessions")
    assert resp.status_code == 405
    assert resp.json() == {"error": "Method not allowed"}
