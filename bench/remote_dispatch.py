"""Round trip of a no-op job dispatched to another peer (RemoteDispatcher over QUIC, the job run
by the other peer's executor) against the same job dispatched locally (LocalDispatcher), measured
in the same run between two in-process peers on 127.0.0.1: both medians and the ratio.

A remote job runs under the terms the executing peer gives a stranger (``PeerPolicy.admit``: no
network, an unprivileged user when the node is root), a local one under the owner's. The same
local job under a stranger's terms is timed as well, to tell the isolation's share of the
overhead from the protocol's.

Each job takes a small input artifact held by the requester (the remote side fetches it the first
time, then has it) and its outputs come back to the requester as results of the workflow.

Usage: .venv/bin/python bench/remote_dispatch.py [runs]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executors.base import JobOutcome
from network.identity import Identity
from network.transport import PeerTransport, TransportConfig
from orchestrator.job_request import JobInput, JobRequest
from tests.support.job_peer import JobPeer

EXECUTABLE = "/bin/true"


class Side(JobPeer):
    def __init__(self, root: Path, addresses: dict[str, list[tuple[str, int]]]) -> None:
        root.mkdir(parents=True)
        super().__init__(PeerTransport(
            Identity.generate(), TransportConfig(host="127.0.0.1", port=0, tls_dir=root / "tls"),
            resolver=lambda p: addresses.get(p, [])), root)
        self.addresses = addresses

    async def start(self) -> None:
        await self.transport.start()
        self.addresses[self.transport.peer_id] = [("127.0.0.1", self.transport.port)]
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        await self.transport.stop()

    def noop_service(self) -> int:
        return self.stdin_to_stdout_service("noop", EXECUTABLE)


async def main(runs: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    addresses: dict[str, list[tuple[str, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="rn-bench-") as tmp:
        a, b = Side(Path(tmp) / "a", addresses), Side(Path(tmp) / "b", addresses)
        await a.start()
        await b.start()
        try:
            local_sid, remote_sid = a.noop_service(), b.noop_service()
            data = a.store.put_bytes(b"bench input\n")
            inputs = (JobInput(None, "STDIN", artifact=data),)
            local_t: list[float] = []
            remote_t: list[float] = []
            stranger_t: list[float] = []
            view = a.registry.snapshot(local_sid)
            for i in range(runs + 1):
                req = JobRequest(f"bench-l{i}", local_sid, a.transport.peer_id, inputs)
                t = time.perf_counter()
                result = await a.local.dispatch(req)
                elapsed = time.perf_counter() - t
                assert result.outcome is JobOutcome.COMPLETED, result.error
                req = JobRequest(f"bench-r{i}", remote_sid, b.transport.peer_id, inputs)
                t = time.perf_counter()
                result = await a.remote.dispatch(req)
                remote_elapsed = time.perf_counter() - t
                assert result.outcome is JobOutcome.COMPLETED, result.error
                admitted = a.local.policy.admit(
                    view, b.transport.peer_id,
                    JobRequest(f"bench-s{i}", local_sid, a.transport.peer_id, inputs))
                t = time.perf_counter()
                result = await a.local.dispatch(admitted.request, terms=admitted.terms)
                stranger_elapsed = time.perf_counter() - t
                assert result.outcome is JobOutcome.COMPLETED, result.error
                if i:  # the first round warms up both (connection, first fetch)
                    local_t.append(elapsed)
                    remote_t.append(remote_elapsed)
                    stranger_t.append(stranger_elapsed)
        finally:
            await a.stop()
            await b.stop()
    m_local, m_remote = statistics.median(local_t), statistics.median(remote_t)
    m_stranger = statistics.median(stranger_t)
    print(f"runs: {runs}")
    print(f"local dispatch median:  {m_local * 1000:.2f} ms")
    print(f"remote dispatch median: {m_remote * 1000:.2f} ms")
    print(f"local dispatch median under a stranger's terms: {m_stranger * 1000:.2f} ms "
          f"(isolation: {(m_stranger - m_local) * 1000:+.2f} ms, the rest: "
          f"{(m_remote - m_stranger) * 1000:.2f} ms)")
    print(f"remote overhead: {(m_remote - m_local) * 1000:.2f} ms (goal <= 2 ms), "
          f"ratio: {m_remote / m_local:.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
