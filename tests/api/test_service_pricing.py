"""Service pricing as the original web UI sets it: a whole-number interval, and
``PUT /api/services/{id}/pricing``; on the shared node, over real HTTPS."""

from __future__ import annotations

import pytest

from tests.support.node_process import ApiClient


def _create(client: ApiClient, **body: object) -> dict:
    payload = {"type": "storage", "name": "priced", **body}
    resp = client.post("/api/services", json=payload)
    assert resp.status_code == 201, resp.text
    return resp.json()["service"]


def test_create_takes_the_uis_whole_number_interval(client: ApiClient) -> None:
    svc = _create(client, pricing_amount=0.5, pricing_type="RECURRING", pricing_interval=1,
                  pricing_unit="MONTHS")
    assert (svc["pricing_amount"], svc["pricing_type"], svc["pricing_interval"],
            svc["pricing_unit"]) == (0.5, "RECURRING", "1", "MONTHS")
    # The reference's text interval is taken as it was.
    assert _create(client, pricing_interval="2")["pricing_interval"] == "2"


def test_pricing_is_set_and_read_back(client: ApiClient) -> None:
    svc = _create(client)
    resp = client.put(f"/api/services/{svc['id']}/pricing", json={
        "pricing_amount": 2.5, "pricing_type": "one_time", "pricing_interval": 3,
        "pricing_unit": "days"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"message": "Service pricing updated successfully"}
    back = client.get(f"/api/services/{svc['id']}").json()["service"]
    assert (back["pricing_amount"], back["pricing_type"], back["pricing_interval"],
            back["pricing_unit"]) == (2.5, "ONE_TIME", "3", "DAYS")


@pytest.mark.parametrize(("body", "fragment"), [
    ({"pricing_amount": -1, "pricing_type": "ONE_TIME"}, "pricing_amount must be a non-negative"),
    ({"pricing_amount": 1, "pricing_type": "WEEKLY"}, "Invalid pricing_type 'WEEKLY'"),
    ({"pricing_amount": 1, "pricing_type": "ONE_TIME", "pricing_interval": True},
     "pricing_interval"),
    ({"pricing_amount": 1, "pricing_type": "ONE_TIME", "pricing_unit": "X" * 33},
     "pricing_unit"),
    ({"pricing_type": "ONE_TIME"}, "pricing_amount"),
])
def test_bad_pricing_is_refused_and_changes_nothing(client: ApiClient, body: dict,
                                                    fragment: str) -> None:
    svc = _create(client, pricing_amount=4.0, pricing_type="RECURRING", pricing_interval=1,
                  pricing_unit="MONTHS")
    resp = client.put(f"/api/services/{svc['id']}/pricing", json=body)
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["error"]
    back = client.get(f"/api/services/{svc['id']}").json()["service"]
    assert (back["pricing_amount"], back["pricing_type"], back["pricing_interval"],
            back["pricing_unit"]) == (4.0, "RECURRING", "1", "MONTHS")


def test_pricing_of_a_missing_service_is_404(client: ApiClient) -> None:
    resp = client.put("/api/services/999999/pricing",
                      json={"pricing_amount": 1, "pricing_type": "ONE_TIME"})
    assert resp.status_code == 404 and "error" in resp.json()
