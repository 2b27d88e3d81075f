"""The sandbox command line and the per-job cgroup: built from plain values, checked as data,
and one real cgroup made, filled, killed and removed."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path, PurePosixPath

import pytest

from executors import cgroups, sandbox
from executors.base import JobLimits

P = PurePosixPath


def plan(**kwargs) -> sandbox.SandboxPlan:
    base = dict(job_root=P("/data/jobs/j1"), cwd=P("/data/jobs/j1"), hidden=(P("/data"),),
                readable=(P("/data/services/s"),), private=(P("/tmp"), P("/run")))
    base.update(kwargs)
    return sandbox.SandboxPlan(**base)  # type: ignore[arg-type]


def test_options_hide_the_data_dir_and_bind_back_in_order() -> None:
    opts = sandbox.bwrap_options(plan(env={"A": "1"}))
    text = " ".join(opts)
    assert opts[:3] == ["--ro-bind", "/", "/"]
    assert text.index("--tmpfs /tmp") < text.index("--tmpfs /data")
    assert text.index("--tmpfs /data") < text.index("--ro-bind /data/services/s")
    assert text.index("--ro-bind /data/services/s") < text.index("--bind /data/jobs/j1")
    assert "--perms 0755 --dir /data/services" in text  # any user can pass to the bind
    for flag in ("--unshare-pid", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in opts
    assert "--unshare-net" not in opts and "--cap-drop" not in opts
    assert opts[-3:] == ["--setenv", "A", "1"]


def test_options_network_caps_and_user() -> None:
    opts = sandbox.bwrap_options(plan(network=False, privileged=True, switch_to=(65534, 65534)))
    assert "--unshare-net" in opts
    assert opts[opts.index("--cap-drop") + 1] == "ALL"
    added = [opts[i + 1] for i, o in enumerate(opts) if o == "--cap-add"]
    assert added == ["CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH"]
    root = sandbox.bwrap_options(plan(privileged=True))
    assert "--cap-add" not in root
    prog = sandbox.program(plan(switch_to=(65534, 0)), ["/bin/id"], "/usr/bin/setpriv")
    assert prog == ["/usr/bin/setpriv", "--reuid=65534", "--regid=0", "--clear-groups", "--",
                    "/bin/id"]
    with pytest.raises(sandbox.SandboxError, match="setpriv"):
        sandbox.program(plan(switch_to=(1, 1)), ["/bin/id"], None)


def test_readable_paths_that_would_expose_the_node_are_refused() -> None:
    for wide in ("/", "/data"):
        with pytest.raises(sandbox.SandboxError, match="expose the node's data dir"):
            sandbox.bwrap_options(plan(readable=(P(wide),)))
    with pytest.raises(sandbox.SandboxError, match="not absolute"):
        sandbox.check_readable((P("rel"),), ())
    with pytest.raises(sandbox.SandboxError, match="environment"):
        sandbox.bwrap_options(plan(env={"A=B": "x"}))


def test_nested_hidden_and_visible_paths_need_no_mount() -> None:
    opts = sandbox.bwrap_options(plan(hidden=(P("/data"), P("/data/jobs"), P("/tmp/x")),
                                      readable=(P("/usr/share"),)))
    tmpfs = [opts[i + 1] for i, o in enumerate(opts) if o == "--tmpfs"]
    assert tmpfs == ["/tmp", "/run", "/data"]
    assert "/usr/share" not in opts  # visible through the read-only root already


def test_args_encoding_and_enter_wrapper() -> None:
    assert sandbox.encode_args(["--a", "b c"]) == b"--a\0b c\0"
    with pytest.raises(sandbox.SandboxError):
        sandbox.encode_args(["bad\0"])
    argv = sandbox.enter(["/bin/echo", "hi"], fsize_blocks=sandbox.fsize_blocks(1000))
    assert argv[:2] == ["/bin/sh", "-c"] and argv[-3:] == ["--", "/bin/echo", "hi"]
    out = subprocess.run([*argv[:4], "-", "--", "/bin/sh", "-c", "ulimit -f"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unlimited"
    bounded = subprocess.run([*argv[:4], "3", "--", "/bin/sh", "-c", "ulimit -f"],
                             capture_output=True, text=True, check=True)
    assert bounded.stdout.strip() == "3"
    assert sandbox.fsize_blocks(None) is None and sandbox.fsize_blocks(1024) == 3


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
36 31 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
42 31 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_parsing_and_limit_values() -> None:
    mounts = cgroups.parse_mountinfo(MOUNTINFO)
    assert [(m.fstype, m.point) for m in mounts] == [
        ("cgroup", "/sys/fs/cgroup/cpu"), ("cgroup", "/sys/fs/cgroup/memory"),
        ("cgroup", "/sys/fs/cgroup/pids"), ("cgroup2", "/sys/fs/cgroup/unified")]
    assert "memory" in mounts[1].options
    own = cgroups.parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/user.slice\n")
    assert own == {"memory": "/a/b", "cpu": "/", "cpuacct": "/", "": "/user.slice"}
    limits = JobLimits(memory_bytes=1 << 20, cpus=0.5, pids=10)
    assert cgroups.limit_values(limits, 2) == {"": {
        "memory.max": str(1 << 20), "memory.swap.max": "0", "pids.max": "10",
        "cpu.max": "50000 100000"}}
    v1 = cgroups.limit_values(limits, 1)
    assert v1["memory"]["memory.limit_in_bytes"] == str(1 << 20)
    assert v1["pids"] == {"pids.max": "10"}
    assert v1["cpu"]["cpu.cfs_quota_us"] == "50000"
    assert cgroups.limit_values(JobLimits(), 1) == {} and cgroups.limit_values(JobLimits(), 2) == {
        "": {}}


def test_detect_finds_nothing_without_cgroup_mounts(tmp_path: Path) -> None:
    (tmp_path / "mountinfo").write_text("1 0 0:1 / / rw - ext4 /dev/sda rw\n")
    (tmp_path / "cgroup").write_text("0::/\n")
    assert cgroups.detect("none", proc=tmp_path) is None


def test_real_job_cgroup_limits_kill_and_remove() -> None:
    hierarchy = cgroups.detect(f"test-{uuid.uuid4().hex[:8]}")
    if hierarchy is None:
        pytest.skip("no writable cgroup on this machine")
    cg = hierarchy.job("one")
    try:
        cg.create(JobLimits(memory_bytes=32 << 20, pids=8, cpus=0.5))
        if hierarchy.version == 1:
            assert (cg.dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(
                32 << 20)
            assert (cg.dirs["pids"] / "pids.max").read_text().strip() == "8"
        else:
            assert (cg.dirs[""] / "memory.max").read_text().strip() == str(32 << 20)
        argv = sandbox.enter(["/bin/sh", "-c", "setsid sleep 600 & sleep 600"],
                             procs_files=[str(f) for f in cg.procs_files()])
        proc = subprocess.Popen(argv, start_new_session=True)
        try:
            for _ in range(400):
                if len(cg.pids()) >= 2:
                    break
                subprocess.run(["sleep", "0.02"], check=True)
            assert len(cg.pids()) >= 2
            assert cg.kill() is True
            assert cg.pids() == set()
        finally:
            proc.kill()
            proc.wait()
    finally:
        cg.kill()
        cg.remove()
        for base in hierarchy.bases.values():  # removed with its last job cgroup
            assert not base.exists()
    assert not any(d.exists() for d in cg.dirs.values())
