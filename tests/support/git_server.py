"""A real git server on 127.0.0.1 for tests: smart HTTP through ``git http-backend``.

    server = GitServer(tmp_path, username="alice", password="s3cret").start()
    url = server.create_repo("app", {"Dockerfile": "FROM scratch\n"}, branch="main")
    ...
    server.stop()

Repositories are bare repos under ``root``, made from a dict of files (path -> text or bytes).
With a username and password every request needs HTTP basic auth (401 with ``WWW-Authenticate``
otherwise). ``closed_port_url()`` gives a URL on which nothing listens, for "host unreachable".
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.node_process import free_port

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, **_GIT_ENV}, timeout=60)


def make_bare_repo(path: Path, files: dict[str, str | bytes], *, branch: str = "main",
                   extra_branches: dict[str, dict[str, str | bytes]] | None = None) -> Path:
    """A bare repository at ``path`` with one commit of ``files`` on ``branch`` (its HEAD)."""
    with tempfile.TemporaryDirectory(prefix="rn-gitsrc-") as tmp:
        work = Path(tmp)
        _git("init", "-q", "-b", branch, str(work))
        _commit(work, files)
        for name, more in (extra_branches or {}).items():
            _git("checkout", "-q", "-b", name, cwd=work)
            _commit(work, more)
            _git("checkout", "-q", branch, cwd=work)
        if path.exists():
            shutil.rmtree(path)
        _git("clone", "-q", "--bare", str(work), str(path))
    _git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=path)
    return path


def _commit(work: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "--allow-empty", "-m", "test commit", cwd=work)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _authorized(self) -> bool:
        creds = self.server.credentials
        if creds is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == creds

    def _serve(self) -> None:
        self.server.requests += 1
        if not self._authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self._read_body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": self.server.credentials[0] if self.server.credentials else "",
            "GIT_HTTP_MAX_REQUEST_BUFFER": "100M",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True,
                              timeout=60)
        out = proc.stdout
        ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := out.find(sep)) >= 0]
        cut, width = min(ends) if ends else (len(out), 0)
        head, payload = out[:cut], out[cut + width:]
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key.strip(), value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], root: Path,
                 credentials: tuple[str, str] | None) -> None:
        super().__init__(addr, _Handler)
        self.root = root
        self.credentials = credentials
        self.requests = 0


class GitServer:
    """Serves the bare repositories under ``root`` at ``http://127.0.0.1:<port>/<name>.git``."""

    def __init__(self, root: Path, *, username: str | None = None,
                 password: str | None = None) -> None:
        self.root = root
        self.username = username
        self.password = password
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> GitServer:
        self.root.mkdir(parents=True, exist_ok=True)
        creds = (self.username, self.password) if self.username is not None else None
        self._server = _Server(("127.0.0.1", 0), self.root, creds)  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        """How many HTTP requests the server has answered (to prove a test talked to it)."""
        return self._server.requests if self._server else 0

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def create_repo(self, name: str, files: dict[str, str | bytes], *, branch: str = "main",
                    extra_branches: dict[str, dict[str, str | bytes]] | None = None) -> str:
        """Create (or replace) ``<name>.git`` holding ``files``; returns its clone URL."""
        make_bare_repo(self.root / f"{name}.git", files, branch=branch,
                       extra_branches=extra_branches)
        return self.url(name)


def closed_port_url(name: str = "repo") -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/{name}.git"


@contextlib.contextmanager
def git_servers(root: Path, *, username: str, password: str) -> Iterator[
        tuple[GitServer, GitServer]]:
    """A public server and one needing ``username``/``password``, both stopped on exit."""
    public = GitServer(root / "public").start()
    try:
        private = GitServer(root / "private", username=username, password=password).start()
        try:
            yield public, private
        finally:
            private.stop()
    finally:
        public.stop()


GIT_USER = "gituser"
GIT_PASSWORD = "git-Pa55-word-7f3a"


@pytest.fixture(name="git_server", scope="session")
def git_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A public git server for the session (import this function to use it in a module)."""
    root = tmp_path_factory.mktemp("git-public")
    server = GitServer(root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="auth_git_server", scope="session")
def auth_git_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A git server needing ``GIT_USER``/``GIT_PASSWORD`` (basic auth) for every request."""
    root = tmp_path_factory.mktemp("git-private")
    server = GitServer(root, username=GIT_USER, password=GIT_PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
