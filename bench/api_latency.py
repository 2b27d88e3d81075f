"""Requests per second of GET /api/node/status (JWT, full stack) against a bare FastAPI endpoint.

Both are served the same way in this run: a separate process, uvicorn on a loopback socket bound
by ``orchestrator.serve.bind``, the same uvicorn settings, the node's HTTP port. The client is
the same for both: a fixed number of keep-alive connections sending a fixed number of requests
as raw HTTP/1.1, so that the client costs far less than the servers it measures. Prints both
rates and their ratio (goal: at least 0.6).

    .venv/bin/python bench/api_latency.py [--requests 5000] [--connections 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.node_process import NodeProcess, free_port  # noqa: E402

BARE_SERVER = """
import asyncio, sys
import uvicorn
from fastapi import FastAPI
from orchestrator.serve import bind

app = FastAPI()

@app.get("/status")
async def status() -> dict:
    return {"peer_id": "0" * 40, "uptime_seconds": 1, "known_peers": 0}

async def serve() -> None:
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    await uvicorn.Server(config).serve(sockets=[bind("127.0.0.1", int(sys.argv[1]))])

asyncio.run(serve())
"""


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{url}/status")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


@contextlib.contextmanager
def node_server() -> Iterator[tuple[str, str, int]]:
    """A real node process (HTTP port) and a JWT from a real Ed25519 login."""
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(Path(tmp) / "node", env={"RN_PREFECT_WARMUP": "false",
                                                    "RN_LOG_LEVEL": "WARNING"})
        node.start()
        try:
            client = node.client()
            token = client.token or ""
            client.close()
            yield node.http_url, token, node.pid
        finally:
            node.stop()


async def _connection(host: str, port: int, request: bytes, count: int,
                      go: asyncio.Event) -> None:
    """One keep-alive connection: a warm-up request, then ``count`` requests in turn."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(count + 1):
            if i == 1:
                await go.wait()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            if status != 200:
                raise RuntimeError(f"HTTP {status} from {host}:{port}")
    finally:
        writer.close()


def measure(url: str, *, requests: int, connections: int, headers: dict[str, str],
            server_pid: int) -> tuple[float, float]:
    """Requests per second for ``requests`` GETs of ``url`` over ``connections`` connections,
    and the server's CPU time per request in microseconds (steadier on a busy machine)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {host}:{port}",
             *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    per_connection = requests // connections

    async def run() -> float:
        go = asyncio.Event()
        tasks = [asyncio.create_task(_connection(host, port, request, per_connection, go))
                 for _ in range(connections)]
        await asyncio.sleep(0.5)
        start = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        return per_connection * connections / (time.perf_counter() - start)

    server = psutil.Process(server_pid)
    cpu_before = sum(server.cpu_times()[:2])
    rate = asyncio.run(run())
    cpu = sum(server.cpu_times()[:2]) - cpu_before
    return rate, cpu / (per_connection * connections) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best kept")
    args = parser.parse_args()
    with bare_server() as (bare_url, bare_pid), node_server() as (node_url, token, node_pid):
        bare, full = [], []
        for _ in range(args.rounds):
            bare.append(measure(f"{bare_url}/status", requests=args.requests,
                                connections=args.connections, headers={}, server_pid=bare_pid))
            full.append(measure(f"{node_url}/api/node/status", requests=args.requests,
                                connections=args.connections,
                                headers={"Authorization": f"Bearer {token}"},
                                server_pid=node_pid))
    (best_bare, bare_cpu), (best_full, full_cpu) = max(bare), max(full)
    for label, rounds, (rate, cpu) in (("bare FastAPI endpoint:     ", bare, max(bare)),
                                       ("GET /api/node/status (JWT):", full, max(full))):
        print(f"{label} {rate:8.0f} req/s, server CPU {cpu:5.0f} us/request  (rounds: "
              + ", ".join(f"{r:.0f}" for r, _ in rounds) + " req/s)")
    print(f"ratio node/bare: {best_full / best_bare:.2f}  (goal >= 0.6; the same ratio from "
          f"server CPU per request, bare/node: {bare_cpu / full_cpu:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
