"""A job cannot reach the node: real sandboxed processes attack the node's files, its Docker
socket, its process table and its memory, and each attack is shown to do no harm."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import sys
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from executors.artifacts import ArtifactStore
from executors.base import (
    ArtifactKind,
    Isolation,
    JobLimits,
    JobOutcome,
    JobSpec,
    MountInput,
    StandaloneTarget,
)
from executors.standalone import SANDBOX_UNAVAILABLE, StandaloneExecutor
from tests.support.processes import sleeper, sleeping

SECRET = b"node-secret-" + os.urandom(8).hex().encode()
PY = sys.executable


def sh(script: str, **kwargs) -> StandaloneTarget:
    return StandaloneTarget("/bin/sh", ["-c", script], **kwargs)


@dataclass
class Node:
    data_dir: Path
    store: ArtifactStore
    executor: StandaloneExecutor
    service_dir: Path

    def out(self, result, name: str = "STDOUT") -> bytes:
        return self.store.read_bytes(result.outputs[name])


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    for name in ("identity.key", "jwt.secret", "node.db"):
        (data / name).write_bytes(SECRET)
    service = data / "services" / "svc"
    service.mkdir(parents=True)
    (service / "run.sh").write_text("#!/bin/sh\necho service-ran; cat \"$(dirname $0)/conf\"\n")
    (service / "run.sh").chmod(0o755)
    (service / "conf").write_text("conf-ok\n")
    store = ArtifactStore(data / "artifacts")
    ex = StandaloneExecutor(store, data / "jobs" / "standalone", kill_grace=1.0, data_dir=data)
    await ex.start()
    yield Node(data, store, ex, service)
    assert ex.running == []
    assert list((data / "jobs" / "standalone").iterdir()) == []


async def test_job_reads_nothing_of_the_data_dir(node: Node) -> None:
    key = node.data_dir / "identity.key"
    script = (f"cat {key} {node.data_dir}/jwt.secret {node.data_dir}/node.db; "
              f"ls -a {node.data_dir}; ls -R {node.data_dir}/jobs; "
              f"cat {node.store.root}/*/* ; echo done")
    result = await node.executor.run(JobSpec("peek", sh(script)))
    seen = node.out(result) + node.out(result, "STDERR")
    assert b"done" in seen
    assert SECRET not in seen
    assert b"identity.key" not in node.out(result)


async def test_service_dir_readable_but_not_the_rest(node: Node) -> None:
    result = await node.executor.run(JobSpec(
        "svc", StandaloneTarget(str(node.service_dir / "run.sh")),
        readable_paths=(str(node.service_dir),)))
    assert result.outcome == JobOutcome.COMPLETED, node.out(result, "STDERR")
    assert node.out(result) == b"service-ran\nconf-ok\n"
    # The executable of a service inside the data dir, without its dir readable: the file only.
    alone = await node.executor.run(JobSpec(
        "alone", StandaloneTarget(str(node.service_dir / "run.sh"))))
    assert node.out(alone).startswith(b"service-ran\n")
    assert b"conf-ok" not in node.out(alone)
    # Asking to read the data dir itself (or a parent of it) is refused.
    refused = await node.executor.run(JobSpec("wide", sh("true"),
                                              readable_paths=(str(node.data_dir.parent),)))
    assert refused.outcome == JobOutcome.FAILED
    assert "would expose the node's data dir" in (refused.error or "")


async def test_job_writes_nothing_outside_its_dir(node: Node, tmp_path: Path) -> None:
    outside = tmp_path / "outside-marker"
    in_data = node.data_dir / "marker"
    script = (f"touch {outside} {in_data} /marker-{outside.name} /var/tmp/{outside.name}; "
              f"echo x >> {node.data_dir}/node.db; rm -f {node.data_dir}/identity.key; "
              f"touch $RN_JOB_DIR/mine && echo wrote-own")
    result = await node.executor.run(JobSpec("write", sh(script)))
    assert b"wrote-own" in node.out(result)
    assert not outside.exists() and not in_data.exists()
    assert not Path(f"/marker-{outside.name}").exists()
    assert not Path(f"/var/tmp/{outside.name}").exists()
    assert (node.data_dir / "node.db").read_bytes() == SECRET
    assert (node.data_dir / "identity.key").read_bytes() == SECRET


async def test_docker_socket_unreachable(node: Node) -> None:
    code = ("import socket\n"
            "for p in ('/var/run/docker.sock', '/run/docker.sock'):\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n"
            "        s.connect(p); print('CONNECTED', p)\n"
            "    except OSError as e:\n"
            "        print('refused', p, e.errno)\n")
    result = await node.executor.run(JobSpec("sock", StandaloneTarget(PY, ["-c", code])))
    assert result.outcome == JobOutcome.COMPLETED, node.out(result, "STDERR")
    assert b"CONNECTED" not in node.out(result)
    assert node.out(result).count(b"refused") == 2


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_setsid_child_dies_with_the_job(node: Node, how: str) -> None:
    child = sleeper()
    ready = asyncio.Event()
    task = asyncio.ensure_future(node.executor.run(
        JobSpec(f"setsid-{how}", sh(f"setsid sleep {child} & echo started; sleep 600"),
                timeout=2.0 if how == "timeout" else 120),
        on_log=lambda *_: ready.set()))
    await asyncio.wait_for(ready.wait(), 30)
    for _ in range(200):  # the escapee is running on the host
        if sleeping(child):
            break
        await asyncio.sleep(0.05)
    assert sleeping(child), "the setsid child never started"
    if how == "cancel":
        assert await node.executor.cancel(f"setsid-{how}")
    result = await asyncio.wait_for(task, 60)
    assert result.outcome == (JobOutcome.TIMED_OUT if how == "timeout" else JobOutcome.CANCELLED)
    assert sleeping(child) == []


async def test_fork_bomb_bounded_by_pids(node: Node) -> None:
    bomb = "b() { b | b & }; b; sleep 600"
    result = await node.executor.run(JobSpec("bomb", sh(bomb), timeout=3,
                                             limits=JobLimits(pids=64)))
    assert result.outcome == JobOutcome.TIMED_OUT
    assert b"fork" in node.out(result, "STDERR").lower()  # the limit refused its forks
    me = psutil.Process()
    assert me.is_running()
    # Nothing of the bomb is left on the host.
    left = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["/bin/sh", "-c",
                                                                                  bomb]]
    assert left == []


async def test_memory_hog_killed_with_a_named_error(node: Node) -> None:
    hog = "b = b'x' * (1 << 30)\nprint('survived')"
    result = await node.executor.run(JobSpec(
        "hog", StandaloneTarget(PY, ["-c", hog]), limits=JobLimits(memory_bytes=64 << 20)))
    assert result.outcome == JobOutcome.FAILED
    assert b"survived" not in node.out(result)
    assert result.error == f"killed for using more than its memory limit of {64 << 20} bytes"


async def test_output_flood_capped(node: Node) -> None:
    limit = 100_000
    result = await node.executor.run(JobSpec("flood", sh("yes flood"), timeout=60,
                                             limits=JobLimits(output_bytes=limit)))
    assert result.outcome == JobOutcome.FAILED
    assert result.error == f"output limit of {limit} bytes exceeded on stdout"
    assert result.outputs["STDOUT"].size <= limit


async def test_output_mount_flood_capped(node: Node) -> None:
    limit = 1 << 20
    result = await node.executor.run(JobSpec(
        "mount-flood", sh("while :; do head -c 65536 /dev/zero >> out/f$((i=i+1)); done"),
        output_mounts=["out"], timeout=60, limits=JobLimits(output_bytes=limit)))
    assert result.outcome == JobOutcome.FAILED
    assert "output limit" in (result.error or "")
    assert "MOUNT:out" not in result.outputs  # nothing over the limit is stored


async def test_stranger_runs_as_nobody(node: Node) -> None:
    result = await node.executor.run(JobSpec(
        "stranger", sh("id -u; echo made > out/f"), output_mounts=["out"],
        isolation=Isolation(stranger=True)))
    assert result.outcome == JobOutcome.COMPLETED, node.out(result, "STDERR")
    assert node.out(result) == b"65534\n" if os.geteuid() == 0 else True
    with node.store.open(result.outputs["MOUNT:out"]) as f, tarfile.open(fileobj=f) as tar:
        assert tar.extractfile("f").read() == b"made\n"  # type: ignore[union-attr]


async def test_no_network_without_isolation_network(node: Node) -> None:
    accepted: list[bool] = []
    server = await asyncio.start_server(lambda r, w: (accepted.append(True), w.close()),
                                        "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = ("import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=5); print('REACHED')\n"
            "except OSError as e:\n    print('unreachable')\n")
    try:
        closed = await node.executor.run(JobSpec("no-net", StandaloneTarget(PY, ["-c", code]),
                                                 isolation=Isolation(network=False)))
        open_ = await node.executor.run(JobSpec("net", StandaloneTarget(PY, ["-c", code])))
    finally:
        server.close()
        await server.wait_closed()
    assert node.out(closed) == b"unreachable\n"
    assert node.out(open_) == b"REACHED\n"


def _chain_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, target in (("a", "."), ("a/b", ".."), ("x", "a/b/../../etc")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        data = b"pwned\n"
        info = tarfile.TarInfo("x/marker")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def test_symlink_chain_input_writes_nothing_outside(node: Node, tmp_path: Path) -> None:
    evil = node.store.put_bytes(_chain_tar(), kind=ArtifactKind.TAR)
    result = await node.executor.run(JobSpec(
        "chain", sh("echo ran"), input_mounts=[MountInput("/in", evil)],
        output_mounts=["/in/x"]))
    assert result.outcome == JobOutcome.FAILED
    assert "symlink" in (result.error or "") or "outside" in (result.error or "")
    assert not any(p.name == "marker" for p in tmp_path.rglob("marker"))
    assert not Path("/etc/marker").exists()


async def test_output_symlinks_capture_no_host_file(node: Node) -> None:
    script = (f"ln -s /etc/passwd out/passwd; ln -s {node.data_dir}/identity.key out/key; "
              f"rmdir out2 && ln -s {node.data_dir} out2")
    result = await node.executor.run(JobSpec("links", sh(script),
                                             output_mounts=["out", "out2"]))
    with node.store.open(result.outputs["MOUNT:out"]) as f, tarfile.open(fileobj=f) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["passwd"].issym() and members["key"].issym()
        assert all(not m.isfile() for m in members.values())
    assert "MOUNT:out2" not in result.outputs
    assert result.outcome == JobOutcome.FAILED
    raw = b"".join(node.store.read_bytes(r) for r in result.outputs.values())
    assert SECRET not in raw and b"root:x:0:0" not in raw


async def test_missing_bubblewrap_refuses_to_run(node: Node, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = await node.executor.run(JobSpec("no-bwrap", sh(f"/usr/bin/touch {marker}")))
    assert (result.outcome, result.error) == (JobOutcome.FAILED, SANDBOX_UNAVAILABLE)
    assert not marker.exists()


async def test_port_of_the_node_unreachable_from_a_closed_job(node: Node) -> None:
    """Without network, not even the node's own loopback listeners are reachable."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        result = await node.executor.run(JobSpec(
            "loop", sh(f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo open || echo closed"),
            isolation=Isolation(network=False)))
        with contextlib.suppress(BlockingIOError):
            conn, _ = listener.accept()
            conn.close()
            pytest.fail("the job connected to the node's port")
    finally:
        listener.close()
    assert b"open" not in node.out(result)
