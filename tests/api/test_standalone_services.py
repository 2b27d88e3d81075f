"""Standalone services from a local executable and from git, against a real node process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.git_server import (  # noqa: F401
    GIT_PASSWORD,
    GIT_USER,
    GitServer,
    auth_git_server_fixture,
    closed_port_url,
    git_server_fixture,
)
from tests.support.node_process import ApiClient, NodeProcess

SCRIPT = "#!/bin/sh\necho \"hello $1\"\n"


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "hello.sh"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return path


def snapshot(node: NodeProcess, client: ApiClient) -> tuple[list[int], list[str]]:
    ids = [s["id"] for s in client.get("/api/services").json()["services"]]
    services_dir = node.data_dir / "services"
    entries = sorted(p.name for p in services_dir.iterdir()) if services_dir.exists() else []
    return ids, entries


@pytest.fixture
def unchanged(node_proc: NodeProcess, client: ApiClient) -> Iterator[None]:
    """The test must leave the services list and the services dir as they were."""
    before = snapshot(node_proc, client)
    yield
    assert snapshot(node_proc, client) == before


def local(client: ApiClient, **body: Any) -> Any:
    return client.post("/api/services/standalone/from-local", json=body)


def test_from_local_details_and_delete(client: ApiClient, script: Path, tmp_path: Path) -> None:
    resp = local(client, service_name="hello", executable_path=str(script),
                 arguments=["--x", "y"], working_directory=str(tmp_path),
                 environment_variables={"A": "1"}, run_as_user="nobody:nogroup",
                 description="says hello", capabilities={"platform": "linux"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    service = body["service"]
    assert (service["service_type"], service["status"], service["name"]) == (
        "STANDALONE", "ACTIVE", "hello")
    assert [i["interface_type"] for i in body["suggested_interfaces"]] == [
        "STDIN", "STDOUT", "STDERR", "LOGS"]
    sid = service["id"]
    stored = client.get(f"/api/services/{sid}/interfaces").json()
    assert [i["interface_type"] for i in stored["interfaces"]] == ["STDIN", "STDOUT", "STDERR",
                                                                  "LOGS"]
    details = client.get(f"/api/services/standalone/{sid}/details").json()
    assert details["success"] is True
    assert details["details"]["executable_path"] == str(script)
    assert details["details"]["arguments"] == ["--x", "y"]
    assert details["details"]["working_directory"] == str(tmp_path)
    assert details["details"]["environment_variables"] == {"A": "1"}
    assert details["details"]["timeout_seconds"] == 300
    assert details["details"]["run_as_user"] == "nobody:nogroup"
    assert details["details"]["source"] == "local"
    assert details["service"]["id"] == sid
    # Its content digest: the executable's sha256, as any peer with the same file shows it.
    digest = "sha256:" + __import__("hashlib").sha256(script.read_bytes()).hexdigest()
    assert client.get(f"/api/services/{sid}").json()["service"]["content_digest"] == digest
    resp = client.delete(f"/api/services/standalone/{sid}")
    assert resp.json() == {"success": True, "message": "Service deleted successfully"}
    assert script.exists()  # a local source is never removed
    assert client.get(f"/api/services/standalone/{sid}/details").status_code == 404
    assert client.delete(f"/api/services/standalone/{sid}").status_code == 404


def test_from_local_custom_interfaces_and_timeout(client: ApiClient) -> None:
    resp = local(client, service_name="wc", executable_path="/usr/bin/wc", timeout_seconds=42,
                 custom_interfaces=[{"interface_type": "STDIN"}, {
                     "interface_type": "MOUNT", "path": "/data/in", "mount_function": "INPUT"}])
    assert resp.status_code == 200, resp.text
    sid = resp.json()["service"]["id"]
    try:
        ifaces = client.get(f"/api/services/{sid}/interfaces").json()["interfaces"]
        assert [(i["interface_type"], i["path"]) for i in ifaces] == [("STDIN", ""),
                                                                     ("MOUNT", "/data/in")]
        details = client.get(f"/api/services/standalone/{sid}/details").json()["details"]
        assert details["timeout_seconds"] == 42
    finally:
        client.delete(f"/api/services/{sid}")


@pytest.mark.parametrize("body, message", [
    ({"executable_path": "bin/sh"}, "must be an absolute path"),
    ({"executable_path": "/nonexistent/tool"}, "does not exist"),
    ({"executable_path": "/tmp"}, "not a regular file"),
    ({"executable_path": "{plain}"}, "not executable"),
    ({"executable_path": "/usr/bin/wc", "working_directory": "/no/such/dir"}, "does not exist"),
    ({"executable_path": "/usr/bin/wc", "run_as_user": "no-such-user-xyz"}, "does not exist"),
    ({"executable_path": "/usr/bin/wc", "run_as_user": "nobody:no-such-group"},
     "group 'no-such-group'"),
    ({"executable_path": "/usr/bin/wc", "run_as_user": "a:b:c"}, "user:group"),
    ({"executable_path": "/usr/bin/wc", "timeout_seconds": 0}, "timeout_seconds"),
    ({"executable_path": "/usr/bin/wc", "arguments": "not a list"}, "arguments"),
    ({"executable_path": "/usr/bin/wc", "custom_interfaces": [{"interface_type": "BOGUS"}]},
     "interface_type"),
    ({}, "executable_path"),
])
def test_from_local_bad_input(client: ApiClient, unchanged: None, tmp_path: Path,
                              body: dict[str, Any], message: str) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program")
    plain.chmod(0o644)
    if body.get("executable_path") == "{plain}":
        body = {**body, "executable_path": str(plain)}
    resp = local(client, service_name="bad", **body)
    assert resp.status_code == 400
    assert message in resp.json()["error"]


def test_from_local_missing_name(client: ApiClient, unchanged: None) -> None:
    resp = client.post("/api/services/standalone/from-local",
                       json={"executable_path": "/usr/bin/wc"})
    assert resp.status_code == 400
    assert "service_name" in resp.json()["error"]


def test_details_and_delete_of_other_types(client: ApiClient) -> None:
    other = client.post("/api/services", json={"type": "docker", "name": "not-standalone",
                                               "endpoint": "x"}).json()["service"]["id"]
    try:
        for method, path in (("GET", f"/api/services/standalone/{other}/details"),
                             ("DELETE", f"/api/services/standalone/{other}"),
                             ("POST", f"/api/services/standalone/{other}/finalize")):
            resp = client.request(method, path, json={"executable_path": "x"})
            assert resp.status_code == 400, (method, path)
            assert "not a standalone service" in resp.json()["error"]
        assert client.get(f"/api/services/{other}").status_code == 200
    finally:
        client.delete(f"/api/services/{other}")
    assert client.get("/api/services/standalone/abc/details").json() == {
        "error": "Invalid service ID"}
    assert client.get("/api/services/standalone/999999/details").status_code == 404


# -- from git ----------------------------------------------------------------------------------
def from_git(client: ApiClient, **body: Any) -> Any:
    return client.post("/api/services/standalone/from-git", json=body)


def test_from_git_with_build(node_proc: NodeProcess, client: ApiClient,
                             git_server: GitServer) -> None:
    url = git_server.create_repo("tool", {
        "src/tool.sh": "#!/bin/sh\necho built-tool\n",
        "build.sh": "set -e\nmkdir -p out\ncp src/tool.sh out/tool\nchmod +x out/tool\n"
                    "echo build-done\n",
        "data/readme": "x"})
    resp = from_git(client, service_name="git-tool", repo_url=url, executable_path="out/tool",
                    build_command="sh build.sh", working_directory="data",
                    arguments=["-v"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True and body["service"]["status"] == "ACTIVE"
    sid = body["service"]["id"]
    details = client.get(f"/api/services/standalone/{sid}/details").json()["details"]
    assert details["source"] == "git"
    exe = Path(details["executable_path"])
    assert exe.is_relative_to(node_proc.data_dir / "services")
    assert exe.name == "tool" and os.access(exe, os.X_OK)
    assert details["working_directory"].endswith("/data")
    assert details["arguments"] == ["-v"]
    clone_dir = exe.parent.parent
    assert (clone_dir / "build.sh").exists()
    assert "password" not in (clone_dir / ".git" / "config").read_text()
    client.delete(f"/api/services/standalone/{sid}")
    assert not clone_dir.exists()  # the node's own copy goes with the service


def test_from_git_private_repo_with_credentials(client: ApiClient,
                                                auth_git_server: GitServer) -> None:
    url = auth_git_server.create_repo("private-tool", {"run": "#!/bin/sh\necho private\n"})
    resp = from_git(client, service_name="private", repo_url=url, executable_path="run",
                    build_command="chmod +x run", username=GIT_USER, password=GIT_PASSWORD)
    assert resp.status_code == 200, resp.text
    sid = resp.json()["service"]["id"]
    try:
        details = client.get(f"/api/services/standalone/{sid}/details").json()["details"]
        config = (Path(details["executable_path"]).parent / ".git" / "config").read_text()
        assert GIT_PASSWORD not in config
        assert GIT_PASSWORD not in str(client.get("/api/services").json())
    finally:
        client.delete(f"/api/services/{sid}")


def test_from_git_failures_leave_nothing(node_proc: NodeProcess, client: ApiClient,
                                         git_server: GitServer, auth_git_server: GitServer,
                                         unchanged: None) -> None:
    url = git_server.create_repo("failing", {
        "tool": "#!/bin/sh\n", "fail.sh": "echo compiling\necho 'error: it broke' >&2\nexit 3\n",
        "outside": "#!/bin/sh\n"})
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"build_command": "sh fail.sh", "executable_path": "tool"}, 500, "exit code 3"),
        ({"executable_path": "tool"}, 400, "not executable"),
        ({"executable_path": "missing", "build_command": "true"}, 400, "does not exist"),
        ({"executable_path": "../../etc/passwd"}, 400, "'..'"),
        ({"executable_path": "/bin/sh"}, 400, "relative"),
        ({"executable_path": "link", "build_command": "ln -s /bin/sh link"}, 400,
         "leads outside"),
        ({"executable_path": "tool", "run_as_user": "no-such-user-xyz"}, 400, "does not exist"),
        ({"executable_path": "tool", "branch": "no-such-branch"}, 500, "branch not found"),
    ]
    for extra, status, message in cases:
        resp = from_git(client, service_name="bad-git", repo_url=url, **extra)
        assert resp.status_code == status, (extra, resp.text)
        assert message in resp.json()["error"], (extra, resp.text)
    fail = from_git(client, service_name="x", repo_url=url, executable_path="tool",
                    build_command="sh fail.sh").json()["error"]
    assert "error: it broke" in fail and "compiling" in fail
    resp = from_git(client, service_name="x", repo_url="not a url", executable_path="tool")
    assert resp.status_code == 400 and "Invalid repository URL" in resp.json()["error"]
    resp = from_git(client, service_name="x", repo_url=closed_port_url(), executable_path="t")
    assert resp.status_code == 500 and "unreachable" in resp.json()["error"]
    private = auth_git_server.create_repo("locked", {"t": "x"})
    resp = from_git(client, service_name="x", repo_url=private, executable_path="t",
                    username=GIT_USER, password="wrong-password-123")
    assert resp.status_code == 500 and "authentication failed" in resp.json()["error"]
    assert "wrong-password-123" not in resp.text
    assert "wrong-password-123" not in node_proc.log()
