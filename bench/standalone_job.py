"""A no-op standalone job through the standalone executor, against a bare subprocess.run of
the same executable, measured in the same run: the executor's overhead in ms and the ratio.
Twice: ``/bin/true`` (no output), and ``/bin/cat`` fed a line on stdin (a line of output, stored
as the job's STDOUT and LOGS artifacts; the baseline captures it too).

Usage: .venv/bin/python bench/standalone_job.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executors.artifacts import ArtifactStore
from executors.base import JobOutcome, JobSpec, StandaloneTarget
from executors.standalone import StandaloneExecutor

CASES = (("/bin/true", None), ("/bin/cat", b"hello, workflow\n"))


async def main(runs: int) -> None:
    print(f"runs: {runs}")
    with tempfile.TemporaryDirectory(prefix="rn-bench-") as tmp:
        store = ArtifactStore(Path(tmp) / "artifacts")
        ex = StandaloneExecutor(store, Path(tmp) / "jobs")
        await ex.start()
        for executable, stdin in CASES:
            ours: list[float] = []
            bare: list[float] = []
            for i in range(runs + 1):
                # Each round's line differs, so each output is a new artifact to store.
                data = stdin + str(i).encode() if stdin is not None else None
                t = time.perf_counter()
                result = await ex.run(JobSpec(f"bench-{executable[5:]}-{i}",
                                              StandaloneTarget(executable), stdin=data))
                elapsed = time.perf_counter() - t
                assert result.outcome == JobOutcome.COMPLETED, result.error
                t = time.perf_counter()
                subprocess.run([executable], input=data, check=True, capture_output=True)
                bare_elapsed = time.perf_counter() - t
                if i:  # the first round warms up both
                    ours.append(elapsed)
                    bare.append(bare_elapsed)
            m_ours, m_bare = statistics.median(ours), statistics.median(bare)
            what = "no output" if stdin is None else "a line of output"
            print(f"{executable} ({what}): executor job median {m_ours * 1000:.2f} ms, "
                  f"subprocess.run median {m_bare * 1000:.2f} ms; overhead "
                  f"{(m_ours - m_bare) * 1000:.2f} ms, ratio {m_ours / m_bare:.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
