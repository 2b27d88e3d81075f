"""The Docker executor against the real engine and the FROM-scratch busybox image."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tarfile
from pathlib import Path

import docker
import docker.errors
import pytest

from executors.artifacts import ArtifactStore
from executors.base import DockerTarget, JobOutcome, JobSpec, MountInput
from executors.docker_engine import FrameDecoder
from executors.docker_executor import LABEL_JOB, LABEL_OWNER, DockerExecutor
from tests.executors.conftest import containers_of
from tests.support.docker_infra import TEST_LABEL, LocalRegistry


def sh(image: str, script: str) -> DockerTarget:
    return DockerTarget(image, cmd=["sh", "-c", script])


def tar_members(store: ArtifactStore, ref) -> dict[str, bytes | None]:
    with store.open(ref) as f, tarfile.open(fileobj=f) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                for m in tar.getmembers()}


def test_frame_decoder_splits_partial_frames() -> None:
    frames = b"\x01\x00\x00\x00\x00\x00\x00\x03abc" + b"\x02\x00\x00\x00\x00\x00\x00\x02xy"
    dec = FrameDecoder()
    out = []
    for i in range(len(frames)):
        out += dec.feed(frames[i:i + 1])
    assert out == [("stdout", b"abc"), ("stderr", b"xy")]
    assert dec.pending == 0


async def test_stdin_bytes_piped_through_wc(docker_exec: DockerExecutor, busybox_image: str,
                                            store: ArtifactStore) -> None:
    spec = JobSpec("wc-bytes", DockerTarget(busybox_image, cmd=["wc", "-l"]),
                   stdin=b"one\ntwo\nthree\n")
    result = await docker_exec.run(spec)
    assert result.outcome == JobOutcome.COMPLETED, result.error
    assert result.exit_code == 0 and result.error is None
    assert store.read_bytes(result.outputs["STDOUT"]).strip() == b"3"


async def test_stdin_artifact_streamed(docker_exec: DockerExecutor, busybox_image: str,
                                       store: ArtifactStore) -> None:
    data = os.urandom(2 * (1 << 20) + 5)
    ref = store.put_bytes(data)
    result = await docker_exec.run(JobSpec("sha", sh(busybox_image, "sha256sum; echo"),
                                           stdin=ref))
    assert result.outcome == JobOutcome.COMPLETED, result.error
    out = store.read_bytes(result.outputs["STDOUT"]).split()[0].decode()
    assert out == hashlib.sha256(data).hexdigest()


async def test_outputs_exact_and_log_lines(docker_exec: DockerExecutor, busybox_image: str,
                                           store: ArtifactStore) -> None:
    lines: list[tuple[str, str, str]] = []
    script = "echo out1; echo err1 >&2; printf 'out2\\nno-newline'"
    result = await docker_exec.run(JobSpec("streams", sh(busybox_image, script)),
                                   on_log=lambda *a: lines.append(a))
    assert result.outcome == JobOutcome.COMPLETED
    assert store.read_bytes(result.outputs["STDOUT"]) == b"out1\nout2\nno-newline"
    assert store.read_bytes(result.outputs["STDERR"]) == b"err1\n"
    logs = store.read_bytes(result.outputs["LOGS"])
    assert sorted(logs.splitlines()) == [b"err1", b"no-newline", b"out1", b"out2"]
    # Each stream keeps its own order inside the interleaved log.
    assert logs.index(b"out1") < logs.index(b"out2") < logs.index(b"no-newline")
    assert sorted(lines) == sorted([("streams", "stdout", "out1"), ("streams", "stderr", "err1"),
                                    ("streams", "stdout", "out2"),
                                    ("streams", "stdout", "no-newline")])
    assert {k for k in result.outputs} == {"STDOUT", "STDERR", "LOGS"}


async def test_exit_code_three_reported(docker_exec: DockerExecutor, busybox_image: str) -> None:
    result = await docker_exec.run(JobSpec("exit3", sh(busybox_image, "exit 3")))
    assert result.outcome == JobOutcome.FAILED
    assert result.exit_code == 3
    assert result.error == "exit code 3"
    assert result.ended_at >= result.started_at
    quoted = await docker_exec.run(JobSpec("exit4", sh(busybox_image,
                                                       "echo why >&2; echo out; exit 4")))
    assert (quoted.exit_code, quoted.error) == (4, "exit code 4: why")


async def test_mounts_read_and_written(docker_exec: DockerExecutor, busybox_image: str,
                                       store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "nested" / "b.txt").write_text("beta\n")
    tree = store.put_dir(src)
    single = store.put_bytes(b"config=1\n")
    script = ("cat /data/a.txt /data/nested/b.txt /etc/app.conf > /out/joined.txt;"
              " mkdir /out/sub && echo z > /out/sub/z.txt;"
              " touch /data/forbidden 2>/dev/null && echo writable || echo read-only")
    result = await docker_exec.run(JobSpec(
        "mounts", sh(busybox_image, script),
        input_mounts=[MountInput("/data", tree), MountInput("/etc/app.conf", single)],
        output_mounts=["/out"]))
    assert result.outcome == JobOutcome.COMPLETED, result.error
    assert store.read_bytes(result.outputs["STDOUT"]) == b"read-only\n"
    members = tar_members(store, result.outputs["MOUNT:/out"])
    assert members["joined.txt"] == b"alpha\nbeta\nconfig=1\n"
    assert members["sub/z.txt"] == b"z\n"
    assert "sub" in members


async def test_entrypoint_env_and_args(docker_exec: DockerExecutor, busybox_image: str,
                                       store: ArtifactStore) -> None:
    target = DockerTarget(busybox_image, entrypoint=["sh", "-c"],
                          cmd=['echo "$GREETING" "$0" "$1"'])
    result = await docker_exec.run(JobSpec("env-args", target, env={"GREETING": "hello world"},
                                           args=["first", "second arg"]))
    assert store.read_bytes(result.outputs["STDOUT"]) == b"hello world first second arg\n"
    # With no cmd override, args follow the image's own Cmd (["/bin/sh"]).
    plain = await docker_exec.run(JobSpec("image-cmd", DockerTarget(busybox_image),
                                          args=["-c", "echo from-args"]))
    assert store.read_bytes(plain.outputs["STDOUT"]) == b"from-args\n"


async def test_timeout_kills_sleep(docker_exec: DockerExecutor, busybox_image: str,
                                   store: ArtifactStore) -> None:
    result = await docker_exec.run(JobSpec("slow", sh(busybox_image, "echo begun; sleep 60"),
                                           timeout=1))
    assert result.outcome == JobOutcome.TIMED_OUT
    assert result.error == "timed out after 1s"
    assert result.exit_code == 137
    assert store.read_bytes(result.outputs["STDOUT"]) == b"begun\n"


async def test_cancel_mid_run(docker_exec: DockerExecutor, busybox_image: str,
                              docker_client: docker.DockerClient, owner: str) -> None:
    started = asyncio.Event()
    task = asyncio.ensure_future(docker_exec.run(
        JobSpec("to-cancel", sh(busybox_image, "echo ready; sleep 60")),
        on_log=lambda *_: started.set()))
    await asyncio.wait_for(started.wait(), 60)
    running = containers_of(docker_client, owner)
    assert len(running) == 1 and running[0].labels[LABEL_JOB] == "to-cancel"
    assert docker_exec.running == ["to-cancel"]
    assert await docker_exec.cancel("to-cancel") is True
    result = await asyncio.wait_for(task, 60)
    assert result.outcome == JobOutcome.CANCELLED and result.error == "cancelled"
    assert await docker_exec.cancel("to-cancel") is False
    assert docker_exec.running == []


async def test_missing_image_says_so(docker_exec: DockerExecutor,
                                     registry: LocalRegistry) -> None:
    image = f"{registry.address}/rn-test/does-not-exist:latest"
    result = await docker_exec.run(JobSpec("noimage", DockerTarget(image, cmd=["true"])))
    assert result.outcome == JobOutcome.FAILED
    assert result.exit_code is None
    assert result.error == f"image not found: {image}"


async def test_image_pulled_when_missing(docker_exec: DockerExecutor, registry: LocalRegistry,
                                         docker_client: docker.DockerClient,
                                         store: ArtifactStore) -> None:
    # Another test may have pulled it: this one starts without it.
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(registry.image, noprune=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(registry.image)
    try:
        result = await docker_exec.run(JobSpec("pull", sh(registry.image, "echo pulled")))
        assert result.outcome == JobOutcome.COMPLETED, result.error
        assert store.read_bytes(result.outputs["STDOUT"]) == b"pulled\n"
        assert registry.image in docker_client.images.get(registry.image).tags
    finally:
        docker_client.images.remove(registry.image, noprune=True)


async def test_bad_command_fails_with_reason(docker_exec: DockerExecutor,
                                             busybox_image: str) -> None:
    result = await docker_exec.run(JobSpec("badcmd", DockerTarget(busybox_image,
                                                                  cmd=["/no/such/binary"])))
    assert result.outcome == JobOutcome.FAILED
    assert result.error is not None and "\n" not in result.error
    assert "/no/such/binary" in result.error


async def test_engine_unavailable(store: ArtifactStore, tmp_path: Path) -> None:
    ex = DockerExecutor(store, tmp_path / "jobs", owner="nobody-home",
                        docker_host=f"unix://{tmp_path}/no-engine.sock")
    try:
        result = await ex.run(JobSpec("noengine", DockerTarget("rn-test/busybox:latest")))
    finally:
        ex.close()
    assert result.outcome == JobOutcome.FAILED
    assert result.error == "Docker engine unavailable"
    assert list((tmp_path / "jobs").iterdir()) == []


async def test_orphans_removed_at_start(store: ArtifactStore, tmp_path: Path, owner: str,
                                        busybox_image: str,
                                        docker_client: docker.DockerClient) -> None:
    mine = docker_client.containers.create(busybox_image, ["sleep", "60"],
                                           labels={LABEL_OWNER: owner, LABEL_JOB: "old",
                                                   TEST_LABEL: "1"})
    other = docker_client.containers.create(busybox_image, ["sleep", "60"],
                                            labels={LABEL_OWNER: owner + "-other",
                                                    TEST_LABEL: "1"})
    try:
        mine.start()
        (tmp_path / "jobs" / "stale-dir").mkdir(parents=True)
        ex = DockerExecutor(store, tmp_path / "jobs", owner=owner)
        try:
            assert await ex.start() == 1
        finally:
            ex.close()
        assert containers_of(docker_client, owner) == []
        other.reload()  # another node's container is left alone
        assert list((tmp_path / "jobs").iterdir()) == []
    finally:
        for c in (mine, other):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)

