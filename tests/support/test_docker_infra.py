"""The Docker test infrastructure itself: engine, busybox image, plain and auth registries."""

from __future__ import annotations

import docker
import docker.errors
import httpx
import pytest

from tests.support.docker_infra import TEST_LABEL, LocalRegistry


def test_docker_client_talks_to_engine(docker_client: docker.DockerClient) -> None:
    assert docker_client.ping() is True


def test_busybox_image_runs_applets(docker_client: docker.DockerClient,
                                    busybox_image: str) -> None:
    image = docker_client.images.get(busybox_image)
    assert image.labels.get(TEST_LABEL) == "1"
    out = docker_client.containers.run(busybox_image, ["sh", "-c", "echo hi | wc -c; id -u nobody"],
                                       remove=True, labels={TEST_LABEL: "1"})
    assert out.split() == [b"3", b"65534"]


def test_registry_serves_pushed_image(docker_client: docker.DockerClient,
                                      registry: LocalRegistry) -> None:
    assert registry.address.startswith("127.0.0.1:")
    tags = httpx.get(f"{registry.url}/v2/rn-test/busybox/tags/list", timeout=5).json()
    assert tags["tags"] == ["latest"]
    # The local tag was removed after the push, so this is a real pull.
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(registry.image)
    pulled = docker_client.images.pull(registry.image)
    try:
        assert registry.image in pulled.tags
    finally:
        docker_client.images.remove(registry.image, noprune=True)


def test_auth_registry_requires_password(docker_client: docker.DockerClient,
                                         auth_registry: LocalRegistry) -> None:
    assert httpx.get(f"{auth_registry.url}/v2/", timeout=5).status_code == 401
    ok = httpx.get(f"{auth_registry.url}/v2/rn-test/busybox/tags/list", timeout=5,
                   auth=(auth_registry.username, auth_registry.password))
    assert ok.json()["tags"] == ["latest"]
    bad = httpx.get(f"{auth_registry.url}/v2/", timeout=5,
                    auth=(auth_registry.username, "wrong"))
    assert bad.status_code == 401
    pulled = docker_client.images.pull(auth_registry.image, auth_config=auth_registry.auth_config)
    try:
        assert auth_registry.image in pulled.tags
    finally:
        docker_client.images.remove(auth_registry.image, noprune=True)
