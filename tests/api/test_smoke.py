from __future__ import annotations

from tests.support.node_process import ApiClient, NodeProcess


def test_login_and_status(node_proc: NodeProcess, client: ApiClient) -> None:
    resp = client.get("/api/node/status")
    assert resp.status_code == 200
    body = resp.json()
    assert body["peer_id"] == body["stats"]["peer_id"]
    assert len(body["peer_id"]) == 40
