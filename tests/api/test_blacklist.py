"""The blacklist endpoints, on the shared node."""

from __future__ import annotations

import re
import secrets

import pytest

from tests.support.node_process import ApiClient


def _peer() -> str:
    return secrets.token_hex(20)


def test_add_list_check_remove(client: ApiClient) -> None:
    peer = _peer()
    resp = client.post("/api/blacklist", json={"peer_id": peer, "reason": "Malicious behavior"})
    assert resp.status_code == 200
    assert resp.json() == {"peer_id": peer, "reason": "Malicious behavior",
                           "message": "Peer added to blacklist successfully"}

    listed = client.get("/api/blacklist").json()
    assert listed["total"] == len(listed["blacklist"]) == len(listed["peer_ids"])
    entry = next(e for e in listed["blacklist"] if e["peer_id"] == peer)
    assert entry["reason"] == "Malicious behavior"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", entry["blacklisted_at"])
    assert peer in listed["peer_ids"]

    check = client.get("/api/blacklist/check", params={"peer_id": peer})
    assert check.json() == {"peer_id": peer, "is_blacklisted": True}

    resp = client.delete(f"/api/blacklist/{peer}")
    assert resp.status_code == 200
    assert resp.json() == {"message": "Peer removed from blacklist successfully"}
    assert client.get("/api/blacklist/check", params={"peer_id": peer}).json() == {
        "peer_id": peer, "is_blacklisted": False}
    assert peer not in client.get("/api/blacklist").json()["peer_ids"]


def test_default_reason_and_re_add_updates_reason(client: ApiClient) -> None:
    peer = _peer()
    assert client.post("/api/blacklist", json={"peer_id": peer}).json()["reason"] == (
        "Manually blacklisted")
    client.post("/api/blacklist", json={"peer_id": peer, "reason": "again"})
    entries = [e for e in client.get("/api/blacklist").json()["blacklist"]
               if e["peer_id"] == peer]
    assert len(entries) == 1 and entries[0]["reason"] == "again"


def test_remove_unknown_peer_is_ok(client: ApiClient) -> None:
    resp = client.delete(f"/api/blacklist/{_peer()}")
    assert resp.status_code == 200


@pytest.mark.parametrize("body", [{}, {"peer_id": ""}, {"peer_id": "a b c d e f g h"},
                                  {"peer_id": 12345678}, {"peer_id": "short"}, ["x"]])
def test_add_rejects_bad_bodies(client: ApiClient, body: object) -> None:
    resp = client.post("/api/blacklist", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]


def test_cannot_blacklist_self(client: ApiClient) -> None:
    own = client.get("/api/node/status").json()["peer_id"]
    resp = client.post("/api/blacklist", json={"peer_id": own})
    assert resp.status_code == 400
    assert own not in client.get("/api/blacklist").json()["peer_ids"]


def test_check_needs_peer_id(client: ApiClient) -> None:
    for params in ({}, {"peer_id": ""}):
        resp = client.get("/api/blacklist/check", params=params)
        assert resp.status_code == 400
        assert resp.json() == {"error": "Missing peer_id query parameter"}


def test_remove_without_peer_id_is_400(client: ApiClient) -> None:
    resp = client.delete("/api/blacklist")
    assert resp.status_code == 400
    assert resp.json() == {"error": "Missing peer ID"}


def test_wrong_method_is_405(client: ApiClient) -> None:
    resp = client.put("/api/blacklist", json={})
    assert resp.status_code == 405
    assert resp.json() == {"error": "Method not allowed"}
