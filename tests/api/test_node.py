"""Node status, capabilities and restart."""

from __future__ import annotations

import platform
import re
import time

import psutil
import pytest

from orchestrator.capabilities import detect_gpus
from tests.support.node_process import ApiClient, NodeProcess
from tests.support.waiting import wait_until


def test_status_shape(node_proc: NodeProcess, client: ApiClient) -> None:
    resp = client.get("/api/node/status")
    assert resp.status_code == 200
    body = resp.json()
    assert re.fullmatch(r"[0-9a-f]{40}", body["peer_id"])
    assert isinstance(body["dht_node_id"], str)
    assert isinstance(body["uptime_seconds"], int) and body["uptime_seconds"] >= 0
    assert isinstance(body["known_peers"], int) and body["known_peers"] >= 0
    stats = body["stats"]
    assert set(stats) >= {"peer_id", "dht_node_id", "relay_mode", "nat_mode", "connected_relay",
                          "active_connections"}
    assert stats["peer_id"] == body["peer_id"]
    assert stats["dht_node_id"] == body["dht_node_id"]
    assert stats["relay_mode"] is False and stats["nat_mode"] is False
    assert isinstance(stats["active_connections"], int)
    # What the original web UI's dashboard also reads; no relay figures off relay mode.
    assert (stats["node_type"], stats["quic_port"]) == ("public", node_proc.quic_port)
    assert "active_sessions" not in stats
    # A lone node has no peers to observe it from: its NAT type is not known yet.
    assert (stats["nat_type"], stats["public_endpoint"]) == ("unknown", "")
    subnet = stats["topology"]["local_subnet"]
    assert subnet == "" or __import__("ipaddress").ip_interface(subnet).version == 4
    assert {k: stats[k] for k in ("connections_relayed_now", "hole_punch_attempts",
                                  "hole_punch_successes")} == {
        "connections_relayed_now": 0, "hole_punch_attempts": 0, "hole_punch_successes": 0}
    assert stats["connections_opened"] >= stats["connections_direct"] >= 0
    # The peer id is the one the CLI reports for the same data dir.
    assert body["peer_id"] == __import__("hashlib").sha1(
        bytes(__import__("nacl.signing").signing.SigningKey(node_proc.seed()).verify_key)
    ).hexdigest()


def test_capabilities(client: ApiClient, docker_client) -> None:  # type: ignore[no-untyped-def]
    resp = client.get("/api/node/capabilities")
    assert resp.status_code == 200
    body = resp.json()
    system = body["system"]
    engine_version = docker_client.version()["Version"]
    assert body["docker_available"] is True and system["has_docker"] is True
    assert body["docker_version"] == system["docker_version"] == engine_version
    assert system["platform"] == "linux"
    assert system["kernel_version"] == platform.release()
    assert system["architecture"] in ("amd64", "arm64", platform.machine())
    assert system["cpu_threads"] == psutil.cpu_count()
    assert 1 <= system["cpu_cores"] <= system["cpu_threads"]
    assert system["cpu_model"]
    total_mb = psutil.virtual_memory().total // (1024 * 1024)
    assert system["total_memory_mb"] == total_mb
    assert 0 < system["available_memory_mb"] <= system["total_memory_mb"]
    assert 0 < system["available_disk_mb"] <= system["total_disk_mb"]
    assert system["has_python"] is True
    assert system["python_version"] == platform.python_version()
    # No NVIDIA GPU here: the same answer NVML gives this process.
    assert system["gpus"] == detect_gpus()
    assert "colima_status" not in body


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/node/status"),
                                              ("POST", "/api/node/capabilities"),
                                              ("DELETE", "/api/node/restart")])
def test_node_wrong_method_is_405(client: ApiClient, method: str, path: str) -> None:
    resp = client.request(method, path)
    assert resp.status_code == 405
    assert resp.json() == {"error": "Method not allowed"}


def test_restart_reexecutes_with_same_flags(fresh_node: NodeProcess) -> None:
    fresh_node.env["RN_PREFECT_WARMUP"] = "false"  # no workflows run here
    fresh_node.start()
    c = fresh_node.client()
    try:
        svc = c.post("/api/services", json={"type": "docker", "name": "kept",
                                            "endpoint": "local"}).json()["service"]
        wf = c.post("/api/workflows", json={"name": "kept"}).json()
        before = c.get("/api/node/status").json()
        wait_until(lambda: c.get("/api/node/status").json()["uptime_seconds"] >= 2, 30, "uptime")
        asked = time.monotonic()
        resp = c.post("/api/node/restart")
        assert resp.status_code == 200
        assert resp.json() == {"success": True, "message": "Node restart initiated successfully"}
    finally:
        c.close()
    pid = fresh_node.pid
    wait_until(lambda: fresh_node.log().count(" is running.") >= 2, 90, "the second start")
    fresh_node.wait_ready(60)
    assert fresh_node.proc is not None and fresh_node.proc.poll() is None
    assert fresh_node.pid == pid
    started = re.findall(r"Started server process \[(\d+)\]", fresh_node.log())
    assert {int(p) for p in started} == {pid}
    assert f"--api-port {fresh_node.api_port}" in " ".join(fresh_node.args)

    c = fresh_node.client()
    try:
        after = c.get("/api/node/status").json()
        assert after["peer_id"] == before["peer_id"]
        # The uptime counts from the re-executed start, not from the first one.
        assert after["uptime_seconds"] <= time.monotonic() - asked + 1
        assert c.get(f"/api/services/{svc['id']}").json()["service"]["name"] == "kept"
        assert c.get(f"/api/workflows/{wf['id']}").json()["name"] == "kept"
    finally:
        c.close()


def test_status_counts_follow_service_changes(client: ApiClient) -> None:
    def counts() -> tuple[int, int]:
        body = client.get("/api/node/status").json()
        return body["apps_count"], body["files_count"]

    apps, files = counts()
    svc = client.post("/api/services", json={"type": "docker", "name": "counted",
                                             "endpoint": "e"}).json()["service"]
    data = client.post("/api/services", json={"type": "storage", "name": "f"}).json()["service"]
    assert counts() == (apps + 1, files + 1)
    client.put(f"/api/services/{svc['id']}/status", json={"status": "INACTIVE"})
    assert counts() == (apps, files + 1)
    client.delete(f"/api/services/{data['id']}")
    assert counts() == (apps, files)
