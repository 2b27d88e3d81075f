"""The standalone executor: real processes, process groups, users and mounts."""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
from pathlib import Path

import psutil
import pytest

from executors.artifacts import ArtifactStore
from executors.base import JobOutcome, JobSpec, MountInput, StandaloneTarget
from executors.standalone import JobSetupError, StandaloneExecutor, mount_location, resolve_user
from tests.support.processes import sleeper, sleeping

SH = "/bin/sh"


def sh(script: str, **kwargs) -> StandaloneTarget:
    return StandaloneTarget(SH, ["-c", script], **kwargs)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tar_members(store: ArtifactStore, ref) -> dict[str, bytes | None]:
    with store.open(ref) as f, tarfile.open(fileobj=f) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                for m in tar.getmembers()}


async def test_stdin_piped_through_wc(standalone_exec: StandaloneExecutor,
                                      store: ArtifactStore) -> None:
    result = await standalone_exec.run(JobSpec("wc", StandaloneTarget("/bin/busybox",
                                                                      ["wc", "-l"]),
                                               stdin=b"a\nb\nc\nd\n"))
    assert result.outcome == JobOutcome.COMPLETED, result.error
    assert store.read_bytes(result.outputs["STDOUT"]).strip() == b"4"
    big = store.put_bytes(b"x" * 300_000)
    result = await standalone_exec.run(JobSpec("wc-file", sh("wc -c"), stdin=big))
    assert store.read_bytes(result.outputs["STDOUT"]).strip() == b"300000"


async def test_outputs_exact_and_log_lines(standalone_exec: StandaloneExecutor,
                                           store: ArtifactStore) -> None:
    lines: list[tuple[str, str, str]] = []
    result = await standalone_exec.run(
        JobSpec("streams", sh("echo out1; echo err1 >&2; printf 'out2\\ntail'")),
        on_log=lambda *a: lines.append(a))
    assert result.outcome == JobOutcome.COMPLETED
    assert store.read_bytes(result.outputs["STDOUT"]) == b"out1\nout2\ntail"
    assert store.read_bytes(result.outputs["STDERR"]) == b"err1\n"
    logs = store.read_bytes(result.outputs["LOGS"])
    assert sorted(logs.splitlines()) == [b"err1", b"out1", b"out2", b"tail"]
    assert logs.index(b"out1") < logs.index(b"out2") < logs.index(b"tail")
    assert sorted(lines) == sorted([("streams", "stdout", "out1"), ("streams", "stderr", "err1"),
                                    ("streams", "stdout", "out2"), ("streams", "stdout", "tail")])


async def test_exit_code_three(standalone_exec: StandaloneExecutor) -> None:
    result = await standalone_exec.run(JobSpec("exit3", sh("exit 3")))
    assert (result.outcome, result.exit_code, result.error) == (JobOutcome.FAILED, 3,
                                                                "exit code 3")


async def test_failure_quotes_the_last_lines_on_stderr(
        standalone_exec: StandaloneExecutor) -> None:
    script = ("echo one >&2; echo out; echo two >&2; echo >&2; echo three >&2; "
              "printf last >&2; exit 5")
    result = await standalone_exec.run(JobSpec("tail", sh(script)))
    assert (result.outcome, result.exit_code) == (JobOutcome.FAILED, 5)
    assert result.error == "exit code 5: two | three | last"


async def test_mounts_env_and_cwd(standalone_exec: StandaloneExecutor, store: ArtifactStore,
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RN_TEST_NODE_SECRET", "must-not-leak")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    tree = store.put_dir(src)
    conf = store.put_bytes(b"conf\n")
    script = ('[ "$PWD" = "$RN_JOB_DIR" ] && echo cwd-ok;'
              ' echo "${RN_TEST_NODE_SECRET:-unset} $SVC $JOB";'
              ' cat data/a.txt etc/app.conf > out/joined.txt; mkdir out/sub; echo z > out/sub/z')
    result = await standalone_exec.run(JobSpec(
        "mounts", sh(script, environment={"SVC": "svc", "JOB": "overridden"}),
        env={"JOB": "job"},
        input_mounts=[MountInput("/data", tree), MountInput("/etc/app.conf", conf)],
        output_mounts=["/out"]))
    assert result.outcome == JobOutcome.COMPLETED, store.read_bytes(result.outputs["STDERR"])
    assert store.read_bytes(result.outputs["STDOUT"]) == b"cwd-ok\nunset svc job\n"
    members = tar_members(store, result.outputs["MOUNT:/out"])
    assert members["joined.txt"] == b"alpha\nconf\n"
    assert members["sub/z"] == b"z\n"


async def test_working_directory(standalone_exec: StandaloneExecutor, store: ArtifactStore,
                                 tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    result = await standalone_exec.run(JobSpec("wd", sh("pwd",
                                                        working_directory=str(workdir))))
    assert store.read_bytes(result.outputs["STDOUT"]) == f"{workdir}\n".encode()


async def test_timeout_kills_whole_group(standalone_exec: StandaloneExecutor,
                                         store: ArtifactStore) -> None:
    # The shell ignores SIGTERM (SIGKILL follows the grace period); its child sleeps on.
    child = sleeper()
    result = await standalone_exec.run(JobSpec(
        "slow", sh(f"trap '' TERM; sleep {child} & echo $!; sleep 120"), timeout=0.5))
    assert result.outcome == JobOutcome.TIMED_OUT
    assert result.error == "timed out after 0.5s"
    assert result.exit_code == 137
    assert store.read_bytes(result.outputs["STDOUT"]).strip().isdigit()
    assert sleeping(child) == []


async def test_background_child_killed_after_exit(standalone_exec: StandaloneExecutor,
                                                  store: ArtifactStore) -> None:
    child = sleeper()
    result = await standalone_exec.run(JobSpec("bg", sh(f"sleep {child} >/dev/null & echo $!")))
    assert result.outcome == JobOutcome.COMPLETED
    assert sleeping(child) == []


async def test_cancel_mid_run(standalone_exec: StandaloneExecutor, store: ArtifactStore) -> None:
    ready = asyncio.Event()
    child = sleeper()
    task = asyncio.ensure_future(standalone_exec.run(
        JobSpec("to-cancel", sh(f"sleep {child} & echo $!; sleep 120")),
        on_log=lambda *_: ready.set()))
    await asyncio.wait_for(ready.wait(), 30)
    assert standalone_exec.running == ["to-cancel"]
    assert await standalone_exec.cancel("to-cancel") is True
    result = await asyncio.wait_for(task, 30)
    assert result.outcome == JobOutcome.CANCELLED and result.error == "cancelled"
    assert sleeping(child) == []
    assert await standalone_exec.cancel("to-cancel") is False


async def test_run_as_nobody(standalone_exec: StandaloneExecutor, store: ArtifactStore) -> None:
    result = await standalone_exec.run(JobSpec(
        "nobody", sh("id -u; id -g; id -G; echo made > out/by-nobody", run_as_user="nobody"),
        output_mounts=["out"]))
    assert result.outcome == JobOutcome.COMPLETED, store.read_bytes(result.outputs["STDERR"])
    nobody = resolve_user("nobody")
    uid, gid, groups = store.read_bytes(result.outputs["STDOUT"]).decode().split("\n")[:3]
    assert (int(uid), int(gid)) == (nobody.uid, nobody.gid)
    assert groups.split() == [str(nobody.gid)]  # supplementary groups dropped
    assert tar_members(store, result.outputs["MOUNT:out"])["by-nobody"] == b"made\n"
    # That job's root lived in the system temp dir (reachable by nobody) and is gone.
    assert list(Path(tempfile.gettempdir()).glob("rn-job-nobody-*")) == []


async def test_run_as_user_and_group(standalone_exec: StandaloneExecutor,
                                     store: ArtifactStore) -> None:
    result = await standalone_exec.run(JobSpec("ug", sh("id -u; id -g",
                                                        run_as_user="65534:0")))
    assert store.read_bytes(result.outputs["STDOUT"]) == b"65534\n0\n"
    bad = await standalone_exec.run(JobSpec("bad-user", sh("true", run_as_user="no-such-user")))
    assert bad.outcome == JobOutcome.FAILED
    assert bad.error == "run_as_user: no such user 'no-such-user'"


async def test_executable_missing_or_not_executable(standalone_exec: StandaloneExecutor,
                                                    tmp_path: Path) -> None:
    missing = await standalone_exec.run(JobSpec("m", StandaloneTarget(str(tmp_path / "gone"))))
    assert missing.outcome == JobOutcome.FAILED
    assert missing.error == f"executable not found: {tmp_path / 'gone'}"
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    not_exec = await standalone_exec.run(JobSpec("n", StandaloneTarget(str(plain))))
    assert not_exec.error == f"not an executable file: {plain}"
    relative = await standalone_exec.run(JobSpec("r", StandaloneTarget("bin/sh")))
    assert relative.error == "executable path is not absolute: bin/sh"
    bad_mount = await standalone_exec.run(JobSpec("bm", sh("true"), output_mounts=["../up"]))
    assert bad_mount.error == "invalid mount path '../up'"


def test_mount_location_and_user_parsing(tmp_path: Path) -> None:
    assert mount_location(tmp_path, "/a/b") == tmp_path / "a" / "b"
    assert mount_location(tmp_path, "c") == tmp_path / "c"
    with pytest.raises(JobSetupError):
        mount_location(tmp_path, "/a/../../b")
    with pytest.raises(JobSetupError):
        mount_location(tmp_path, "/")
    assert resolve_user("0").uid == 0
    with pytest.raises(JobSetupError, match="no such group"):
        resolve_user("nobody:no-such-group")
