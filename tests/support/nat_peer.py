"""Child process: one peer transport (a relay, a public peer or a peer behind NAT) driven by
JSON lines on stdin, answering JSON lines on stdout. Run inside a test's network namespace:

    python -m tests.support.nat_peer --host IP --dir DIR [--relay]

Commands: ``book`` (addresses, relays and NAT types of the others), ``register`` (with a
relay, accepting its tunnels), ``observe`` (learn the NAT type from the given peers), ``blob``
(hold a blob of N MiB), ``service`` (offer ``cat``), ``reach`` (connect to a peer, give hole
punching its chance, fetch a blob, say which path it took), ``job`` (run ``cat`` on a peer over
one of our blobs and fetch its output back), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from executors.base import ArtifactRef
from network.hole_punch import PUNCH, HolePuncher
from network.identity import Identity
from network.nat_type import NatObserver, NatType
from network.relay import RELAY_REGISTER, RelayService
from network.transport import PeerTransport, TransportConfig
from orchestrator.job_request import JobInput, JobRequest
from tests.support.job_peer import JobPeer


class Peer:
    def __init__(self, host: str, root: Path, *, relay: bool) -> None:
        self.root = root
        self.addresses: dict[str, list[tuple[str, int]]] = {}
        self.relays: dict[str, str] = {}
        self.nat_types: dict[str, NatType] = {}
        self.transport = PeerTransport(
            Identity.generate(),
            TransportConfig(host=host, port=0, tls_dir=root / "tls", request_timeout=5,
                            connect_timeout=2, handshake_timeout=3),
            resolver=lambda p: self.addresses.get(p, []),
            relay_for=self.relays.get)
        self.jobs = JobPeer(self.transport, root / "node")
        self.relay = RelayService(self.transport, capacity=16, price_per_gb=0) if relay else None
        self.observer = NatObserver(self.transport, list)
        self.puncher = HolePuncher(
            self.transport,
            own_nat=lambda: (self.observer.nat_type, self.observer.external_address),
            peer_nat=lambda p: self.nat_types.get(p, NatType.UNKNOWN))
        self.transport.register(PUNCH, self.puncher.on_punch)
        self.transport.on_relayed.append(self.puncher.relayed)

    async def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg["cmd"]
        t = self.transport
        if cmd == "book":
            for peer_id, info in msg["peers"].items():
                if peer_id == t.peer_id:
                    continue
                self.addresses[peer_id] = [tuple(a) for a in info.get("addresses", [])]
                if info.get("relay"):
                    self.relays[peer_id] = info["relay"]
                self.nat_types[peer_id] = NatType(info.get("nat_type") or "unknown")
            return {"ok": True}
        if cmd == "register":
            relay = msg["relay"]
            t.accepts_tunnels_from = lambda peer: peer == relay
            await t.request(relay, RELAY_REGISTER, {"dht_node_id": t.peer_id[:16]})
            return {"ok": True}
        if cmd == "observe":
            self.observer.candidates = lambda: list(msg["observers"])
            nat_type, address = await self.observer.observe()
            return {"nat_type": nat_type.value, "address": list(address) if address else None}
        if cmd == "blob":
            ref = self.jobs.store.put_bytes(os.urandom(int(msg["mib"] * 1024 * 1024)))
            return {"sha256": ref.sha256}
        if cmd == "service":
            return {"service_id": self.jobs.stdin_to_stdout_service("cat", "/bin/cat")}
        if cmd == "job":
            return await self.job(msg["peer"], int(msg["service_id"]), msg["sha256"])
        if cmd == "reach":
            return await self.reach(msg["peer"], msg.get("sha256"))
        raise ValueError(f"unknown command {cmd}")

    async def job(self, peer_id: str, service_id: int, sha256: str) -> dict[str, Any]:
        """Run ``cat`` on ``peer_id`` over one of our blobs: it fetches the input from us, we
        fetch its output back; the output must be the input, byte for byte."""
        ref = ArtifactRef(sha256, self.jobs.store.path(sha256).stat().st_size)
        request = JobRequest(f"lab-{time.monotonic_ns()}", service_id, peer_id,
                             (JobInput(None, "STDIN", artifact=ref),), timeout=60)
        result = await self.jobs.remote.dispatch(request)
        out = result.outputs.get("STDOUT")
        return {"outcome": result.outcome.value, "why": result.error,
                "output_sha256": out.sha256 if out else None,
                "output_here": bool(out and self.jobs.store.has(out.sha256))}

    async def reach(self, peer_id: str, sha256: str | None) -> dict[str, Any]:
        t = self.transport
        started = time.monotonic()
        first = await t.connect(peer_id)
        relayed_first = first.relayed_via is not None
        # Give the punch (started by the relayed dial) its chance: bounded wait.
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            conn = t.current_connection(peer_id)
            if conn is not None and conn.relayed_via is None:
                break
            if not self.puncher._tasks and time.monotonic() - started > 1:
                break
            await asyncio.sleep(0.05)
        conn = t.current_connection(peer_id)
        direct = conn is not None and conn.relayed_via is None
        out: dict[str, Any] = {"relayed_first": relayed_first, "direct": direct,
                               "upgrade_ms": [round(s * 1000, 1)
                                              for s in self.puncher.upgrade_seconds],
                               "attempts": self.puncher.attempts,
                               "ping": (await t.request(peer_id, "ping", {}))["peer_id"]}
        if sha256:
            dest = self.root / f"got-{sha256}"
            size = await t.fetch_bulk(peer_id, sha256, dest, timeout=60)
            out["fetched"] = size
            out["sha_ok"] = hashlib.sha256(dest.read_bytes()).hexdigest() == sha256
        return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--relay", action="store_true")
    args = parser.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    peer = Peer(args.host, root, relay=args.relay)
    await peer.transport.start()
    await peer.jobs.start()
    print(json.dumps({"peer_id": peer.transport.peer_id, "port": peer.transport.port}),
          flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == '{"cmd": "quit"}':
                break
            msg = json.loads(line)
            try:
                reply = await peer.handle(msg)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    finally:
        await peer.puncher.stop()
        await peer.jobs.stop()
        await peer.transport.stop()


if __name__ == "__main__":
    asyncio.run(main())
