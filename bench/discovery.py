"""Discovery convergence: time until every node of a 20-node network lists every other.

The nodes are in-process DHT nodes (``network.dht.DhtNode`` with real UDP sockets on
127.0.0.1, one event loop), not node processes: 20 full node processes are too heavy for a
2-core machine and would measure interpreter start-up instead. Each network starts from
nothing: one node, then the others bootstrapping from it one after the other; the clock runs
from the first start until every directory is complete. The baseline is a 2-node network
measured the same way in the same run; the figure is the ratio of the two medians.

Usage: .venv/bin/python bench/discovery.py [--nodes 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

from network.dht import DhtConfig, DhtNode, LocalFacts
from network.identity import Identity
from network.peers import PeerDirectory

TOPIC = "bench-mesh"


async def converge(n: int, *, refresh: float, limit: float = 120.0) -> float:
    """Seconds until each of ``n`` fresh nodes lists the other n - 1."""
    nodes: list[DhtNode] = []
    directories: list[PeerDirectory] = []

    async def facts() -> LocalFacts:
        return LocalFacts(quic_addresses=(("127.0.0.1", 9),))

    start = time.perf_counter()
    try:
        seed: tuple[tuple[str, int], ...] = ()
        for _ in range(n):
            identity = Identity.generate()
            directory = PeerDirectory(identity.peer_id, TOPIC, stale_after=60)
            config = DhtConfig(host="127.0.0.1", port=0, topic=TOPIC, bootstrap=seed,
                               rpc_timeout=2.0, refresh_interval=refresh)
            node = DhtNode(identity, config, facts=facts,
                           on_record=directory.update_from_record)
            await node.start()
            if not seed:
                assert node.address is not None
                seed = (node.address,)
            nodes.append(node)
            directories.append(directory)
        while not all(len(d) == n - 1 for d in directories):
            if time.perf_counter() - start > limit:
                raise TimeoutError(f"{n} nodes did not converge in {limit}s")
            await asyncio.sleep(0.01)
        return time.perf_counter() - start
    finally:
        for node in nodes:
            await node.stop(announce=False)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--refresh", type=float, default=30.0,
                        help="DHT refresh interval, s (the node's default is 30)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    base, big = [], []
    for _ in range(args.runs):
        base.append(await converge(2, refresh=args.refresh))
        big.append(await converge(args.nodes, refresh=args.refresh))
    b, g = statistics.median(base), statistics.median(big)
    print(f"in-process DHT nodes on 127.0.0.1, refresh interval {args.refresh:g} s, "
          f"{args.runs} runs each")
    print(f"2-node network converges in      {b * 1000:8.1f} ms (median; runs: "
          f"{', '.join(f'{x * 1000:.0f}' for x in base)})")
    print(f"{args.nodes}-node network converges in     {g * 1000:8.1f} ms (median; runs: "
          f"{', '.join(f'{x * 1000:.0f}' for x in big)})")
    print(f"ratio {args.nodes}-node / 2-node: {g / b:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
