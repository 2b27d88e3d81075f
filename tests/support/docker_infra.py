"""Real Docker parts for tests: the engine client, a FROM-scratch busybox image, local registries.

Fixtures (session scope, registered in tests/conftest.py):

- ``docker_client``: a docker SDK client on the local engine (the engine is required).
- ``busybox_image``: tag of an image built ``FROM scratch`` around the static /bin/busybox with
  its applets installed in /bin.
- ``registry``: a ``docker-registry`` process on 127.0.0.1:<free port> (storage in a temp dir)
  holding the busybox image as ``<address>/rn-test/busybox:latest``.
- ``auth_registry``: the same behind htpasswd basic auth (``.username``, ``.password``).

Everything made here carries the label ``remote-network.test=1``. Registry processes stop and
their tags are removed at session end; the busybox base image is kept (other sessions may use it).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import docker
import docker.errors
import httpx
import pytest

from tests.support.node_process import free_port

TEST_LABEL = "remote-network.test"
BUSYBOX_TAG = "rn-test/busybox:latest"
BUSYBOX_BIN = Path("/bin/busybox")
REGISTRY_BIN = "docker-registry"
REGISTRY_REPO = "rn-test/busybox"

_DOCKERFILE = f"""\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/etc", "/root"]
RUN ["/bin/busybox", "sh", "-c", \
"echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && \
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> /etc/passwd && \
echo 'root:x:0:' > /etc/group && echo 'nogroup:x:65534:' >> /etc/group && chmod 1777 /tmp"]
LABEL {TEST_LABEL}="1"
CMD ["/bin/sh"]
"""


def build_busybox_image(client: docker.DockerClient, tag: str = BUSYBOX_TAG) -> str:
    """Build (or rebuild from cache) the FROM-scratch busybox image; returns its tag."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = _DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(str(BUSYBOX_BIN), arcname="busybox")
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True,
                        labels={TEST_LABEL: "1"})
    return tag


@dataclass
class LocalRegistry:
    """A docker-registry process on loopback; ``image`` is the busybox image pushed to it."""

    address: str  # "127.0.0.1:<port>"
    image: str  # "<address>/rn-test/busybox:latest"
    root: Path
    proc: subprocess.Popen[bytes]
    username: str = ""
    password: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def auth_config(self) -> dict[str, str] | None:
        if not self.username:
            return None
        return {"username": self.username, "password": self.password}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _registry_config(port: int, storage: Path, htpasswd: Path | None) -> str:
    auth = ""
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: rn-test\n    path: {htpasswd}\n"
    return (
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: rn-test-secret\n"
        f"{auth}"
    )


def start_registry(client: docker.DockerClient, image: str, *, username: str = "",
                   password: str = "", wait: float = 30.0) -> LocalRegistry:
    """Start a registry on a free loopback port and push ``image`` to it as rn-test/busybox."""
    root = Path(tempfile.mkdtemp(prefix="rn-registry-"))
    storage = root / "storage"
    storage.mkdir()
    htpasswd = None
    if username:
        htpasswd = root / "htpasswd"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{username}:{hashed}\n")
    port = free_port()
    config = root / "config.yml"
    config.write_text(_registry_config(port, storage, htpasswd))
    log = (root / "registry.log").open("ab")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    address = f"127.0.0.1:{port}"
    reg = LocalRegistry(address=address, image=f"{address}/{REGISTRY_REPO}:latest", root=root,
                        proc=proc, username=username, password=password)
    try:
        _wait_registry(reg, wait)
        local = client.images.get(image)
        local.tag(f"{address}/{REGISTRY_REPO}", "latest")
        try:
            for line in client.api.push(f"{address}/{REGISTRY_REPO}", "latest", stream=True,
                                        decode=True, auth_config=reg.auth_config):
                if "error" in line:
                    raise RuntimeError(f"push to {address} failed: {line['error']}")
        finally:
            # Untag locally so that a test pulling reg.image really pulls it.
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(reg.image, noprune=True)
    except BaseException:
        reg.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return reg


def _wait_registry(reg: LocalRegistry, wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            log = (reg.root / "registry.log").read_text(errors="replace")
            raise RuntimeError(f"docker-registry exited with {reg.proc.returncode}: {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{reg.url}/v2/", timeout=1).status_code in (200, 401):
                return
        time.sleep(0.05)
    raise TimeoutError(f"docker-registry not ready on {reg.address} in {wait}s")


def remove_registry_images(client: docker.DockerClient, address: str) -> None:
    """Remove every local tag that points into the registry at ``address``."""
    for img in client.images.list():
        for tag in img.tags:
            if tag.startswith(f"{address}/"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag, noprune=True)


def stop_registry(client: docker.DockerClient, reg: LocalRegistry) -> None:
    reg.stop()
    remove_registry_images(client, reg.address)
    shutil.rmtree(reg.root, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The local engine's client. The engine is required: no engine is an error, not a skip."""
    client = docker.from_env(timeout=120)
    client.ping()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    return build_busybox_image(docker_client)


@pytest.fixture(scope="session")
def registry(docker_client: docker.DockerClient, busybox_image: str) -> Iterator[LocalRegistry]:
    reg = start_registry(docker_client, busybox_image)
    try:
        yield reg
    finally:
        stop_registry(docker_client, reg)


@pytest.fixture(scope="session")
def auth_registry(docker_client: docker.DockerClient,
                  busybox_image: str) -> Iterator[LocalRegistry]:
    reg = start_registry(docker_client, busybox_image, username="rn-tester",
                         password="s3cret-Pa55")
    try:
        yield reg
    finally:
        stop_registry(docker_client, reg)
