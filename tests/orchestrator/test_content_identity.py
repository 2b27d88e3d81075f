"""Service digests and job keys: the same content gives the same digest wherever it is, and
anything that decides a job's outputs changes its key."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from orchestrator.content_identity import job_key, service_digest, tree_digest
from orchestrator.models import DataDetails, DockerDetails, Service, StandaloneDetails
from orchestrator.registry import ServiceView
from orchestrator.states import ServiceType


def view(**details: object) -> ServiceView:
    return ServiceView(Service(name="s", service_type=ServiceType.STANDALONE), **details)


def test_a_standalone_executable_is_named_by_its_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one" / "tool", tmp_path / "two" / "renamed"
    for path in (one, two):
        path.parent.mkdir()
        path.write_bytes(b"#!/bin/sh\necho hi\n")
    expected = "sha256:" + hashlib.sha256(b"#!/bin/sh\necho hi\n").hexdigest()
    assert service_digest(view(standalone=StandaloneDetails(executable_path=str(one)))) \
        == expected
    assert service_digest(view(standalone=StandaloneDetails(executable_path=str(two)))) \
        == expected
    two.write_bytes(b"#!/bin/sh\necho bye\n")
    os.utime(two, ns=(1, 1))  # a change the cache must see (size and mtime differ)
    assert service_digest(view(standalone=StandaloneDetails(executable_path=str(two)))) \
        != expected
    assert service_digest(view(standalone=StandaloneDetails(executable_path="sh"))) \
        .startswith("sha256:")  # found on PATH
    assert service_digest(view(standalone=StandaloneDetails(
        executable_path=str(tmp_path / "missing")))) == ""


def test_an_installed_tree_is_named_by_its_files_not_where_it_lies(tmp_path: Path) -> None:
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "lib").mkdir(parents=True)
        (root / "run.sh").write_text("exec ./lib/x\n")
        (root / "lib" / "x").write_text("x\n")
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    got = service_digest(view(standalone=StandaloneDetails(
        executable_path="run.sh", install_dir=str(tmp_path / "a"))))
    assert got == "sha256:" + tree_digest(tmp_path / "a")
    (tmp_path / "b" / "lib" / "x").write_text("y\n")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "b")
    (tmp_path / "b" / "lib" / "x").write_text("x\n")
    (tmp_path / "b" / "extra").write_text("")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "b")


def test_docker_and_data_services_take_their_recorded_digests() -> None:
    image = "sha256:" + "ab" * 32
    assert service_digest(view(docker=DockerDetails(image_name="x", image_id=image))) == image
    assert service_digest(view(docker=DockerDetails(image_name="x"))) == ""  # not pulled yet
    clear = "cd" * 32
    assert service_digest(view(data=DataDetails(file_hash=clear))) == "sha256:" + clear
    assert service_digest(view(data=DataDetails())) == ""


def test_a_job_key_changes_with_whatever_decides_the_outputs() -> None:
    base = {"command": ["sh", "-c", "cat"], "env": {"A": "1", "B": "2"}, "args": ["-n"],
            "inputs": {"STDIN": "11" * 32}}
    key = job_key("sha256:" + "00" * 32, **base)  # type: ignore[arg-type]
    assert key.startswith("sha256:") and len(key) == 71
    # The order of the environment and of the inputs does not matter.
    assert job_key("sha256:" + "00" * 32, command=base["command"], args=base["args"],
                   env={"B": "2", "A": "1"}, inputs={"STDIN": "11" * 32}) == key
    changed = [
        job_key("sha256:" + "01" * 32, **base),  # type: ignore[arg-type]
        job_key("sha256:" + "00" * 32, **{**base, "command": ["sh"]}),  # type: ignore[arg-type]
        job_key("sha256:" + "00" * 32, **{**base, "env": {"A": "1"}}),  # type: ignore[arg-type]
        job_key("sha256:" + "00" * 32, **{**base, "args": []}),  # type: ignore[arg-type]
        job_key("sha256:" + "00" * 32,
                **{**base, "inputs": {"STDIN": "22" * 32}}),  # type: ignore[arg-type]
        job_key("sha256:" + "00" * 32,
                **{**base, "inputs": {"ENV:X": "11" * 32}}),  # type: ignore[arg-type]
    ]
    assert len({key, *changed}) == 7


def test_a_requests_identity_is_what_the_executing_peer_would_run(tmp_path: Path) -> None:
    from executors.base import ArtifactRef
    from orchestrator.content_identity import job_identity
    from orchestrator.job_request import JobInput, JobRequest
    from orchestrator.models import ServiceInterface

    exe = tmp_path / "tool"
    exe.write_bytes(b"#!/bin/sh\ncat\n")
    svc = ServiceView(Service(name="s", service_type=ServiceType.STANDALONE),
                      interfaces=[ServiceInterface(id=4, service_id=1, interface_type="MOUNT",
                                                   path="/in")],
                      standalone=StandaloneDetails(executable_path=str(exe),
                                                   arguments=["-v"],
                                                   environment_variables={"A": "1"}))
    data = ArtifactRef("ee" * 32, 9)  # an encrypted DATA file: named by its clear digest
    base = JobRequest("j", 1, "p", inputs=(
        JobInput(4, None, artifact=ArtifactRef("aa" * 32, 3)),
        JobInput(None, "STDIN", artifact=data, data_service_id=7),
        JobInput(None, "ENV", path="B", text="two")), args=("x",))

    def ident(request: JobRequest) -> object:
        return job_identity(svc, request, clear_digest=lambda sid: "cc" * 32 if sid == 7
                            else "")

    one = ident(base)
    assert one.command == ("-v",) and one.env == {"A": "1"}  # type: ignore[attr-defined]
    assert one.inputs == {"MOUNT:/in": "aa" * 32, "STDIN": "cc" * 32,  # type: ignore[attr-defined]
                          "ENV:B": hashlib.sha256(b"two").hexdigest()}
    # The same job whatever the inputs' order or the job id; another for any change.
    assert ident(replace(base, job_id="k", inputs=base.inputs[::-1])) == one
    keys = {ident(r).key for r in (  # type: ignore[attr-defined]
        base, replace(base, args=("y",)), replace(base, cmd=("-q",)),
        replace(base, env={"A": "2"}), replace(base, stdin_text="t"),
        replace(base, inputs=base.inputs[:2]))}
    assert len(keys) == 6
