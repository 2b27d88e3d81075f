"""A peer behind NAT reached through a relay: real node processes, a real NAT, real QUIC.

N runs in a network namespace this test makes, behind a firewall that lets N's own traffic out
and its answers in, and drops whatever else comes in unasked, over UDP (QUIC and the DHT), as a
NAT does; the test reaches N's API over TCP. R (``--relay``) and X run on the host side of the
namespace's link. N (``--nat``) keeps a session with R; X reaches N through a tunnel at R, for a
workflow with a job on N, and R counts the bytes it carries.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from network.identity import Identity
from network.peer_errors import PeerUnreachable
from network.transport import PeerTransport, TransportConfig
from tests.support.node_process import ApiClient, NodeProcess, side_by_side
from tests.support.waiting import wait_for_peers, wait_until
from tests.support.workflows import execute, jobs_by_node, make_workflow, sh_service, wait_done

pytestmark = pytest.mark.timeout(300)

FAST = {"RN_DHT_REFRESH_SECONDS": "1", "RN_RELAY_PROBE_SECONDS": "1"}
NO_PREFECT = {**FAST, "RN_PREFECT_WARMUP": "false"}


class NatNamespace:
    """A network namespace on a veth link to the host, behind a NAT-like firewall."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        octet = 100 + int(tag, 16) % 150
        self.name = f"rn-nat-{tag}"
        self.host_if, self.ns_if = f"rnh{tag}", f"rnn{tag}"
        self.host_ip, self.ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"

    def run(self, *cmd: str, inside: bool = False) -> None:
        argv = ["ip", "netns", "exec", self.name, *cmd] if inside else list(cmd)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")

    def create(self) -> None:
        self.run("ip", "netns", "add", self.name)
        self.run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self.run("ip", "link", "set", self.ns_if, "netns", self.name)
        self.run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        self.run("ip", "link", "set", self.host_if, "up")
        self.run("ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if, inside=True)
        self.run("ip", "link", "set", self.ns_if, "up", inside=True)
        self.run("ip", "link", "set", "lo", "up", inside=True)
        for rule in (["-i", "lo", "-j", "ACCEPT"],
                     ["-p", "tcp", "-j", "ACCEPT"],  # the test reads N's API
                     ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                     ["-j", "DROP"]):
            self.run("iptables", "-A", "INPUT", *rule, inside=True)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)


class NamespacedNode(NodeProcess):
    """``remote-network start`` inside ``ns``, listening on its address there."""

    def __init__(self, data_dir: Path, ns: NatNamespace, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.ns = ns

    @property
    def args(self) -> list[str]:
        ip = self.ns.ns_ip
        return ["ip", "netns", "exec", self.ns.name, *super().args,
                "--api-host", ip, "--http-host", ip, "--p2p-host", ip]

    @property
    def https_url(self) -> str:
        return f"https://{self.ns.ns_ip}:{self.api_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.ns.ns_ip}:{self.http_port}"


class Trio:
    def __init__(self, nodes: list[NodeProcess], ns: NatNamespace) -> None:
        self.nodes = nodes
        self.ns = ns
        self.relay, self.nat, self.x = (n.client() for n in nodes)
        self.ids = [c.get("/api/node/status").json()["peer_id"]
                    for c in (self.relay, self.nat, self.x)]

    def close(self) -> None:
        for c in (self.relay, self.nat, self.x):
            c.close()




@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    root: Path = tmp_path_factory.mktemp("relay")
    ns = NatNamespace()
    nodes: list[NodeProcess] = []
    t: Trio | None = None
    try:
        ns.create()
        on_link = ["--p2p-host", ns.host_ip]
        relay = NodeProcess(root / "r", env=NO_PREFECT, extra_args=["--relay", *on_link])
        boot = ["--bootstrap", f"{ns.host_ip}:{relay.dht_port}"]
        nat = NamespacedNode(root / "n", ns, env=NO_PREFECT, extra_args=["--nat", *boot])
        x = NodeProcess(root / "x", env=FAST, extra_args=[*on_link, *boot])
        nodes = [relay, nat, x]
        side_by_side(nodes, "start")
        t = Trio(nodes, ns)
        for i, client in enumerate((t.relay, t.nat, t.x)):
            wait_for_peers(client, set(t.ids) - {t.ids[i]})
        yield t
    finally:
        if t is not None:
            t.close()
        if nodes:
            side_by_side(nodes, "stop")
        ns.delete()


def sessions(c: ApiClient) -> list[dict[str, Any]]:
    r = c.get("/api/relay/sessions")
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()
    return result


def candidate(c: ApiClient, relay_id: str) -> dict[str, Any] | None:
    r = c.get("/api/relay/candidates")
    assert r.status_code == 200, r.text
    return next((x for x in r.json() if x["peer_id"] == relay_id), None)


def wait_session(t: Trio, *, other_than: str = "") -> dict[str, Any]:
    rid, nid, _ = t.ids
    found: list[dict[str, Any]] = []

    def registered() -> bool:
        found[:] = [s for s in sessions(t.relay)
                    if s["client_peer_id"] == nid and s["session_id"] != other_than]
        c = candidate(t.nat, rid)
        return bool(found) and c is not None and c["is_connected"]

    wait_until(registered, 60, "the NAT node's session on the relay")
    return found[0]


async def test_the_nat_node_cannot_be_dialled_but_the_relay_can(trio: Trio,
                                                                 tmp_path: Path) -> None:
    """What the NAT is for: from the host side, a QUIC dial to N gets no answer; to R it does."""
    rid, nid, _ = trio.ids
    probe = PeerTransport(Identity.generate(), TransportConfig(
        host=trio.ns.host_ip, port=0, tls_dir=tmp_path, connect_timeout=3.0, bulk_tcp=False))
    await probe.start()
    try:
        assert await probe.connect_address(trio.ns.host_ip, trio.nodes[0].quic_port,
                                           expected_peer_id=rid) == rid
        with pytest.raises(PeerUnreachable, match="no QUIC answer"):
            await probe.connect_address(trio.ns.ns_ip, trio.nodes[1].quic_port,
                                        expected_peer_id=nid)
    finally:
        await probe.stop()


def test_nat_node_keeps_a_session_with_the_relay(trio: Trio) -> None:
    rid, nid, _ = trio.ids
    session = wait_session(trio)
    assert session["session_type"] == "QUIC" and session["session_id"].startswith("session-")
    assert session["client_node_id"]  # the NAT node's DHT node id
    assert trio.nat.get("/api/node/status").json()["stats"]["connected_relay"] == rid
    c = candidate(trio.nat, rid)
    assert c is not None
    assert c["is_available"] and c["unavailable_msg"] == ""
    assert c["pricing_per_gb"] == 0.01 and c["capacity"] == 100
    assert c["latency"].endswith("ms") and 0 < c["reputation_score"] <= 1
    assert c["endpoint"] == f"{trio.ns.host_ip}:{trio.nodes[0].quic_port}"

    def advertised() -> bool:
        peers = {p["peer_id"]: p for p in trio.x.get("/api/peers").json()["peers"]}
        nat = peers.get(nid, {})
        return bool(nat.get("using_relay")) and nat.get("connected_relay_id") == rid

    wait_until(advertised, 60, "X sees that N uses the relay")
    peers = {p["peer_id"]: p for p in trio.x.get("/api/peers").json()["peers"]}
    assert peers[nid]["is_behind_nat"] is True
    assert peers[rid]["is_relay"] is True


def test_job_on_the_nat_node_runs_through_the_relay(trio: Trio) -> None:
    _, nid, xid = trio.ids
    before = wait_session(trio)
    wait_until(lambda: next((p for p in trio.x.get("/api/peers").json()["peers"]
                             if p["peer_id"] == nid), {}).get("using_relay", False),
               60, "X sees that N uses the relay")
    src = sh_service(trio.x, "relay-source", "printf 'through the relay\\n'")
    upper = sh_service(trio.nat, "relay-upper", "tr a-z A-Z")
    wf, ids = make_workflow(trio.x, "relayed", [(src[0], {}, xid), (upper[0], {}, nid)],
                            [(0, src[1]["STDOUT"], 1, upper[1]["STDIN"])])
    eid = execute(trio.x, wf)
    status = wait_done(trio.x, eid, 240)
    jobs = jobs_by_node(trio.x, eid)
    assert status["status"] == "COMPLETED", (status, jobs)
    items = trio.x.get(f"/api/job-executions/{jobs[ids[1]]['id']}/interfaces").json()
    out = {i["interface_type"]: i for i in items["interfaces"] if i["direction"] == "output"}
    assert out["STDOUT"]["value"] == "THROUGH THE RELAY\n"

    after = next(s for s in sessions(trio.relay) if s["session_id"] == before["session_id"])
    # The relay carried X's QUIC packets to N and back: more than the job's bytes each way.
    assert after["egress_bytes"] > before["egress_bytes"] + 1000
    assert after["ingress_bytes"] > before["ingress_bytes"] + 1000
    assert after["total_bytes"] == after["ingress_bytes"] + after["egress_bytes"]
    assert after["earnings"] == round(after["total_bytes"] / 1e9 * 0.01, 9)
    # The dashboard's figures: the relay's totals cover that session; the NAT node is private.
    relay_stats = trio.relay.get("/api/node/status").json()["stats"]
    assert (relay_stats["node_type"], relay_stats["max_connections"],
            relay_stats["pricing_per_gb"]) == ("public", 100, 0.01)
    assert relay_stats["active_sessions"] >= 1
    assert relay_stats["total_bytes"] >= after["total_bytes"]
    nat_stats = trio.nat.get("/api/node/status").json()["stats"]
    assert nat_stats["node_type"] == "private" and "active_sessions" not in nat_stats

    # The NAT node's "Current relay" card: the session as the relay counts it, from the
    # relay's answer to the next keepalive.
    seen: dict[str, Any] = {}

    def counted() -> bool:
        stats = trio.nat.get("/api/node/status").json()["stats"]
        seen.update(stats.get("current_relay_session") or {})
        return seen.get("total_bytes", 0) >= after["total_bytes"]

    wait_until(counted, 60, "the NAT node shows the relay's byte count")
    current = seen
    assert current["relay_peer_id"] == trio.ids[0] and current["pricing"] == 0.01
    assert current["total_bytes"] == current["ingress_bytes"] + current["egress_bytes"]
    assert current["current_cost"] == round(current["total_bytes"] / 1e9 * 0.01, 9)
    assert current["endpoint"] and current["latency"].endswith("ms")


def test_nat_node_disconnects_connects_and_prefers(trio: Trio) -> None:
    rid, nid, _ = trio.ids
    wait_session(trio)
    r = trio.nat.post("/api/relay/disconnect")
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "Disconnected from relay successfully"}
    wait_until(lambda: not [s for s in sessions(trio.relay) if s["client_peer_id"] == nid],
               30, "the session ended on the relay")
    # Told to disconnect, it stays without a relay through later probe rounds (1 s apart).
    time.sleep(3)
    c = candidate(trio.nat, rid)
    assert c is not None and not c["is_connected"] and c["is_available"]

    for body in ({"peer_id": "f" * 40}, {"peer_id": nid}):
        r = trio.nat.post("/api/relay/connect", json=body)
        assert r.status_code == 400 and "not a known relay" in r.json()["error"], r.text
    assert trio.nat.post("/api/relay/connect", json={}).status_code == 400

    with trio.nat.websocket() as ws:
        r = trio.nat.post("/api/relay/connect", json={"peer_id": rid})
        assert r.status_code == 202
        assert r.json() == {"success": True, "message": "Relay connection initiated"}
        wait_session(trio)
        events = []
        for _ in range(1000):  # bounded: any node event counts against it
            if any(e["payload"]["connected_relay"] == rid for e in events):
                break
            message = json.loads(ws.recv(timeout=30))
            if message["type"] == "RELAY_CANDIDATES":
                events.append(message)
        else:
            raise AssertionError(f"no RELAY_CANDIDATES naming the relay: {events[-3:]}")
    assert any(c["peer_id"] == rid and c["is_connected"]
               for c in events[-1]["payload"]["candidates"])

    r = trio.nat.post("/api/relay/prefer", json={"peer_id": rid})
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "Preferred relay set successfully"}
    c = candidate(trio.nat, rid)
    assert c is not None and c["is_preferred"] and c["is_connected"]
    saved = json.loads((trio.nodes[1].data_dir / "relay.json").read_text())
    assert saved == {"preferred": rid}


def test_relay_owner_disconnects_then_blacklists_a_session(trio: Trio) -> None:
    rid, nid, _ = trio.ids
    r = trio.relay.post("/api/relay/sessions/session-nope/disconnect")
    assert r.status_code == 404 and r.json() == {"error": "Session not found"}
    first = wait_session(trio)
    r = trio.relay.post(f"/api/relay/sessions/{first['session_id']}/disconnect")
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "Session disconnected successfully"}
    # The NAT node finds itself without a relay and registers again.
    second = wait_session(trio, other_than=first["session_id"])

    r = trio.relay.post(f"/api/relay/sessions/{second['session_id']}/blacklist")
    assert r.status_code == 200
    assert r.json() == {"success": True,
                        "message": "Peer blacklisted and disconnected successfully"}
    assert trio.relay.get("/api/blacklist/check", params={"peer_id": nid}).json()[
        "is_blacklisted"] is True
    entries = trio.relay.get("/api/blacklist").json()["blacklist"]
    assert any(e["peer_id"] == nid and e["reason"] == "Manual blacklist from relay session"
               for e in entries)
    assert [s for s in sessions(trio.relay) if s["client_peer_id"] == nid] == []

    def dropped() -> bool:
        c = candidate(trio.nat, rid)
        return c is not None and not c["is_connected"] and not c["is_available"]

    wait_until(dropped, 60, "the NAT node without its relay")
    assert trio.nat.get("/api/node/status").json()["stats"]["connected_relay"] == ""
    assert [s for s in sessions(trio.relay) if s["client_peer_id"] == nid] == []
