"""Orchestration overhead of workflow executions, against plain Prefect tasks in the same run.

Two workflows of no-op standalone jobs run through a real node, built in this process (``Node``
with its Prefect server and embedded PostgreSQL beside it, as ``remote-network start`` runs it),
started with the runner behind ``POST /api/workflows/{id}/execute``:

- chain: 20 ``/bin/cat`` jobs, STDOUT -> STDIN, the first fed from its ``stdin`` config, so a
  line of data moves through every job;
- fan-out: one source (``/bin/echo``) whose STDOUT feeds the STDIN of 32 ``/bin/cat`` branches
  (33 jobs, two levels).

The baseline is the same jobs as plain Prefect tasks calling ``subprocess.run`` (in a thread, so
the branches overlap) in one async flow, against the same Prefect API, in the same run.

A job's run time is the time around the thing that runs it: the node's executor call for ours,
``subprocess.run`` for the baseline. Per-job overhead = (total - sum of job run times) / jobs. In
the chain the jobs run one at a time and that sum is measured. In the fan-out the branches overlap,
so a branch's measured time includes waiting for the others (the loop, the CPUs); there each job is
counted at its own time, the median job time of the same side's chain, so the fan-out's per-job
overhead is its amortised cost per job, with what the overlap saves counted in.

Printed per shape: median total, job time, per-job overhead for both sides, and the ratio of the
totals (node / baseline). Goals: per-job overhead under 25 ms, ratio at most 1.3, and the fan-out
finishes in under 2 x its slowest job plus the orchestration overhead of its jobs (33 x the chain's
per-job overhead): run one after the other it would take 33 job times plus that overhead. A job's
time at its slowest is taken where jobs run alone, in the chain: the median over the rounds of
each round's slowest job.

After the rounds, a few more fan-outs are run to account for their CPU: the CPU time per job of
this process (the node, with the jobs' own processes), of the Prefect server and of PostgreSQL.
The fan-out cannot finish faster than their sum spread over the machine's cores, while the chain
waits mostly on the node's share; this shows what the fan-out bound asks of this machine.

    .venv/bin/python bench/workflow_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.in_process import JobClock, service, start_node, workflow  # noqa: E402
from orchestrator.node import Node  # noqa: E402

CHAIN = 20
WIDTH = 32
OVERHEAD_GOAL_MS = 25.0
RATIO_GOAL = 1.3


@dataclass
class Run:
    total: float
    jobs: list[float] = field(default_factory=list)
    job_time: float | None = None  # each job's own run time, when not the measured one

    @property
    def job_sum(self) -> float:
        return sum(self.jobs) if self.job_time is None else self.job_time * len(self.jobs)

    @property
    def overhead(self) -> float:
        return (self.total - self.job_sum) / len(self.jobs)


async def run_ours(node: Node, clock: JobClock, wf: int) -> Run:
    clock.times.clear()
    runner = node.executions
    t = time.perf_counter()
    execution = runner.execute(wf)
    await runner.wait(int(execution.id or 0))
    total = time.perf_counter() - t
    status = node.execution_store.execution(int(execution.id or 0)).status
    if status != "COMPLETED":
        raise SystemExit(f"execution {execution.id} ended {status}: "
                         f"{node.execution_store.execution(int(execution.id or 0)).error}")
    return Run(total, list(clock.times))


def baseline_flows() -> tuple[Any, Any, list[float]]:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    times: list[float] = []

    def run(argv: list[str], data: bytes | None) -> bytes:
        t = time.perf_counter()
        out = subprocess.run(argv, input=data, capture_output=True, check=True).stdout
        times.append(time.perf_counter() - t)
        return out

    @task(name="job", cache_policy=NO_CACHE, persist_result=False)
    async def job(argv: list[str], data: bytes | None) -> bytes:
        return await asyncio.to_thread(run, argv, data)

    @flow(name="baseline-chain", persist_result=False, validate_parameters=False)
    async def chain(n: int) -> bytes:
        data = b"hello, workflow\n"
        for _ in range(n):
            data = await job(["/bin/cat"], data)
        return data

    @flow(name="baseline-fan-out", persist_result=False, validate_parameters=False)
    async def fan_out(width: int) -> list[bytes]:
        src = await job(["/bin/echo", "hello, workflow"], None)
        return list(await asyncio.gather(*(job(["/bin/cat"], src) for _ in range(width))))

    return chain, fan_out, times


async def run_baseline(flow_fn: Any, arg: int, times: list[float]) -> Run:
    times.clear()
    t = time.perf_counter()
    await flow_fn(arg)
    return Run(time.perf_counter() - t, list(times))


def med(runs: list[Run], what: str) -> float:
    return statistics.median(getattr(r, what) for r in runs)


def cpu_seconds(process: psutil.Process, children: bool = False) -> float:
    try:
        t = process.cpu_times()
    except psutil.Error:
        return 0.0
    own = t.user + t.system
    return own + (t.children_user + t.children_system if children else 0.0)


def postgres_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if "postgres" in (p.info["name"] or "")]


async def fan_out_cpu(node: Node, clock: JobClock, wf: int, runs: int = 3) -> dict[str, float]:
    """CPU seconds per job of a fan-out: this process (and its jobs), the server, PostgreSQL."""
    me = psutil.Process()
    server = psutil.Process(node.prefect.server_pid) if node.prefect.server_pid else None
    pgs = postgres_processes()

    def sample() -> tuple[float, float, float]:
        return (cpu_seconds(me, children=True),
                cpu_seconds(server) if server is not None else 0.0,
                sum(cpu_seconds(p) for p in pgs))

    before = sample()
    for _ in range(runs):
        await run_ours(node, clock, wf)
    await asyncio.sleep(1.5)  # the server records task runs in batches, a second apart
    after = sample()
    jobs = runs * (WIDTH + 1)
    return {k: (b - a) / jobs for k, a, b in zip(("node", "server", "postgres"), before, after,
                                                   strict=True)}


def report(name: str, jobs: int, ours: list[Run], base: list[Run]) -> dict[str, float]:
    o_total, b_total = med(ours, "total"), med(base, "total")
    o_over, b_over = med(ours, "overhead"), med(base, "overhead")
    ratio = o_total / b_total
    spread = f"{min(r.total for r in ours) * 1000:.0f}..{max(r.total for r in ours) * 1000:.0f}"
    print(f"\n{name} ({jobs} jobs), median of {len(ours)} rounds")
    print(f"  node:     total {o_total * 1000:8.1f} ms (spread {spread} ms), "
          f"job time {med(ours, 'job_sum') * 1000:7.1f} ms, overhead {o_over * 1000:6.2f} ms/job")
    print(f"  baseline: total {b_total * 1000:8.1f} ms, "
          f"job time {med(base, 'job_sum') * 1000:7.1f} ms, overhead {b_over * 1000:6.2f} ms/job")
    ok = o_over * 1000 < OVERHEAD_GOAL_MS
    print(f"  per-job overhead {o_over * 1000:.2f} ms (goal < {OVERHEAD_GOAL_MS:g}): "
          f"{'met' if ok else 'MISSED'}")
    ok_ratio = ratio <= RATIO_GOAL
    print(f"  ratio node/baseline {ratio:.2f} (goal <= {RATIO_GOAL}): "
          f"{'met' if ok_ratio else 'MISSED'}")
    return {"total": o_total, "overhead": o_over}


async def main(rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="rn-bench-wf-") as tmp:
        node = await start_node(Path(tmp) / "node")
        try:
            clock = JobClock(node)
            cat, cat_if = service(node, "cat", "/bin/cat")
            echo, echo_if = service(node, "echo", "/bin/echo", "hello, workflow")
            chain_wf = workflow(
                node, "chain", [(cat, {"stdin": "hello, workflow\n"})] + [(cat, {})] * (CHAIN - 1),
                [(i, cat_if["STDOUT"], i + 1, cat_if["STDIN"]) for i in range(CHAIN - 1)])
            fan_wf = workflow(
                node, "fan-out", [(echo, {})] + [(cat, {})] * WIDTH,
                [(0, echo_if["STDOUT"], i + 1, cat_if["STDIN"]) for i in range(WIDTH)])
            b_chain, b_fan, b_times = baseline_flows()
            runs: dict[str, list[Run]] = {k: [] for k in ("chain", "b_chain", "fan", "b_fan")}
            for i in range(rounds + 1):  # round 0 warms up both
                got = {"chain": await run_ours(node, clock, chain_wf),
                       "b_chain": await run_baseline(b_chain, CHAIN, b_times),
                       "fan": await run_ours(node, clock, fan_wf),
                       "b_fan": await run_baseline(b_fan, WIDTH, b_times)}
                if i:
                    for k, r in got.items():
                        runs[k].append(r)
            chain = report("chain", CHAIN, runs["chain"], runs["b_chain"])
            for fan, side in (("fan", "chain"), ("b_fan", "b_chain")):
                alone = statistics.median(t for r in runs[side] for t in r.jobs)
                for r in runs[fan]:
                    r.job_time = alone
            report("fan-out", WIDTH + 1, runs["fan"], runs["b_fan"])
            # A job's own time at its slowest: each chain round's slowest job (run alone),
            # the median over the rounds, so one stray stall does not widen the bound.
            slowest = statistics.median(max(r.jobs) for r in runs["chain"])
            bound = 2 * slowest + (WIDTH + 1) * chain["overhead"]
            fan_total = med(runs["fan"], "total")
            print(f"\nfan-out total {fan_total * 1000:.1f} ms; 2 x slowest job "
                  f"({slowest * 1000:.1f} ms) + {WIDTH + 1} x {chain['overhead'] * 1000:.2f} ms "
                  f"overhead = {bound * 1000:.1f} ms: {'met' if fan_total < bound else 'MISSED'}")
            cpu = await fan_out_cpu(node, clock, fan_wf)
            cores = os.cpu_count() or 1
            floor = (WIDTH + 1) * sum(cpu.values()) / cores
            print(f"fan-out CPU per job: node and its job {cpu['node'] * 1000:.1f} ms, Prefect "
                  f"server {cpu['server'] * 1000:.1f} ms, PostgreSQL {cpu['postgres'] * 1000:.1f} "
                  f"ms; {WIDTH + 1} jobs on {cores} cores need at least {floor * 1000:.0f} ms")
        finally:
            await node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
