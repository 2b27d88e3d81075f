"""A request to a peer behind NAT through a relay, against the same request sent directly.

Three in-process peers on 127.0.0.1: a relay R, a peer N registered with it, and a requester X.
X sends ``ping`` requests to N over a direct QUIC connection and over a connection tunnelled
through R (``network.relay_tunnel``), alternately, on connections opened beforehand; the
medians and their ratio are printed. Then X fetches a blob from N each way and the throughputs
and their ratio are printed: directly over the TLS-over-TCP channel, and through the relay over
the same TLS channel carried by the relay's TCP splice (``network.relay_splice``), both the
default; then a smaller blob on QUIC streams, directly and inside the tunnel (the fallback).

Usage: .venv/bin/python bench/relay_roundtrip.py [requests] [blob MiB] [QUIC blob MiB]
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from network.identity import Identity
from network.relay import RELAY_REGISTER, RelayService
from network.transport import PeerTransport, TransportConfig


async def peer(root: Path, name: str, book: dict[str, list[tuple[str, int]]]) -> PeerTransport:
    t = PeerTransport(Identity.generate(),
                      TransportConfig(host="127.0.0.1", port=0, tls_dir=root / name),
                      resolver=lambda p: book.get(p, []))
    await t.start()
    book[t.peer_id] = [("127.0.0.1", t.port)]
    return t


async def main(requests: int, mib: int, quic_mib: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rn-bench-relay-") as tmp:
        root = Path(tmp)
        book: dict[str, list[tuple[str, int]]] = {}
        relay, nat = await peer(root, "r", book), await peer(root, "n", book)
        direct_x, relayed_x = await peer(root, "x1", book), await peer(root, "x2", book)
        peers = [relay, nat, direct_x, relayed_x]
        try:
            service = RelayService(relay, capacity=10, price_per_gb=0.01)
            nat.accepts_tunnels_from = lambda p: p == relay.peer_id
            await nat.request(relay.peer_id, RELAY_REGISTER, {})
            relayed_x.relay_for = lambda p: relay.peer_id if p == nat.peer_id else None
            digests: dict[int, str] = {}
            for size in {mib, quic_mib}:
                blob = os.urandom(size * 1024 * 1024)
                digests[size] = hashlib.sha256(blob).hexdigest()
                (root / digests[size]).write_bytes(blob)
            nat.blob_source = lambda sha: root / sha if sha in digests.values() else None

            times: dict[str, list[float]] = {"direct": [], "relayed": []}
            for x in (direct_x, relayed_x):
                await x.request(nat.peer_id, "ping")  # connection opened, warm
            for _ in range(requests):
                for name, x in (("direct", direct_x), ("relayed", relayed_x)):
                    t = time.perf_counter()
                    await x.request(nat.peer_id, "ping")
                    times[name].append(time.perf_counter() - t)
            direct = statistics.median(times["direct"]) * 1000
            relayed = statistics.median(times["relayed"]) * 1000
            print(f"request round trip, median of {requests}: direct {direct:.2f} ms, "
                  f"through the relay {relayed:.2f} ms, ratio {relayed / direct:.2f}")

            rates = {}
            for name, x, tcp, size in (
                    ("direct", direct_x, True, mib), ("direct QUIC", direct_x, False, quic_mib),
                    ("relayed", relayed_x, True, mib),
                    ("relayed QUIC", relayed_x, False, quic_mib)):
                sha = digests[size]
                t = time.perf_counter()
                await x.fetch_bulk(nat.peer_id, sha, root / f"got-{len(rates)}", timeout=600,
                                   prefer_tcp=tcp)
                rates[name] = size / (time.perf_counter() - t)
            [session] = service.list()
            print(f"{mib} MiB blob: direct {rates['direct']:.1f} MiB/s (TLS over TCP), through "
                  f"the relay {rates['relayed']:.1f} MiB/s (TLS over the relay's TCP splice); "
                  f"ratio relayed/direct {rates['relayed'] / rates['direct']:.3f} (goal >= 0.5)")
            print(f"{quic_mib} MiB blob on QUIC streams: direct {rates['direct QUIC']:.1f} MiB/s,"
                  f" in the relay's tunnel {rates['relayed QUIC']:.2f} MiB/s (the fallback)")
            print(f"relay session counted {session['total_bytes'] / 2**20:.1f} MiB")
        finally:
            for t in peers:
                await t.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]) if args else 200, int(args[1]) if len(args) > 1 else 64,
                     int(args[2]) if len(args) > 2 else 16))
