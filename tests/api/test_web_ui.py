"""The built web UI served at / beside the API: files, history fallback, priority, traversal."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.app import route_modules
from orchestrator.cli import main
from orchestrator.config import Settings
from tests.api.helpers import raw_client
from tests.support.node_process import NodeProcess, running_node

INDEX = b"<!doctype html><title>ui</title><div id=app></div>"
APP_JS = b"console.log('app');\n"
SECRET = b"TOP-SECRET-OUTSIDE-THE-UI-FOLDER"


@pytest.fixture(scope="module")
def ui_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Path]]:
    base = tmp_path_factory.mktemp("web_ui")
    dist = base / "dist"
    (dist / "assets" / "sub").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "app.js").write_bytes(APP_JS)
    (dist / "assets" / "sub" / "inner.css").write_bytes(b"body{}")
    (base / "config").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    os.symlink(base / "secret.txt", dist / "leak.txt")
    os.symlink(base, dist / "outside")
    # ``--web-ui``: the name for ``--web-ui-dir``.
    with running_node(base / "node", extra_args=["--web-ui", str(dist)]) as node:
        yield node, base


def raw_get(node: NodeProcess, path: str) -> tuple[int, bytes]:
    """A request line sent as written (httpx would normalise dot segments away)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_index_and_asset(ui_node: tuple[NodeProcess, Path]) -> None:
    node, _ = ui_node
    with raw_client(node) as http:
        index = http.get("/")
        assert index.status_code == 200
        assert index.content == INDEX
        assert index.headers["content-type"].startswith("text/html")
        asset = http.get("/assets/app.js")
        assert asset.status_code == 200
        assert asset.content == APP_JS
        assert asset.headers["content-type"].startswith("text/javascript")
        head = http.head("/assets/app.js")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(APP_JS))


def test_history_fallback(ui_node: tuple[NodeProcess, Path]) -> None:
    node, _ = ui_node
    with raw_client(node) as http:
        for path in ("/workflows/3", "/services", "/assets/missing.js"):
            resp = http.get(path)
            assert resp.status_code == 200, path
            assert resp.content == INDEX, path
        # Not a read: no fallback, and the gate still asks for a token.
        assert http.post("/workflows/3", json={}).status_code == 401


def test_api_keeps_priority_and_the_gate(ui_node: tuple[NodeProcess, Path]) -> None:
    node, _ = ui_node
    with raw_client(node) as anonymous:
        assert anonymous.get("/api/node/status").status_code == 401
        assert anonymous.get("/api/nonexistent").status_code == 401
        assert anonymous.get("/api/health").status_code == 200
        assert anonymous.get("/openapi.json").json()["info"]["title"]
        docs = anonymous.get("/docs")
        assert docs.status_code == 200 and docs.content != INDEX
    client = node.client()
    try:
        assert client.get("/api/node/status").status_code == 200
        for method in ("GET", "POST"):
            resp = client.request(method, "/api/nonexistent")
            assert resp.status_code == 404, method
            assert resp.json() == {"error": "Not found"}
            assert INDEX not in resp.content
        assert client.get("/api").json() == {"error": "Not found"}
        with client.websocket() as ws:
            assert ws.protocol.state.name == "OPEN"
    finally:
        client.close()


def test_every_route_outside_the_ui() -> None:
    """Reads outside /api skip the token: no route of the API may live there."""
    paths = [route.path for router in route_modules() for route in router.routes]
    assert paths
    assert all(path.startswith("/api/") for path in paths), paths


@pytest.mark.parametrize("path", [
    "/../config",
    "/../secret.txt",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2e%2e/config",
    "/assets/..%2f..%2fconfig",
    "/assets/%2e%2e/%2e%2e/secret.txt",
    "/..%5c..%5cconfig",
    "/leak.txt",
    "/outside/secret.txt",
    "/outside/config",
    "/index.html%00.js",
])
def test_no_traversal(ui_node: tuple[NodeProcess, Path], path: str) -> None:
    node, _ = ui_node
    status, body = raw_get(node, path)
    assert status == 404, (path, status)
    assert SECRET not in body
    assert b"root:" not in body


def test_no_listing(ui_node: tuple[NodeProcess, Path]) -> None:
    node, _ = ui_node
    for path in ("/assets", "/assets/", "/assets/sub/", "//etc/passwd", "/etc/passwd"):
        status, body = raw_get(node, path)
        assert status == 200, path
        assert body == INDEX, path


def test_refuses_a_folder_without_index(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "dist"
    empty.mkdir()
    with pytest.raises(ValidationError, match=r"no index\.html"):
        Settings(data_dir=tmp_path / "node", web_ui_dir=empty)
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(data_dir=tmp_path / "node", web_ui_dir=tmp_path / "missing")
    assert main(["start", "--data-dir", str(tmp_path / "node"), "--web-ui-dir", str(empty)]) == 2
    assert "has no index.html" in capsys.readouterr().err
    (empty / "index.html").write_text("<html></html>")
    assert Settings(data_dir=tmp_path / "node", web_ui_dir=empty).web_ui_dir == empty.resolve()


def test_web_ui_is_off_by_default(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).web_ui_dir is None
