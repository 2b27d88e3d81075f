"""Real node processes on loopback, and a real Ed25519 client for their HTTPS API."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import psutil
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """``remote-network start`` as a child process with its own data dir and ports."""

    def __init__(self, data_dir: Path, *, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.api_port = free_port()
        self.http_port = free_port()
        self.quic_port = free_udp_port()
        self.dht_port = free_udp_port()
        self.extra_args = list(extra_args or [])
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "node.log"

    @property
    def args(self) -> list[str]:
        return [
            sys.executable, "-m", "orchestrator.cli", "start",
            "--data-dir", str(self.data_dir),
            "--api-host", "127.0.0.1", "--api-port", str(self.api_port),
            "--http-port", str(self.http_port),
            "--p2p-host", "127.0.0.1",
            "--quic-port", str(self.quic_port), "--dht-port", str(self.dht_port),
            *self.extra_args,
        ]

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, *, wait: float = 60.0) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_ready(wait)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.http_url}/api/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"node not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        """The node process's resident memory, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, *, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL the whole process group if it lingers. Returns the exit code.

        Also ends what a node killed earlier left running on its data dir (its embedded
        PostgreSQL runs in a process group of its own)."""
        if self.proc is None:
            self.reap_leftovers()
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.returncode
        self.proc = None
        self.reap_leftovers()
        return code

    def reap_leftovers(self) -> int:
        """Kill processes whose command line names this node's data dir; returns how many."""
        marker = str(self.data_dir)
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or ()):
                    found.append(proc)
        for proc in found:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(found, timeout=5)
        return len(found)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def seed(self) -> bytes:
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "key", "export", "--data-dir",
             str(self.data_dir)], cwd=REPO, capture_output=True, text=True, check=True,
            env={**os.environ, **self.env})
        return bytes.fromhex(out.stdout.strip())

    def client(self, *, seed: bytes | None = None) -> ApiClient:
        """A logged-in client over HTTPS, signing with the node's own key by default."""
        client = ApiClient(self.https_url, nacl.signing.SigningKey(seed or self.seed()))
        client.login()
        return client


def insecure_tls() -> ssl.SSLContext:
    """TLS for the node's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ApiClient:
    """An Ed25519 client: signs the challenge, keeps the JWT, talks HTTPS."""

    def __init__(self, base_url: str, key: nacl.signing.SigningKey) -> None:
        self.base_url = base_url
        self.key = key
        self.token: str | None = None
        self.http = httpx.Client(base_url=base_url, verify=False, timeout=60)

    def sign_challenge(self) -> dict[str, str]:
        challenge = self.http.get("/api/auth/challenge").json()["challenge"]
        signature = self.key.sign(bytes.fromhex(challenge)).signature
        return {"challenge": challenge, "signature": signature.hex(),
                "public_key": bytes(self.key.verify_key).hex()}

    def login(self) -> str:
        resp = self.http.post("/api/auth/ed25519", json=self.sign_challenge())
        resp.raise_for_status()
        self.token = resp.json()["token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self.token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.put(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.delete(path, **kwargs)

    def ws_url(self, path: str = "/api/ws") -> str:
        return self.base_url.replace("https://", "wss://") + f"{path}?token={self.token}"

    def websocket(self, *, open_timeout: float = 30.0) -> ClientConnection:
        """A synchronous WebSocket to the node (a context manager), logged in."""
        return connect(self.ws_url(), ssl=insecure_tls(), open_timeout=open_timeout)

    def close(self) -> None:
        self.http.close()


def side_by_side(nodes: list[NodeProcess], action: str) -> None:
    """Start or stop nodes side by side (each takes seconds, mostly waiting)."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda n: getattr(n, action)(), nodes))


@contextlib.contextmanager
def running_node(data_dir: Path, **kwargs: Any) -> Iterator[NodeProcess]:
    node = NodeProcess(data_dir, **kwargs).start()
    try:
        yield node
    finally:
        node.stop()


@contextlib.contextmanager
def logged_in(node: NodeProcess) -> Iterator[tuple[NodeProcess, ApiClient]]:
    """Start the node (already made, so a test may prepare its data dir first) and log in;
    the client is closed and the node stopped afterwards."""
    node.start()
    try:
        client = node.client()
        try:
            yield node, client
        finally:
            client.close()
    finally:
        node.stop()
