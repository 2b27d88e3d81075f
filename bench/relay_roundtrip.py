"""A request to a peer behind NAT through a relay, against the same request sent directly.

Three in-process peers on 127.0.0.1: a relay R, a peer N registered with it, and a requester X.
X sends ``ping`` requests to N over a direct QUIC connection and over a connection tunnelled
through R (``network.relay_tunnel``), alternately, on connections opened beforehand; the
medians and their ratio are printed. Then X fetches a blob from N each way and the throughputs
and their ratios are printed: directly over the TLS-over-TCP channel (the default where it can),
directly on a QUIC stream, and through the relay, where bulk data stays on QUIC streams inside
the tunnel.

Usage: .venv/bin/python bench/relay_roundtrip.py [requests] [blob MiB]
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


async def main(requests: int, mib: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rn-bench-relay-") as tmp:
        root = Path(tmp)
        book: dict[str, list[tuple[str, int]]] = {}
        relay, nat = await peer(root, "r", book), await peer(root, "n", book)
        direct_x, relayed_x = await peer(root, "x1", book), await peer(root, "x2", book)
        peers = [relay, nat, direct_x, relayed_x]
        try:
            RelayService(relay, capacity=10, price_per_gb=0.01)
            nat.accepts_tunnels_from = lambda p: p == relay.peer_id
            await nat.request(relay.peer_id, RELAY_REGISTER, {})
            relayed_x.relay_for = lambda p: relay.peer_id if p == nat.peer_id else None
            blob = os.urandom(mib * 1024 * 1024)
            digest = hashlib.sha256(blob).hexdigest()
            (root / "blob").write_bytes(blob)
            nat.blob_source = lambda sha: root / "blob" if sha == digest else None

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
            for name, x, tcp in (("direct", direct_x, True), ("direct QUIC", direct_x, False),
                                 ("relayed", relayed_x, True)):
                t = time.perf_counter()
                await x.fetch_bulk(nat.peer_id, digest, root / f"got-{len(rates)}", timeout=600,
                                   prefer_tcp=tcp)
                rates[name] = mib / (time.perf_counter() - t)
            print(f"{mib} MiB blob: direct {rates['direct']:.1f} MiB/s (TLS over TCP), direct "
                  f"on a QUIC stream {rates['direct QUIC']:.1f} MiB/s, through the relay "
                  f"{rates['relayed']:.2f} MiB/s; ratio relayed/direct "
                  f"{rates['relayed'] / rates['direct']:.3f}, relayed/direct QUIC "
                  f"{rates['relayed'] / rates['direct QUIC']:.3f}")
        finally:
            for t in peers:
                await t.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]) if args else 200, int(args[1]) if len(args) > 1 else 16))
