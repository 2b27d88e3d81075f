"""Planning, building and pulling images against the real engine and local registries."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import docker
import docker.errors
import pytest

from orchestrator.errors import InvalidInput, OperationFailed
from orchestrator.services.docker_build import (
    _pull_reason,
    build_image,
    image_config,
    plan_source,
    pull_image,
    remove_image,
    split_reference,
)
from tests.support.docker_infra import LocalRegistry
from tests.support.node_process import free_port

pytestmark = pytest.mark.docker


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_plan_prefers_compose_over_dockerfile(tmp_path: Path) -> None:
    write(tmp_path, {
        "Dockerfile": "FROM scratch\n",
        "docker-compose.yml": "services:\n  web:\n    build:\n      context: ./svc\n"
                              "      dockerfile: Build.df\n      args:\n        - MODE=fast\n",
        "svc/Build.df": "FROM scratch\nENV X=1\n",
    })
    plan = plan_source(tmp_path)
    assert plan.compose_path == "docker-compose.yml" and plan.compose_service_name == "web"
    assert plan.context == (tmp_path / "svc").resolve() and plan.dockerfile == "Build.df"
    assert plan.dockerfile_text == "FROM scratch\nENV X=1\n"
    assert plan.build_args == {"MODE": "fast"}


def test_plan_dockerfile_and_compose_image(tmp_path: Path) -> None:
    write(tmp_path / "a", {"Dockerfile": "FROM scratch\n"})
    plan = plan_source(tmp_path / "a")
    assert plan.builds and plan.compose_path == "" and plan.dockerfile == "Dockerfile"
    write(tmp_path / "b", {"compose.yaml": "services:\n  app:\n    image: busybox:1\n"})
    plan = plan_source(tmp_path / "b")
    assert not plan.builds and plan.pull_image == "busybox:1"


@pytest.mark.parametrize("files,message", [
    ({}, "No Dockerfile or docker-compose.yml"),
    ({"docker-compose.yml": "services: [oops"}, "Unusable docker-compose.yml"),
    ({"compose.yml": "services:\n  a:\n    build: ../..\n"}, "outside the source directory"),
    ({"compose.yml": "services:\n  a:\n    build: ./nope\n"}, "does not exist"),
])
def test_plan_refuses_bad_sources(tmp_path: Path, files: dict[str, str], message: str) -> None:
    write(tmp_path / "src", files).mkdir(exist_ok=True)
    with pytest.raises(OperationFailed, match=message):
        plan_source(tmp_path / "src")


def test_split_reference() -> None:
    assert split_reference("busybox") == ("busybox", "latest")
    assert split_reference("127.0.0.1:5000/rn/x:1.2") == ("127.0.0.1:5000/rn/x", "1.2")
    assert split_reference("127.0.0.1:5000/rn/x", "v2") == ("127.0.0.1:5000/rn/x", "v2")
    for bad in ("", "Upper/Case", "a b", "x@sha256:abc", "x:bad tag"):
        with pytest.raises(InvalidInput):
            split_reference(bad)


def test_build_streams_steps_and_labels(docker_client: docker.DockerClient,
                                        busybox_image: str, tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": f"FROM {busybox_image}\nENV GREETING=hi\n"
                                   "RUN echo built > /built.txt\nVOLUME /data\nCMD [\"cat\"]\n"})
    tag = f"rn-test/build-{uuid.uuid4().hex[:8]}:t"
    events: list[tuple[str, int | None, str | None]] = []
    try:
        image_id = build_image(docker_client, plan_source(tmp_path), tag,
                               labels={"remote-network.test": "1"},
                               on_progress=lambda m, p, line: events.append((m, p, line)))
        assert docker_client.images.get(tag).id == image_id
        config = image_config(docker_client, tag)
        assert config is not None and "GREETING=hi" in config["Env"]
        assert config["Labels"]["remote-network.test"] == "1"
        lines = [line for _, _, line in events if line]
        assert any(re.match(r"Step 1/\d+ : FROM", line) for line in lines)
        assert any(line.startswith("Successfully tagged") for line in lines)
        percentages = [p for _, p, _ in events if p is not None]
        assert percentages == sorted(percentages) and percentages[-1] == 100
        assert len({p for p in percentages if 0 < p < 100}) >= 4
    finally:
        remove_image(docker_client, tag)
    assert image_config(docker_client, tag) is None
    assert remove_image(docker_client, tag) is False


def test_failed_build_is_clear_and_leaves_no_layers(docker_client: docker.DockerClient,
                                                    busybox_image: str, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    write(tmp_path, {"Dockerfile": f"FROM {busybox_image}\nLABEL rn-marker={marker}\n"
                                   "RUN echo step > /x\nRUN exit 3\n"})
    tag = f"rn-test/fail-{marker[:8]}:t"
    with pytest.raises(OperationFailed, match=r"build failed: .*non-zero code: 3"):
        build_image(docker_client, plan_source(tmp_path), tag)
    left = docker_client.images.list(all=True, filters={"label": f"rn-marker={marker}"})
    assert left == []
    assert image_config(docker_client, tag) is None
    assert image_config(docker_client, busybox_image) is not None  # the base image stays


def test_pull_from_registry(docker_client: docker.DockerClient, registry: LocalRegistry) -> None:
    name, tag = split_reference(registry.image)
    statuses: list[str] = []
    try:
        image_id = pull_image(docker_client, name, tag,
                              on_progress=lambda m, p, line: statuses.append(m))
        assert docker_client.images.get(registry.image).id == image_id
        assert statuses[-1].startswith("Pulled")
    finally:
        remove_image(docker_client, registry.image)


def test_pull_with_credentials(docker_client: docker.DockerClient,
                               auth_registry: LocalRegistry) -> None:
    name, tag = split_reference(auth_registry.image)
    with pytest.raises(OperationFailed) as info:
        pull_image(docker_client, name, tag, username=auth_registry.username,
                   password="wrong-" + auth_registry.password)
    assert "authentication failed" in info.value.message
    assert auth_registry.password not in info.value.message
    try:
        pull_image(docker_client, name, tag, username=auth_registry.username,
                   password=auth_registry.password)
        assert image_config(docker_client, auth_registry.image) is not None
    finally:
        remove_image(docker_client, auth_registry.image)


def test_pull_refusals_are_clear(docker_client: docker.DockerClient,
                                 registry: LocalRegistry) -> None:
    with pytest.raises(OperationFailed, match="image not found"):
        pull_image(docker_client, f"{registry.address}/rn-test/missing", "latest")
    with pytest.raises(OperationFailed, match="registry unreachable"):
        pull_image(docker_client, f"127.0.0.1:{free_port()}/rn-test/busybox", "latest")


@pytest.mark.parametrize(("message", "reason"), [
    ('Get "https://127.0.0.1:40117/v2/": dial tcp 127.0.0.1:40117: connect: connection refused',
     "registry unreachable"),
    ("Head https://127.0.0.1:5000/v2/x/manifests/latest: 401 Unauthorized",
     "authentication failed"),
    ("received unexpected HTTP status: 401", "authentication failed"),
    ("manifest for 127.0.0.1:4010/x:latest not found: manifest unknown", "image not found"),
])
def test_pull_reasons_read_the_message_not_the_port(message: str, reason: str) -> None:
    assert reason in _pull_reason("x", "latest", message, [])
