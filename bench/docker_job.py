"""Median run time of a no-op container job through the Docker executor, against
`docker run --rm` of the same image, measured in the same run (goal: ratio <= 1.0).

Usage: .venv/bin/python bench/docker_job.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executors.artifacts import ArtifactStore
from executors.base import DockerTarget, JobOutcome, JobSpec
from executors.docker_executor import DockerExecutor
from tests.support.docker_infra import build_busybox_image


async def main(runs: int) -> None:
    client = docker.from_env()
    image = build_busybox_image(client)
    with tempfile.TemporaryDirectory(prefix="rn-bench-") as tmp:
        store = ArtifactStore(Path(tmp) / "artifacts")
        ex = DockerExecutor(store, Path(tmp) / "jobs", owner="bench-docker-job")
        await ex.start()
        ours: list[float] = []
        cli: list[float] = []
        try:
            # One warm-up of each, then alternate so that both see the same machine load.
            for i in range(runs + 1):
                t = time.perf_counter()
                result = await ex.run(JobSpec(f"bench-{i}", DockerTarget(image, cmd=["true"])))
                elapsed = time.perf_counter() - t
                assert result.outcome == JobOutcome.COMPLETED, result.error
                t = time.perf_counter()
                subprocess.run(["docker", "run", "--rm", image, "true"], check=True)
                cli_elapsed = time.perf_counter() - t
                if i:
                    ours.append(elapsed)
                    cli.append(cli_elapsed)
        finally:
            ex.close()
            client.close()
    m_ours, m_cli = statistics.median(ours), statistics.median(cli)
    print(f"runs: {runs}")
    print(f"executor job median:    {m_ours * 1000:.1f} ms")
    print(f"docker run --rm median: {m_cli * 1000:.1f} ms")
    print(f"ratio (executor / docker run --rm): {m_ours / m_cli:.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 15))
