"""Time to resume a failed execution, against a full run of the same workflow in the same run.

A chain of 10 standalone jobs, STDOUT -> STDIN, runs through a real node built in this process
(``Node`` with its Prefect server and embedded PostgreSQL beside it, as ``remote-network start``
runs it, the same set-up as ``bench/workflow_overhead.py``). Every job has real work
(``/bin/sh -c 'sleep 0.2; cat'``); the first is fed from its ``stdin`` config. Job 9's service
runs the same, but first checks for a flag file in its working directory (a directory of this
run, outside the node's data dir, which the sandbox binds back read-only): without it, it fails.

Each round:

- the flag is removed and the chain executed: jobs 1-8 complete, job 9 fails, job 10 is not
  started, the execution ends FAILED;
- the flag is created and the failed execution resumed (``Executions.resume``, what
  ``POST /api/workflow-executions/{id}/resume`` calls): timed from the call until the new
  execution has ended COMPLETED. Jobs 1-8 are taken from the failed execution (their rows name
  the receipt in ``cached_from``), jobs 9 and 10 run;
- the baseline: a fresh execution of the same workflow, the flag present, all 10 jobs run.

Printed: median resume time, median full run time, and their ratio (resume / full run). Goal: at
most 0.25 (2 of 10 jobs run again; the 8 taken must cost little next to a job's 0.2 s).

    .venv/bin/python bench/resume.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.in_process import JobClock, service, start_node, workflow  # noqa: E402
from orchestrator.node import Node  # noqa: E402

CHAIN = 10
GATED = 8  # index of the job that fails without the flag (job 9)
WORK = "sleep 0.2; cat"
GATE = "[ -f flag ] || { echo 'no flag in' \"$PWD\" >&2; exit 3; }; " + WORK
RATIO_GOAL = 0.25


def jobs_in_order(node: Node, execution_id: int) -> list[Any]:
    jobs = node.execution_store.jobs(execution_id)
    return [jobs[k] for k in sorted(jobs)]


def describe(node: Node, execution_id: int) -> str:
    return "\n".join(f"    node {j.node_id}: {j.status} "
                     f"cached_from={(j.cached_from or '')[:19]} error={j.error}"
                     for j in jobs_in_order(node, execution_id))


async def ended(node: Node, execution_id: int, want: str) -> None:
    await node.executions.wait(execution_id)
    row = node.execution_store.execution(execution_id)
    if row.status != want:
        raise SystemExit(f"execution {execution_id} ended {row.status}, not {want}: {row.error}"
                         f"\n{describe(node, execution_id)}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No log lines for the failure this bench causes on purpose (its rows are checked)."""
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs",
                                             "remote_network.flows")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


async def full_run(node: Node, wf: int) -> float:
    t = time.perf_counter()
    execution = node.executions.execute(wf)
    await ended(node, int(execution.id or 0), "COMPLETED")
    return time.perf_counter() - t


async def failed_run(node: Node, wf: int, flag: Path) -> int:
    flag.unlink(missing_ok=True)
    with quiet():
        execution = node.executions.execute(wf)
        execution_id = int(execution.id or 0)
        await ended(node, execution_id, "FAILED")
    done = [j.status for j in jobs_in_order(node, execution_id)]
    if done[:GATED] != ["COMPLETED"] * GATED or done[GATED] != "FAILED":
        raise SystemExit(f"execution {execution_id} did not fail at job {GATED + 1}:\n"
                         f"{describe(node, execution_id)}")
    return execution_id


async def resume(node: Node, failed: int, flag: Path) -> float:
    flag.write_text("go\n")
    t = time.perf_counter()
    execution = node.executions.resume(failed)
    execution_id = int(execution.id or 0)
    await ended(node, execution_id, "COMPLETED")
    took = time.perf_counter() - t
    taken = [bool(j.cached_from) for j in jobs_in_order(node, execution_id)]
    if taken != [True] * GATED + [False] * (CHAIN - GATED):
        raise SystemExit(f"resumed execution {execution_id} did not take jobs 1-{GATED} and "
                         f"run the rest:\n{describe(node, execution_id)}")
    return took


async def main(rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="rn-bench-resume-") as tmp:
        work = Path(tmp) / "work"  # beside the node's data dir, not in it
        work.mkdir()
        flag = work / "flag"
        node = await start_node(Path(tmp) / "node")
        try:
            clock = JobClock(node)
            job, job_if = service(node, "work", "/bin/sh", "-c", WORK)
            gate, gate_if = service(node, "gated", "/bin/sh", "-c", GATE, workdir=str(work))
            nodes = [(gate if i == GATED else job, {"stdin": "hello, resume\n"} if i == 0 else {})
                     for i in range(CHAIN)]
            wf = workflow(node, "chain", nodes,
                          [(i, job_if["STDOUT"] if i != GATED else gate_if["STDOUT"], i + 1,
                            job_if["STDIN"] if i + 1 != GATED else gate_if["STDIN"])
                           for i in range(CHAIN - 1)])
            fulls: list[float] = []
            resumes: list[float] = []
            f_jobs: list[float] = []
            r_jobs: list[float] = []
            for i in range(rounds + 1):  # round 0 warms up both
                failed = await failed_run(node, wf, flag)
                clock.take()
                r = await resume(node, failed, flag)
                r_job = clock.take()
                f = await full_run(node, wf)
                f_job = clock.take()
                if i:
                    resumes.append(r)
                    fulls.append(f)
                    r_jobs.append(r_job)
                    f_jobs.append(f_job)
            full, res = statistics.median(fulls), statistics.median(resumes)
            ratio = res / full
            print(f"\nchain of {CHAIN} jobs ('{WORK}'), job {GATED + 1} failed the first time; "
                  f"median of {rounds} rounds")
            f_job, r_job = statistics.median(f_jobs), statistics.median(r_jobs)
            print(f"  full run (baseline): {full * 1000:8.1f} ms "
                  f"(spread {min(fulls) * 1000:.0f}..{max(fulls) * 1000:.0f} ms); "
                  f"{CHAIN} jobs ran {f_job * 1000:.1f} ms, "
                  f"the rest {(full - f_job) * 1000:.1f} ms")
            print(f"  resume ({GATED} jobs taken, {CHAIN - GATED} run): {res * 1000:8.1f} ms "
                  f"(spread {min(resumes) * 1000:.0f}..{max(resumes) * 1000:.0f} ms); "
                  f"{CHAIN - GATED} jobs ran {r_job * 1000:.1f} ms, the rest "
                  f"(flow, {GATED} taken) {(res - r_job) * 1000:.1f} ms")
            print(f"  ratio resume/full run {ratio:.3f} (goal <= {RATIO_GOAL}): "
                  f"{'met' if ratio <= RATIO_GOAL else 'MISSED'}")
        finally:
            await node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
