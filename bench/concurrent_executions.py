"""Ten executions of a 5-node workflow started at once, against one execution alone.

A real node is built in this process (``Node``, with its Prefect server and Prefect's database
beside it, as ``remote-network start`` runs it). The workflow is a chain of five ``/bin/cat``
standalone jobs (STDOUT -> STDIN, the first fed from its ``stdin`` config). One execution alone is
timed (median of a few, after a warm-up), then ten are started at once through the runner behind
``POST /api/workflows/{id}/execute`` and the time until the last one ends is taken.

Printed: the single-execution time, the total for ten, their ratio (goal: at most 3 on 2 cores),
each execution's duration and its longest wait between two job state changes, and stalls on a
database lock: answers of the Prefect API that say "database is locked" or ask to retry (503;
Prefect's client then waits about 2 s), and lines with "database is locked" in the Prefect
server's log and in this process's log records. The waits are shown beside them:
on 2 busy cores ten executions also wait on each other for the CPU, so a long wait alone is not a
lock. ``--prefect-db sqlite`` runs Prefect on SQLite instead of the embedded PostgreSQL, to show
the difference.

For scale, the same is measured in the same run for plain Prefect: an async flow of five tasks
calling ``subprocess.run(["/bin/cat"])`` (the baseline of ``bench/workflow_overhead.py``), against
the same Prefect server, one alone and then ten at once. Its ratio is what Prefect itself allows
on this machine; the node's ratio is printed beside it. And the floor under any execution that is
a Prefect flow run: ten bare flow runs at once (each created, set Running, set Completed through
Prefect's client; no task, no job), as a multiple of one execution of the node.

    .venv/bin/python bench/concurrent_executions.py [--executions 10] [--prefect-db postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from orchestrator.config import Settings  # noqa: E402
from orchestrator.events import JOB_UPDATED  # noqa: E402
from orchestrator.node import Node  # noqa: E402
from orchestrator.services.standalone_services import RunConfig  # noqa: E402
from tests.support.node_process import free_port, free_udp_port  # noqa: E402

NODES = 5
RATIO_GOAL = 3.0
STALL_SECONDS = 1.5
LOCKED = "database is locked"


class LockedAnswers:
    """Counts the Prefect API's answers in this process that make its client retry later."""

    def __init__(self) -> None:
        self.count = 0
        send = httpx.AsyncClient.send

        async def counted(client: httpx.AsyncClient, request: httpx.Request,
                          **kwargs: Any) -> httpx.Response:
            response = await send(client, request, **kwargs)
            if response.status_code == 503 or (
                    response.status_code >= 400 and LOCKED in response.text):
                self.count += 1
            return response

        httpx.AsyncClient.send = counted  # type: ignore[method-assign,assignment]


class LockLines(logging.Handler):
    """Counts this process's log records that mention a locked database."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        if LOCKED in text:
            self.count += 1


async def run_one(node: Node, wf: int) -> float:
    runner = node.executions
    t = time.perf_counter()
    execution = runner.execute(wf)
    eid = int(execution.id or 0)
    await runner.wait(eid)
    elapsed = time.perf_counter() - t
    status = node.execution_store.execution(eid)
    if status.status != "COMPLETED":
        raise SystemExit(f"execution {eid} ended {status.status}: {status.error}")
    return elapsed


async def run_many(node: Node, wf: int, n: int) -> tuple[float, list[float], list[float]]:
    """Total time, each execution's duration, and each one's longest wait between two of its
    job state changes (from its start to its end)."""
    runner = node.executions
    changes: dict[int, list[float]] = {}
    async with node.bus.subscribe() as sub:

        async def watch() -> None:
            while True:
                event = await sub.get()
                if event.type == JOB_UPDATED:
                    changes.setdefault(event.payload["execution_id"], []).append(
                        time.perf_counter())

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        ended: dict[int, float] = {}
        ids = [int(runner.execute(wf).id or 0) for _ in range(n)]

        async def wait(eid: int) -> None:
            await runner.wait(eid)
            ended[eid] = time.perf_counter()

        await asyncio.gather(*(wait(eid) for eid in ids))
        total = time.perf_counter() - started
        await asyncio.sleep(0.1)  # the last events reach the subscriber
        watcher.cancel()
    for eid in ids:
        row = node.execution_store.execution(eid)
        if row.status != "COMPLETED":
            raise SystemExit(f"execution {eid} ended {row.status}: {row.error}")
    gaps = []
    for eid in ids:
        marks = [started, *sorted(changes.get(eid, [])), ended[eid]]
        gaps.append(max(b - a for a, b in itertools.pairwise(marks)))
    return total, [ended[eid] - started for eid in ids], gaps


async def run_plain_prefect(executions: int, singles: int) -> tuple[float, float]:
    """One plain Prefect flow of NODES ``cat`` tasks alone (median), then ``executions`` at once."""
    from workflow_overhead import baseline_flows

    chain, _fan_out, _times = baseline_flows()
    await chain(NODES)  # warm-up
    alone = []
    for _ in range(singles):
        t = time.perf_counter()
        await chain(NODES)
        alone.append(time.perf_counter() - t)
    t = time.perf_counter()
    await asyncio.gather(*(chain(NODES) for _ in range(executions)))
    return statistics.median(alone), time.perf_counter() - t


async def run_bare_flow_runs(executions: int, singles: int) -> tuple[float, float]:
    """One bare Prefect flow run alone (median), then ``executions`` at once: each is created,
    set Running and set Completed, the three API calls a flow run cannot do without."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    @flow(name="bare-flow-run")
    async def bare() -> None:
        return None

    async with get_client() as client:

        async def one() -> None:
            run = await client.create_flow_run(bare)
            await client.set_flow_run_state(run.id, Running())
            await client.set_flow_run_state(run.id, Completed())

        await one()  # warm-up
        alone = []
        for _ in range(singles):
            t = time.perf_counter()
            await one()
            alone.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(executions)))
        return statistics.median(alone), time.perf_counter() - t


async def main(executions: int, prefect_db: str, singles: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    lock_lines = LockLines()
    locked = LockedAnswers()
    for name in ("", "prefect"):
        logging.getLogger(name).addHandler(lock_lines)
    with tempfile.TemporaryDirectory(prefix="rn-bench-conc-") as tmp:
        data = Path(tmp) / "node"
        db_url = (f"sqlite+aiosqlite:///{data / 'prefect' / 'prefect.db'}"
                  if prefect_db == "sqlite" else None)
        settings = Settings(data_dir=data, api_host="127.0.0.1", api_port=free_port(),
                            http_port=free_port(), p2p_host="127.0.0.1",
                            quic_port=free_udp_port(), dht_port=free_udp_port(),
                            log_level="WARNING", prefect_database_url=db_url)
        node = Node(settings)
        await node.start()
        try:
            await node.prefect.wait_ready()
            view, _ = node.standalone.create_from_local(
                name="cat", description="", config=RunConfig(
                    executable_path="/bin/cat",
                    custom_interfaces=[{"interface_type": "STDIN"},
                                       {"interface_type": "STDOUT"}]))
            sid = int(view.service.id or 0)
            iface = {i.interface_type: int(i.id or 0) for i in view.interfaces}
            wf = int(node.workflows.create("five").id or 0)
            ids = [int(node.workflows.add_node(
                wf, service_id=sid, config={"stdin": "hello\n"} if i == 0 else {}).id or 0)
                for i in range(NODES)]
            for a, b in itertools.pairwise(ids):
                node.workflows.add_connection(wf, {
                    "source_node_id": a, "source_interface_id": iface["STDOUT"],
                    "target_node_id": b, "target_interface_id": iface["STDIN"]})

            await run_one(node, wf)  # warm-up
            one = statistics.median([await run_one(node, wf) for _ in range(singles)])
            total, each, gaps = await run_many(node, wf, executions)
            plain_one, plain_total = await run_plain_prefect(executions, singles)
            bare_one, bare_total = await run_bare_flow_runs(executions, singles)
            server_log = settings.prefect_dir / "server.log"
            server_locks = (server_log.read_text(errors="replace").count(LOCKED)
                            if server_log.exists() else 0)
        finally:
            await node.stop()

    ratio = total / one
    stalled = [i for i, gap in enumerate(gaps) if gap > STALL_SECONDS]
    print(f"Prefect database: {node.prefect.database} ({prefect_db})")
    print(f"one execution ({NODES} jobs), median of {singles}: {one * 1000:.0f} ms")
    print(f"{executions} executions at once: {total * 1000:.0f} ms")
    print("  each: " + ", ".join(f"{d * 1000:.0f}" for d in each) + " ms")
    print("  longest wait between job state changes: "
          + ", ".join(f"{g * 1000:.0f}" for g in gaps) + " ms")
    print(f"ratio {ratio:.2f} (goal <= {RATIO_GOAL:g}): "
          f"{'met' if ratio <= RATIO_GOAL else 'MISSED'}")
    print(f"plain Prefect flows of {NODES} tasks on the same server: one {plain_one * 1000:.0f} ms,"
          f" {executions} at once {plain_total * 1000:.0f} ms, ratio {plain_total / plain_one:.2f}"
          f" (node/plain Prefect, {executions} at once: {total / plain_total:.2f})")
    print(f"bare Prefect flow runs (no task, no job): one {bare_one * 1000:.0f} ms, "
          f"{executions} at once {bare_total * 1000:.0f} ms = {bare_total / one:.2f} x one "
          f"execution of the node (the goal allows {RATIO_GOAL:g} x for everything)")
    print(f"Prefect API answers asking to retry (503) or saying {LOCKED!r}: {locked.count}")
    print(f'"{LOCKED}": {server_locks} in the Prefect server log, '
          f"{lock_lines.count} in the node's log records")
    print(f"executions that waited over {STALL_SECONDS:g} s between job state changes: "
          f"{len(stalled)}")
    no_stall = server_locks == 0 and lock_lines.count == 0 and locked.count == 0
    print(f"no execution stalled on a database lock: {'met' if no_stall else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10)
    parser.add_argument("--singles", type=int, default=3)
    parser.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres")
    args = parser.parse_args()
    asyncio.run(main(args.executions, args.prefect_db, args.singles))
