"""LocalExecutor: one entry point for both kinds of job, cancel by id, cancel all on shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker

from executors.artifacts import ArtifactStore
from executors.base import DockerTarget, JobOutcome, JobSpec, StandaloneTarget
from executors.local import LocalExecutor
from tests.executors.conftest import containers_of
from tests.support.docker_infra import TEST_LABEL


async def test_picks_executor_by_target(local_exec: LocalExecutor, busybox_image: str,
                                        store: ArtifactStore) -> None:
    in_docker, here = await asyncio.gather(
        local_exec.run(JobSpec("d", DockerTarget(busybox_image, cmd=["sh", "-c",
                                                                     "echo $RN_JOB_DIR-x"]))),
        local_exec.run(JobSpec("s", StandaloneTarget("/bin/sh", ["-c", "echo $RN_JOB_DIR"]))))
    assert in_docker.outcome == JobOutcome.COMPLETED, in_docker.error
    assert here.outcome == JobOutcome.COMPLETED, (here.error, here.exit_code)
    # Only the standalone job gets a job root on this machine.
    assert store.read_bytes(in_docker.outputs["STDOUT"]) == b"-x\n"
    assert b"/jobs/standalone/rn-job-s-" in store.read_bytes(here.outputs["STDOUT"])
    assert local_exec.running == []


async def test_cancel_by_id_for_both_kinds(local_exec: LocalExecutor, busybox_image: str) -> None:
    ready: dict[str, asyncio.Event] = {"d": asyncio.Event(), "s": asyncio.Event()}

    def on_log(job_id: str, _stream: str, _line: str) -> None:
        ready[job_id].set()

    tasks = [
        asyncio.ensure_future(local_exec.run(
            JobSpec("d", DockerTarget(busybox_image, cmd=["sh", "-c", "echo go; sleep 60"])),
            on_log=on_log)),
        asyncio.ensure_future(local_exec.run(
            JobSpec("s", StandaloneTarget("/bin/sh", ["-c", "echo go; sleep 60"])),
            on_log=on_log)),
    ]
    await asyncio.wait_for(asyncio.gather(ready["d"].wait(), ready["s"].wait()), 60)
    ended = [(t.result().job_id, t.result().outcome, t.result().exit_code, t.result().error)
             for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
    assert sorted(local_exec.running) == ["d", "s"], ended
    # The same job id cannot run twice at once.
    dup = await local_exec.run(JobSpec("s", StandaloneTarget("/bin/true")))
    assert dup.outcome == JobOutcome.FAILED and dup.error == "job s is already running"
    assert await local_exec.cancel("d") is True
    assert await local_exec.cancel("s") is True
    assert await local_exec.cancel("unknown") is False
    results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert [r.outcome for r in results] == [JobOutcome.CANCELLED, JobOutcome.CANCELLED]


async def test_shutdown_cancels_everything(store: ArtifactStore, tmp_path: Path, owner: str,
                                           busybox_image: str,
                                           docker_client: docker.DockerClient) -> None:
    ex = LocalExecutor(store, tmp_path / "jobs", owner=owner, kill_grace=1.0,
                       labels={TEST_LABEL: "1"})
    await ex.start()
    started = asyncio.Event()
    tasks = [asyncio.ensure_future(ex.run(
                 JobSpec("d", DockerTarget(busybox_image, cmd=["sh", "-c", "echo go; sleep 60"])),
                 on_log=lambda *_: started.set())),
             asyncio.ensure_future(ex.run(
                 JobSpec("s", StandaloneTarget("/bin/sh", ["-c", "sleep 60"]))))]
    await asyncio.wait_for(started.wait(), 60)
    await ex.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert {r.outcome for r in results} == {JobOutcome.CANCELLED}
    assert ex.running == []
    assert containers_of(docker_client, owner) == []


async def test_caller_cancellation_stops_the_job(local_exec: LocalExecutor,
                                                 busybox_image: str,
                                                 docker_client: docker.DockerClient,
                                                 owner: str) -> None:
    started = asyncio.Event()
    task = asyncio.ensure_future(local_exec.run(
        JobSpec("c", DockerTarget(busybox_image, cmd=["sh", "-c", "echo go; sleep 60"])),
        on_log=lambda *_: started.set()))
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=60)
    assert task in done and task.cancelled()
    assert local_exec.running == []
    assert containers_of(docker_client, owner) == []
