"""A stranger against the HTTP API of a real node process: what it sends is bounded.

Huge bodies, with or without a token, are refused before they are held; a flood of login
challenges is rate-limited per address while the owner can still log in; numbers that are not
finite or overflow are refused and the lists they would have broken still answer 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.node_process import ApiClient, NodeProcess, insecure_tls

MiB = 1024 * 1024
ATTACK_BYTES = 300 * MiB
# The node may grow by this much while under attack (its body cap is 8 MiB).
RSS_SLACK = 64 * MiB
TIMEOUT = 60.0
BURST = 20
STRANGER = "127.0.0.2"  # loopback, but another address than the owner's 127.0.0.1


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    # Login attempts: a burst of BURST per address, then (for the test's length) no more.
    proc = NodeProcess(tmp_path_factory.mktemp("bounds"), env={
        "RN_PREFECT_WARMUP": "false", "RN_AUTH_RATE_BURST": str(BURST),
        "RN_AUTH_RATE_PER_SECOND": "0.0001"}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def owner(node: NodeProcess) -> Iterator[ApiClient]:
    client = node.client()
    try:
        yield client
    finally:
        client.close()


@dataclass
class Outcome:
    status: int | None  # None: the node dropped the connection before its answer was read
    body: bytes
    sent: int  # body bytes the client managed to hand to its socket


def lazy_body(total: int, *, chunked: bool, size: int = 16 * 1024) -> Iterator[bytes]:
    """``total`` bytes of body in pieces of ``size``, made as they are sent (never all held)."""
    piece = b"x" * size
    framed = f"{size:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    for _ in range(total // size):
        yield framed
    if chunked:
        yield b"0\r\n\r\n"


def post_stream(node: NodeProcess, path: str, headers: dict[str, str],
                body: Iterator[bytes]) -> Outcome:
    """POST over real TLS, sending the body until the node answers (or drops the connection).

    Before each piece the client looks for an answer, and stops sending once there is one, as
    a well-behaved client does; the answer is then read whole.
    """
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    raw = socket.create_connection(("127.0.0.1", node.api_port), timeout=TIMEOUT)
    with insecure_tls().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sent, early = 0, b""
        try:
            sock.sendall(head.encode())
            for piece in body:
                answer = answered(sock)
                if answer is not None:
                    early = answer
                    break
                sock.sendall(piece)
                sent += len(piece)
        except OSError:  # dropped by the node (or it stopped reading): what it answered follows
            pass
        return Outcome(*read_answer(sock, early), sent)


def answered(sock: ssl.SSLSocket) -> bytes | None:
    """What the node has answered so far without waiting (b"": it closed), None: nothing yet.

    Readable TLS records may carry no answer (TLS 1.3 session tickets after the handshake).
    """
    if not sock.pending() and not select.select([sock], [], [], 0)[0]:
        return None
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except ssl.SSLWantReadError:
        return None
    finally:
        sock.settimeout(TIMEOUT)


def read_answer(sock: ssl.SSLSocket, data: bytes) -> tuple[int | None, bytes]:
    """The status and body of the HTTP answer on ``sock`` (``data``: its start, already read);
    None when there is none."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, content = data.partition(b"\r\n\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        while len(content) < int(fields.get(b"content-length", b"0")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            content += chunk
        return int(head.split()[1]), content
    return None, b""


def assert_unharmed(node: NodeProcess, owner: ApiClient, before: int) -> None:
    assert node.rss() - before < RSS_SLACK
    assert owner.get("/api/services").status_code == 200
    assert owner.get("/api/node/status").status_code == 200


def test_huge_post_without_token_is_401_unread(node: NodeProcess,
                                                     owner: ApiClient) -> None:
    before = node.rss()
    out = post_stream(node, "/api/services",
                            {"Content-Type": "application/json",
                             "Transfer-Encoding": "chunked"},
                            lazy_body(ATTACK_BYTES, chunked=True))
    assert out.status == 401 and json.loads(out.body) == {"error": "Unauthorized"}
    assert out.sent < ATTACK_BYTES // 4
    assert_unharmed(node, owner, before)


@pytest.mark.parametrize("token", [False, True])
def test_declared_huge_length_is_refused_at_once(node: NodeProcess, owner: ApiClient,
                                                       token: bool) -> None:
    before = node.rss()
    headers = {"Content-Type": "application/json", "Content-Length": str(10 * 1024**3)}
    if token:
        headers["Authorization"] = f"Bearer {owner.token}"
    out = post_stream(node, "/api/workflows", headers,
                            lazy_body(ATTACK_BYTES, chunked=False))
    if token:
        assert out.status == 413
        assert json.loads(out.body) == {"error": "Request body too large"}
    else:
        assert out.status == 401
    assert out.sent < ATTACK_BYTES // 4
    assert_unharmed(node, owner, before)


def test_huge_streamed_post_with_token_is_cut_off_at_the_cap(node: NodeProcess,
                                                                   owner: ApiClient) -> None:
    before = node.rss()
    out = post_stream(node, "/api/workflows",
                            {"Content-Type": "application/json",
                             "Transfer-Encoding": "chunked",
                             "Authorization": f"Bearer {owner.token}"},
                            lazy_body(ATTACK_BYTES, chunked=True))
    # The node reads up to its cap (8 MiB), answers 413 and closes the connection.
    assert out.status == 413
    assert json.loads(out.body) == {"error": "Request body too large"}
    assert out.sent < ATTACK_BYTES // 4
    assert_unharmed(node, owner, before)


def stranger_http(node: NodeProcess) -> httpx.Client:
    return httpx.Client(base_url=node.https_url, verify=False, timeout=30,
                        transport=httpx.HTTPTransport(local_address=STRANGER, verify=False))


def test_challenge_flood_is_429_and_the_owner_still_logs_in(node: NodeProcess,
                                                            owner: ApiClient) -> None:
    before = node.rss()
    with stranger_http(node) as c:
        codes = [c.get("/api/auth/challenge").status_code for _ in range(3000)]
        refused = c.get("/api/auth/challenge")
        logins = [c.post("/api/auth/ed25519", json={"challenge": "00" * 32,
                                                    "signature": "00" * 64,
                                                    "public_key": "00" * 32}).status_code
                  for _ in range(BURST + 10)]
    # Some of the burst may have been spent by other tests of this module from the same address.
    assert codes.count(200) <= BURST and codes[-1] == 429
    assert set(codes) <= {200, 429}
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json() == {"success": False, "error": "Too many requests: try again later"}
    assert logins.count(401) <= BURST and logins[-1] == 429 and set(logins) <= {401, 429}
    # The owner, from its own address, is not locked out; the node did not grow.
    assert owner.http.post("/api/auth/ed25519", json=owner.sign_challenge()).status_code == 200
    assert_unharmed(node, owner, before)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/services",
     b'{"type": "docker", "name": "inf-price", "endpoint": "e", "pricing_amount": 1e999}'),
    ("POST", "/api/services",
     b'{"type": "docker", "name": "nan-price", "endpoint": "e", "pricing_amount": NaN}'),
    ("POST", "/api/services",
     b'{"type": "docker", "name": "big-int", "endpoint": "e", '
     b'"pricing_amount": 99999999999999999999}'),
    ("POST", "/api/workflows", b'{"name": "nested", "description": "d", '
     b'"definition": {"nodes": [{"config": {"x": [1, -Infinity]}}]}}'),
    ("PUT", "/api/services/{id}", b'{"pricing_amount": -1e400}'),
])
def test_non_finite_numbers_are_400_and_lists_stay_200(owner: ApiClient, method: str,
                                                        path: str, body: bytes) -> None:
    created = owner.post("/api/services", json={"type": "docker", "name": "finite",
                                                "endpoint": "e", "pricing_amount": 1.5})
    assert created.status_code in (200, 201), created.text
    service_id = created.json()["service"]["id"]
    resp = owner.request(method, path.format(id=service_id), content=body,
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("Invalid request body: numbers must be finite")
    listed = owner.get("/api/services")
    assert listed.status_code == 200
    services = listed.json()["services"]
    assert {s["name"] for s in services}.isdisjoint({"inf-price", "nan-price", "big-int"})
    assert next(s for s in services if s["id"] == service_id)["pricing_amount"] == 1.5
    assert owner.get("/api/workflows").status_code == 200
    owner.delete(f"/api/services/{service_id}")


async def test_websocket_numbers_and_size_are_bounded(node: NodeProcess,
                                                      owner: ApiClient) -> None:
    before = node.rss()
    async with connect(owner.ws_url(), ssl=insecure_tls(), open_timeout=TIMEOUT,
                       max_size=None) as ws:
        await ws.send('{"type": "FILE_UPLOAD_START", "payload": {"file_size": 1e999}}')
        reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert reply["type"] == "ERROR"
        assert "numbers must be finite" in reply["payload"]["error"]
        # A message over the node's 6 MiB is refused by closing the socket (1009).
        await ws.send("x" * (7 * MiB))
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(100):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert_unharmed(node, owner, before)


def test_a_damaged_key_file_stops_the_node_with_a_clear_error(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", env={"RN_PREFECT_WARMUP": "false"})
    node.data_dir.mkdir(parents=True)
    (node.data_dir / "identity.key").write_bytes(b"")
    try:
        with pytest.raises(RuntimeError, match="node exited with 2") as info:
            node.start(wait=60)
        assert "identity key" in str(info.value) and "is empty" in str(info.value)
        assert "Traceback" not in str(info.value)
        assert (node.data_dir / "identity.key").read_bytes() == b""
    finally:
        node.stop()
