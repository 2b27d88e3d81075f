"""Building workflows through a node's REST API, for tests."""

from __future__ import annotations

from typing import Any

from tests.support.node_process import ApiClient

# A node: (service id, config), or (service id, config, peer id) for a service on another peer.
NodeSpec = tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], str]


def make_workflow(c: ApiClient, name: str, nodes: list[NodeSpec],
                  edges: list[tuple[int, int, int, int]]) -> tuple[int, list[int]]:
    """Create a workflow; edges as (src index, src iface, dst index, dst iface)."""
    wf = c.post("/api/workflows", json={"name": name}).json()["id"]
    ids = []
    for node in nodes:
        body: dict[str, Any] = {"service_id": node[0], "config": node[1]}
        if len(node) == 3:
            body["peer_id"] = node[2]
        r = c.post(f"/api/workflows/{wf}/nodes", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for src, src_if, dst, dst_if in edges:
        r = c.post(f"/api/workflows/{wf}/connections", json={
            "source_node_id": ids[src], "source_interface_id": src_if,
            "target_node_id": ids[dst], "target_interface_id": dst_if})
        assert r.status_code == 201, r.text
    return wf, ids
