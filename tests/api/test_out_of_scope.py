"""Routes of the original web UI that this node does not serve (wallets, invoices, chat, allowed
networks, payments) answer a clean 404 in the documented error shape, never 401 to a logged-in
client (the UI logs the user out on any 401)."""

from __future__ import annotations

import pytest

from tests.support.node_process import ApiClient


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/wallets?balance=false"),
    ("GET", "/api/allowed-networks"),
    ("GET", "/api/invoices"),
    ("POST", "/api/invoices"),
    ("GET", "/api/chat/conversations"),
    ("GET", "/api/services/1/payment-networks"),
])
def test_out_of_scope_routes_are_a_clean_404(client: ApiClient, method: str, path: str) -> None:
    resp = client.request(method, path)
    assert resp.status_code == 404, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and body["error"]
