"""Time of a cache hit against the run it replaces, and the cost of checking its receipt.

A workflow of one standalone job with ``"cache": true`` in its node's config runs through a real
node built in this process (``Node`` with its Prefect server and embedded PostgreSQL beside it,
as ``remote-network start`` runs it, the same set-up as ``bench/workflow_overhead.py``). The job
has a real cost: ``/bin/sh -c 'sleep 0.5; tr a-z A-Z'`` over its ``stdin`` config, a text new
each round, so each round's first execution finds nothing (a miss: the job runs, its result is
recorded with its receipt) and its second finds that result by the job's key (a hit: nothing
runs, the job row names the receipt it took in ``cached_from``).

Printed:

- the median times of the two executions (each from ``execute`` until it has ended COMPLETED)
  and their ratio, hit / miss. Goal: at most 0.1;
- what checking a cached result's receipt costs per job: ``orchestrator.receipts.verify`` and
  ``check_claims`` (what ``flows.reuse`` does before it takes a result) over the real receipt of
  the job row, the mean over ``--iterations``, against the same count of plain Ed25519
  signature checks (``network.identity.verify``) of the receipt's signed message, and the ratio
  of the two (what parsing and checking the envelope adds to its one signature check).

    .venv/bin/python bench/cache_hit.py [--rounds 5] [--iterations 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.in_process import service, start_node, workflow  # noqa: E402
from flows.job_protocol.wire import refs_from_json  # noqa: E402
from network.identity import verify as verify_signature  # noqa: E402
from orchestrator.node import Node  # noqa: E402
from orchestrator.receipts import PAYLOAD_TYPE, check_claims, pae, verify  # noqa: E402

SCRIPT = "sleep 0.5; tr a-z A-Z"
RATIO_GOAL = 0.1


def cached_workflow(node: Node, service_id: int, text: str) -> int:
    return workflow(node, f"cache {text.strip()}",
                    [(service_id, {"stdin": text, "cache": True})], [])


async def run(node: Node, wf: int) -> tuple[float, Any]:
    """The execution's time, and its one job row."""
    t = time.perf_counter()
    execution = node.executions.execute(wf)
    execution_id = int(execution.id or 0)
    await node.executions.wait(execution_id)
    took = time.perf_counter() - t
    row = node.execution_store.execution(execution_id)
    if row.status != "COMPLETED":
        raise SystemExit(f"execution {execution_id} ended {row.status}: {row.error}")
    (job,) = node.execution_store.jobs(execution_id).values()
    return took, job


def receipt_cost(job: Any, iterations: int) -> tuple[float, float]:
    """Seconds per check: verify + check_claims of the job's receipt; one Ed25519 check."""
    receipt, job_key = job.receipt, job.job_key
    outputs = {k: r.sha256 for k, r in refs_from_json(job.output_refs).items()
               if not k.startswith("#")}
    check_claims(verify(receipt), outputs=outputs, job_key=job_key)  # it does check
    t = time.perf_counter()
    for _ in range(iterations):
        check_claims(verify(receipt), outputs=outputs, job_key=job_key)
    full = (time.perf_counter() - t) / iterations
    entry = receipt["signatures"][0]
    key, sig = bytes.fromhex(entry["keyid"]), base64.b64decode(entry["sig"])
    message = pae(PAYLOAD_TYPE, base64.b64decode(receipt["payload"]))
    if not verify_signature(key, message, sig):
        raise SystemExit("the receipt's signature does not check")
    t = time.perf_counter()
    for _ in range(iterations):
        verify_signature(key, message, sig)
    plain = (time.perf_counter() - t) / iterations
    return full, plain


async def main(rounds: int, iterations: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="rn-bench-cache-") as tmp:
        node = await start_node(Path(tmp) / "node")
        try:
            sid, _ = service(node, "upper", "/bin/sh", "-c", SCRIPT)
            misses: list[float] = []
            hits: list[float] = []
            job = None
            for i in range(rounds + 1):  # round 0 warms up both
                wf = cached_workflow(node, sid, f"hello, cache round {i}\n")
                miss, job = await run(node, wf)
                hit, again = await run(node, wf)
                if job.cached_from:
                    raise SystemExit(f"round {i}: the first execution took a cached result "
                                     f"({job.cached_from}) instead of running")
                if not again.cached_from:
                    raise SystemExit(f"round {i}: the second execution ran the job again "
                                     f"(job {again.id}: status {again.status}, job_key "
                                     f"{again.job_key[:19]}, first job's key "
                                     f"{job.job_key[:19]})")
                if again.cached_from != job.receipt_digest:
                    raise SystemExit(f"round {i}: the hit took receipt {again.cached_from}, "
                                     f"not the first execution's {job.receipt_digest}")
                if i:
                    misses.append(miss)
                    hits.append(hit)
            miss, hit = statistics.median(misses), statistics.median(hits)
            ratio = hit / miss
            print(f"\none '{SCRIPT}' job with cache: true, median of {rounds} rounds")
            print(f"  first execution (miss, runs): {miss * 1000:8.1f} ms "
                  f"(spread {min(misses) * 1000:.0f}..{max(misses) * 1000:.0f} ms)")
            print(f"  second execution (hit):       {hit * 1000:8.1f} ms "
                  f"(spread {min(hits) * 1000:.0f}..{max(hits) * 1000:.0f} ms)")
            print(f"  ratio hit/miss {ratio:.3f} (goal <= {RATIO_GOAL}): "
                  f"{'met' if ratio <= RATIO_GOAL else 'MISSED'}")
            assert job is not None
            full, plain = receipt_cost(job, iterations)
            print(f"\nreceipt check, mean of {iterations} (receipt of "
                  f"{len(job.receipt['payload'])} base64 chars)")
            print(f"  verify + check_claims:   {full * 1000:.3f} ms/job")
            print(f"  plain Ed25519 verify:    {plain * 1000:.3f} ms (baseline)")
            print(f"  ratio {full / plain:.2f}")
        finally:
            await node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.iterations))
