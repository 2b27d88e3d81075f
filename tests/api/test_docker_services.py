"""Docker services through the real API of a running node: registry, git and local sources,
interfaces, configuration, deletion. Real engine, real registries, real git servers."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from websockets.sync.client import ClientConnection

from tests.support.docker_infra import LocalRegistry
from tests.support.git_server import (
    GIT_PASSWORD,
    GIT_USER,
    GitServer,
    auth_git_server_fixture,  # noqa: F401
    closed_port_url,
    git_server_fixture,  # noqa: F401
)
from tests.support.node_process import ApiClient, NodeProcess

pytestmark = pytest.mark.docker

DOCKER = "/api/services/docker"


def image_exists(docker_client: docker.DockerClient, ref: str) -> bool:
    try:
        docker_client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def service_names(client: ApiClient) -> set[str]:
    return {s["name"] for s in client.get("/api/services").json()["services"]}


def assert_no_secret(node: NodeProcess, secret: str) -> None:
    """The secret is nowhere in the node's data dir (database, log, kept files)."""
    for path in node.data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def delete_service(client: ApiClient, docker_client: docker.DockerClient, service_id: int
                   ) -> None:
    details = client.get(f"{DOCKER}/{service_id}/details").json()["details"]
    ref = f"{details['image_name']}:{details['image_tag']}"
    assert client.delete(f"/api/services/{service_id}").status_code == 200
    assert client.get(f"/api/services/{service_id}").status_code == 404
    assert not image_exists(docker_client, ref)


@pytest.fixture
def ws(client: ApiClient) -> Iterator[ClientConnection]:
    with client.websocket() as conn:
        yield conn


def operation_events(conn: ClientConnection, op: str, timeout: float = 120
                     ) -> list[dict[str, Any]]:
    """Every DOCKER_OPERATION_* message of ``op`` until its COMPLETE or ERROR."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = json.loads(conn.recv(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            break
        if msg["type"].startswith("DOCKER_OPERATION") and msg["payload"]["operation_id"] == op:
            events.append(msg)
            if msg["type"] in ("DOCKER_OPERATION_COMPLETE", "DOCKER_OPERATION_ERROR"):
                return events
    raise AssertionError(f"operation {op} did not finish: {events[-3:]}")


def wait_service_updated(conn: ClientConnection, service_id: int, action: str,
                         timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = json.loads(conn.recv(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            return False
        payload = msg["payload"]
        if msg["type"] == "SERVICE_UPDATED" and payload.get("service_id") == service_id \
                and payload.get("action") == action:
            return True
    return False


def rn_git_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("rn-docker-git-*")}


def dockerfile(base: str, marker: str = "") -> str:
    return (f"FROM {base}\n"
            f"LABEL rn-marker={marker or uuid.uuid4().hex}\n"
            "ENV APP_MODE=batch\nARG VERSION=1.0\nVOLUME /input /results\nEXPOSE 8080\n"
            'RUN echo built > /built.txt\nENTRYPOINT ["/bin/sh", "-c"]\nCMD ["cat /built.txt"]\n')


# -- registry ----------------------------------------------------------------------------------
def test_from_registry_records_service_and_removes_image_on_delete(
        client: ApiClient, docker_client: docker.DockerClient, registry: LocalRegistry) -> None:
    resp = client.post(f"{DOCKER}/from-registry", json={
        "service_name": "reg-busybox", "image_name": registry.image.rsplit(":", 1)[0],
        "image_tag": "latest", "description": "from the local registry"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["success"] is True
    service = body["service"]
    assert service["service_type"] == "DOCKER" and service["status"] == "ACTIVE"
    assert service["capabilities"] == {"image_name": registry.image.rsplit(":", 1)[0],
                                       "image_tag": "latest"}
    kinds = [i["interface_type"] for i in body["suggested_interfaces"]]
    assert kinds[:4] == ["STDIN", "STDOUT", "STDERR", "LOGS"]
    stored = client.get(f"/api/services/{service['id']}/interfaces").json()
    assert [i["interface_type"] for i in stored["interfaces"]] == kinds
    details = client.get(f"{DOCKER}/{service['id']}/details").json()["details"]
    assert details["source"] == "registry" and details["compose_path"] == ""
    assert json.loads(details["cmd"]) == ["/bin/sh"] and details["entrypoint"] == ""
    assert image_exists(docker_client, registry.image)
    delete_service(client, docker_client, service["id"])


def test_from_registry_with_credentials_and_custom_interfaces(
        client: ApiClient, node_proc: NodeProcess, docker_client: docker.DockerClient,
        auth_registry: LocalRegistry) -> None:
    name = auth_registry.image.rsplit(":", 1)[0]
    custom = [{"interface_type": "STDIN", "path": "", "description": "in"},
              {"interface_type": "MOUNT", "path": "/data", "mount_function": "OUTPUT"}]
    wrong = client.post(f"{DOCKER}/from-registry", json={
        "service_name": "auth-wrong", "image_name": name, "username": auth_registry.username,
        "password": "bad-" + auth_registry.password})
    assert wrong.status_code == 500
    assert "authentication failed" in wrong.json()["error"]
    assert auth_registry.password not in wrong.text
    assert "auth-wrong" not in service_names(client)
    resp = client.post(f"{DOCKER}/from-registry", json={
        "service_name": "auth-ok", "image_name": name, "username": auth_registry.username,
        "password": auth_registry.password, "custom_interfaces": custom})
    assert resp.status_code == 201, resp.text
    sid = resp.json()["service"]["id"]
    stored = client.get(f"/api/services/{sid}/interfaces").json()["interfaces"]
    assert [(i["interface_type"], i["path"], i["mount_function"]) for i in stored] == [
        ("STDIN", "", ""), ("MOUNT", "/data", "OUTPUT")]
    assert resp.json()["suggested_interfaces"][0]["interface_type"] == "STDIN"
    assert_no_secret(node_proc, auth_registry.password)
    delete_service(client, docker_client, sid)


def test_from_registry_refusals(client: ApiClient, registry: LocalRegistry) -> None:
    missing = client.post(f"{DOCKER}/from-registry", json={
        "service_name": "reg-missing", "image_name": f"{registry.address}/rn-test/nothing"})
    assert missing.status_code == 500 and "image not found" in missing.json()["error"]
    unreachable = client.post(f"{DOCKER}/from-registry", json={
        "service_name": "reg-down", "image_name": "127.0.0.1:1/rn-test/busybox"})
    assert unreachable.status_code == 500
    assert "registry unreachable" in unreachable.json()["error"]
    assert client.post(f"{DOCKER}/from-registry", json={"image_name": "x"}).status_code == 400
    bad_iface = client.post(f"{DOCKER}/from-registry", json={
        "service_name": "bad-iface", "image_name": registry.image,
        "custom_interfaces": [{"interface_type": "NOPE"}]})
    assert bad_iface.status_code == 400 and "interface_type" in bad_iface.json()["error"]
    assert not {"reg-missing", "reg-down", "bad-iface"} & service_names(client)


# -- local ---------------------------------------------------------------------------------------
def test_from_local_builds_detects_and_configures(
        client: ApiClient, ws: ClientConnection, docker_client: docker.DockerClient,
        busybox_image: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(dockerfile(busybox_image))
    resp = client.post(f"{DOCKER}/from-local", json={
        "service_name": "local-app", "local_path": str(tmp_path)})
    assert resp.status_code == 201, resp.text
    sid = resp.json()["service"]["id"]
    suggested = {(i["interface_type"], i.get("path", ""), i.get("mount_function", ""))
                 for i in resp.json()["suggested_interfaces"]}
    assert {("ENV", "APP_MODE", ""), ("ARG", "VERSION", ""), ("MOUNT", "/input", "INPUT"),
            ("MOUNT", "/results", "OUTPUT"), ("ENV", "PORT", ""), ("STDIN", "", "")} <= suggested
    details = client.get(f"{DOCKER}/{sid}/details").json()["details"]
    assert details["source"] == "local"
    assert json.loads(details["entrypoint"]) == ["/bin/sh", "-c"]
    assert json.loads(details["cmd"]) == ["cat /built.txt"]
    again = client.get(f"{DOCKER}/{sid}/interfaces/suggested").json()["suggested_interfaces"]
    assert {(i["interface_type"], i.get("path", "")) for i in again} >= {
        ("ENV", "APP_MODE"), ("ARG", "VERSION"), ("MOUNT", "/results")}

    # configuration: shell strings and JSON arrays are stored as JSON arrays; "" clears
    cfg = client.put(f"{DOCKER}/{sid}/config", json={"entrypoint": "python app.py",
                                                     "cmd": "--port '8080 9'"})
    assert cfg.status_code == 200 and cfg.json()["success"] is True
    details = client.get(f"{DOCKER}/{sid}/details").json()["details"]
    assert json.loads(details["entrypoint"]) == ["python", "app.py"]
    assert json.loads(details["cmd"]) == ["--port", "8080 9"]
    client.put(f"{DOCKER}/{sid}/config", json={"entrypoint": '["python", "app.py", "-v"]',
                                               "cmd": ""})
    details = client.get(f"{DOCKER}/{sid}/details").json()["details"]
    assert json.loads(details["entrypoint"]) == ["python", "app.py", "-v"] and details["cmd"] == ""
    for bad in ({"cmd": "unbalanced 'quote"}, {"cmd": "[1, 2]"}, {"entrypoint": "[oops"}, {}):
        assert client.put(f"{DOCKER}/{sid}/config", json=bad).status_code == 400, bad

    # interfaces: replaced as a whole, validated
    new = [{"interface_type": "STDOUT"}, {"interface_type": "ENV", "path": "TOKEN"}]
    put = client.put(f"{DOCKER}/{sid}/interfaces", json={"interfaces": new})
    assert put.status_code == 200 and put.json()["message"] == "Interfaces updated successfully"
    assert wait_service_updated(ws, sid, "interfaces_updated")
    stored = client.get(f"/api/services/{sid}/interfaces").json()["interfaces"]
    assert [(i["interface_type"], i["path"]) for i in stored] == [("STDOUT", ""), ("ENV", "TOKEN")]
    bad = client.put(f"{DOCKER}/{sid}/interfaces",
                     json={"interfaces": [{"interface_type": "MOUNT", "path": "relative"}]})
    assert bad.status_code == 400
    assert len(client.get(f"/api/services/{sid}/interfaces").json()["interfaces"]) == 2
    delete_service(client, docker_client, sid)


def test_from_local_compose_takes_precedence(client: ApiClient,
                                             docker_client: docker.DockerClient,
                                             busybox_image: str, tmp_path: Path) -> None:
    # The top-level Dockerfile would fail: building it would make the request fail.
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN exit 7\n")
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  cache:\n    image: redis\n  app:\n    build:\n      context: ./app\n"
        "    environment:\n      - QUEUE_URL=x\n    volumes:\n      - ./in:/data/in:ro\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text(f"FROM {busybox_image}\nENV FROM_APP=1\n")
    resp = client.post(f"{DOCKER}/from-local", json={
        "service_name": "compose-app", "local_path": str(tmp_path)})
    assert resp.status_code == 201, resp.text
    sid = resp.json()["service"]["id"]
    paths = {i.get("path") for i in resp.json()["suggested_interfaces"]}
    assert {"QUEUE_URL", "/data/in", "FROM_APP"} <= paths
    assert client.get(f"{DOCKER}/{sid}/details").json()["details"]["compose_path"] == \
        "docker-compose.yml"
    again = client.get(f"{DOCKER}/{sid}/interfaces/suggested").json()["suggested_interfaces"]
    assert {"QUEUE_URL", "/data/in", "FROM_APP"} <= {i.get("path") for i in again}
    delete_service(client, docker_client, sid)


def test_from_local_bad_input(client: ApiClient, docker_client: docker.DockerClient,
                              busybox_image: str, tmp_path: Path) -> None:
    def post(path: str, name: str = "local-bad") -> Any:
        return client.post(f"{DOCKER}/from-local", json={"service_name": name,
                                                         "local_path": path})

    relative = post("some/relative/dir")
    assert relative.status_code == 400 and "absolute" in relative.json()["error"]
    missing = post(str(tmp_path / "missing"))
    assert missing.status_code == 400 and "not an existing directory" in missing.json()["error"]
    empty = post(str(tmp_path))
    assert empty.status_code == 500 and "No Dockerfile" in empty.json()["error"]
    marker = uuid.uuid4().hex
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox_image}\nLABEL rn-marker={marker}\nRUN echo a > /a\nRUN exit 5\n")
    failed = post(str(tmp_path))
    assert failed.status_code == 500
    assert "non-zero code: 5" in failed.json()["error"]
    assert docker_client.images.list(all=True, filters={"label": f"rn-marker={marker}"}) == []
    assert "local-bad" not in service_names(client)


# -- git -----------------------------------------------------------------------------------------
def test_from_git_builds_in_background_with_progress(
        client: ApiClient, ws: ClientConnection, docker_client: docker.DockerClient,
        git_server: GitServer, busybox_image: str) -> None:
    url = git_server.create_repo("git-app", {"Dockerfile": dockerfile(busybox_image),
                                             "README.md": "hello"}, branch="master")
    before = rn_git_dirs()
    resp = client.post(f"{DOCKER}/from-git", json={"service_name": "git-app", "repo_url": url})
    assert resp.status_code == 202, resp.text
    op = resp.json()["operation_id"]
    assert op.startswith("docker-git-") and op.removeprefix("docker-git-").isdigit()
    events = operation_events(ws, op)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "DOCKER_OPERATION_START" and kinds[-1] == "DOCKER_OPERATION_COMPLETE"
    progress = [e["payload"] for e in events if e["type"] == "DOCKER_OPERATION_PROGRESS"]
    logs = [p["log"] for p in progress if "log" in p]
    assert any(line.startswith("Step 1/") for line in logs)
    # Each build line names its phase, the service and the image (the UI keys on them).
    built = [p for p in progress if "log" in p]
    assert {(p["phase"], p["service_name"]) for p in built} == {("build", "git-app")}
    assert all(p["image_name"].startswith("remote-network/") for p in built), built[0]
    percentages = [p["percentage"] for p in progress if "percentage" in p]
    assert percentages == sorted(percentages) and len(set(percentages)) >= 4
    sid = events[-1]["payload"]["service_id"]
    details = client.get(f"{DOCKER}/{sid}/details").json()["details"]
    assert details["source"] == "git"
    # The completion names what was suggested, as the web UI's wizard reads it.
    done_paths = {i["path"] for i in events[-1]["payload"]["suggested_interfaces"]}
    assert "VERSION" in done_paths
    paths = {i["path"] for i in client.get(f"/api/services/{sid}/interfaces").json()["interfaces"]}
    assert {"APP_MODE", "/results", "VERSION"} <= paths
    suggested = client.get(f"{DOCKER}/{sid}/interfaces/suggested").json()["suggested_interfaces"]
    assert "VERSION" in {i.get("path") for i in suggested}  # from the kept Dockerfile
    assert rn_git_dirs() == before
    delete_service(client, docker_client, sid)


def test_from_git_private_repo(client: ApiClient, ws: ClientConnection, node_proc: NodeProcess,
                               docker_client: docker.DockerClient, auth_git_server: GitServer,
                               busybox_image: str) -> None:
    url = auth_git_server.create_repo("private-app", {"Dockerfile": dockerfile(busybox_image)})
    before = rn_git_dirs()
    wrong = client.post(f"{DOCKER}/from-git", json={
        "service_name": "private-wrong", "repo_url": url, "username": GIT_USER,
        "password": "not-" + GIT_PASSWORD})
    assert wrong.status_code == 202
    events = operation_events(ws, wrong.json()["operation_id"])
    assert events[-1]["type"] == "DOCKER_OPERATION_ERROR"
    assert "authentication failed" in events[-1]["payload"]["message"]
    assert GIT_PASSWORD not in json.dumps(events)
    resp = client.post(f"{DOCKER}/from-git", json={
        "service_name": "private-app", "repo_url": url, "branch": "main",
        "username": GIT_USER, "password": GIT_PASSWORD})
    events = operation_events(ws, resp.json()["operation_id"])
    assert events[-1]["type"] == "DOCKER_OPERATION_COMPLETE", events[-1]
    sid = events[-1]["payload"]["service_id"]
    assert "private-wrong" not in service_names(client)
    assert rn_git_dirs() == before
    assert_no_secret(node_proc, GIT_PASSWORD)
    delete_service(client, docker_client, sid)


def test_from_git_bad_input_and_failed_build(client: ApiClient, ws: ClientConnection,
                                             docker_client: docker.DockerClient,
                                             git_server: GitServer, busybox_image: str) -> None:
    for bad in ("not a url", "/srv/repo.git", "file:///srv/repo.git", "ftp://x/y.git"):
        resp = client.post(f"{DOCKER}/from-git", json={"service_name": "g", "repo_url": bad})
        assert resp.status_code == 400 and "Invalid repository URL" in resp.json()["error"], bad
    assert client.post(f"{DOCKER}/from-git", json={"repo_url": "http://x/y"}).status_code == 400
    marker = uuid.uuid4().hex
    url = git_server.create_repo("broken", {
        "Dockerfile": f"FROM {busybox_image}\nLABEL rn-marker={marker}\nRUN exit 4\n"})
    before = rn_git_dirs()
    resp = client.post(f"{DOCKER}/from-git", json={"service_name": "broken", "repo_url": url})
    events = operation_events(ws, resp.json()["operation_id"])
    assert events[-1]["type"] == "DOCKER_OPERATION_ERROR"
    assert "non-zero code: 4" in events[-1]["payload"]["message"]
    assert "broken" not in service_names(client)
    assert docker_client.images.list(all=True, filters={"label": f"rn-marker={marker}"}) == []
    assert rn_git_dirs() == before


def test_validate_git(client: ApiClient, git_server: GitServer,
                      auth_git_server: GitServer) -> None:
    public = git_server.create_repo("validate-me", {"f": "x"})
    private = auth_git_server.create_repo("validate-private", {"f": "x"})

    def check(body: dict[str, Any]) -> dict[str, Any]:
        resp = client.post(f"{DOCKER}/validate-git", json=body)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    assert check({"repo_url": public}) == {"valid": True}
    assert check({"repo_url": private, "username": GIT_USER, "password": GIT_PASSWORD}) == {
        "valid": True}
    wrong = check({"repo_url": private, "username": GIT_USER, "password": "nope-123"})
    assert wrong == {"valid": False, "error": "authentication failed: invalid credentials"}
    missing = check({"repo_url": git_server.url("no-such-repo")})
    assert missing["valid"] is False and missing["error"].startswith("repository not found")
    down = check({"repo_url": closed_port_url()})
    assert down["valid"] is False and down["error"].startswith("host unreachable")
    not_url = check({"repo_url": "definitely not a url"})
    assert not_url["valid"] is False and not_url["error"].startswith("not a URL")
    assert client.post(f"{DOCKER}/validate-git", json={}).status_code == 400
    assert client.post(f"{DOCKER}/validate-git", json={"repo_url": ""}).status_code == 400


def test_docker_endpoints_on_missing_or_other_services(client: ApiClient) -> None:
    assert client.get(f"{DOCKER}/abc/details").json() == {"error": "Invalid service ID"}
    missing = client.get(f"{DOCKER}/999999/details")
    assert missing.status_code == 404 and missing.json() == {"error": "Docker service not found"}
    other = client.post("/api/services", json={"type": "standalone", "name": "not-docker",
                                               "endpoint": "x"}).json()["service"]["id"]
    try:
        assert client.get(f"{DOCKER}/{other}/details").status_code == 404
        assert client.get(f"{DOCKER}/{other}/interfaces/suggested").status_code == 404
        assert client.put(f"{DOCKER}/{other}/config", json={"cmd": "x"}).status_code == 404
        # The original web UI edits any service's interfaces through the Docker route.
        edited = client.put(f"{DOCKER}/{other}/interfaces", json={"interfaces": [
            {"interface_type": "STDIN", "path": "", "description": "in"},
            {"interface_type": "STDOUT", "path": "", "description": "out"}]})
        assert edited.json() == {"success": True, "message": "Interfaces updated successfully"}
        types = [i["interface_type"] for i in
                 client.get(f"/api/services/{other}/interfaces").json()["interfaces"]]
        assert types == ["STDIN", "STDOUT"]
        assert client.put(f"{DOCKER}/999999/interfaces", json={"interfaces": []}).json() == {
            "error": "Docker service not found"}
    finally:
        client.delete(f"/api/services/{other}")
