"""Limits and isolation of Docker jobs: observed from inside real containers."""

from __future__ import annotations

import pytest

from executors.artifacts import ArtifactStore
from executors.base import DockerTarget, Isolation, JobLimits, JobOutcome, JobSpec
from executors.docker_executor import DockerExecutor

pytestmark = pytest.mark.docker

CGROUP_LIMITS = ("cat /sys/fs/cgroup/memory.max 2>/dev/null"
                 " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
                 " cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max")


def sh(image: str, script: str) -> DockerTarget:
    return DockerTarget(image, entrypoint=["/bin/sh", "-c"], cmd=[script])


async def test_memory_and_pids_limits_applied(docker_exec: DockerExecutor, store: ArtifactStore,
                                              busybox_image: str) -> None:
    result = await docker_exec.run(JobSpec("limits", sh(busybox_image, CGROUP_LIMITS),
                                           limits=JobLimits(memory_bytes=64 << 20, pids=32,
                                                            cpus=0.5)))
    assert result.outcome == JobOutcome.COMPLETED, store.read_bytes(result.outputs["STDERR"])
    assert store.read_bytes(result.outputs["STDOUT"]).split() == [str(64 << 20).encode(), b"32"]


async def test_memory_hog_fails_naming_the_limit(docker_exec: DockerExecutor,
                                                 busybox_image: str) -> None:
    # A shell variable grown past the limit: the kernel kills the container.
    hog = "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"
    result = await docker_exec.run(JobSpec("hog", sh(busybox_image, hog), timeout=120,
                                           limits=JobLimits(memory_bytes=32 << 20)))
    assert result.outcome == JobOutcome.FAILED
    assert result.error == f"killed for using more than its memory limit of {32 << 20} bytes"


async def test_no_network_when_isolated(docker_exec: DockerExecutor, store: ArtifactStore,
                                        busybox_image: str) -> None:
    script = "ls /sys/class/net"
    closed = await docker_exec.run(JobSpec("no-net", sh(busybox_image, script),
                                           isolation=Isolation(network=False)))
    open_ = await docker_exec.run(JobSpec("net", sh(busybox_image, script)))
    assert store.read_bytes(closed.outputs["STDOUT"]).split() == [b"lo"]
    assert len(store.read_bytes(open_.outputs["STDOUT"]).split()) > 1


async def test_output_flood_capped(docker_exec: DockerExecutor, busybox_image: str) -> None:
    limit = 50_000
    result = await docker_exec.run(JobSpec("flood", sh(busybox_image, "yes flood"), timeout=60,
                                           limits=JobLimits(output_bytes=limit)))
    assert result.outcome == JobOutcome.FAILED
    assert result.error == f"output limit of {limit} bytes exceeded on stdout"
    assert result.outputs["STDOUT"].size <= limit
