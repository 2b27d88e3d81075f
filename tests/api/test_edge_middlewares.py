"""The gate and the body limit as ASGI apps, driven with messages in memory (no sockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from api.body_limit import BodyLimit
from api.gate import Gate
from api.rate_limit import RateLimiter
from orchestrator.errors import AuthFailed

CAP = 1024


class App:
    """The app behind the middlewares: records what reached it and the body it read."""

    def __init__(self) -> None:
        self.calls = 0
        self.body = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """A request's messages, made lazily: ``chunks`` chunks of ``chunk`` bytes each."""

    def __init__(self, *, chunk: bytes = b"", chunks: int = 0, body: bytes | None = None,
                 stall: bool = False) -> None:
        self.parts = [body] if body is not None else None
        self.chunk, self.left, self.stall = chunk, chunks, stall
        self.received = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.stall:
            await asyncio.Event().wait()
        if self.parts is not None:
            body = self.parts.pop(0) if self.parts else b""
            self.received += len(body)
            return {"type": "http.request", "body": body, "more_body": False}
        if self.left <= 0:
            return {"type": "http.disconnect"}
        self.left -= 1
        self.received += len(self.chunk)
        return {"type": "http.request", "body": self.chunk, "more_body": self.left > 0}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def scope(path: str = "/api/services", *, method: str = "POST",
          headers: dict[str, str] | None = None, client: str = "192.0.2.1") -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": method, "path": path, "headers": raw,
            "client": (client, 40000)}


def limit(app: App, **kw: Any) -> BodyLimit:
    return BodyLimit(app, max_bytes=CAP, read_timeout=kw.pop("read_timeout", 30.0), **kw)


JSON = {"content-type": "application/json"}


async def test_declared_length_over_the_cap_is_413_unread() -> None:
    app, client = App(), Client(chunk=b"x" * 4096, chunks=10**6)
    await limit(app)(scope(headers={**JSON, "content-length": str(10**10)}),
                     client.receive, client.send)
    assert client.status == 413 and client.json == {"error": "Request body too large"}
    assert client.headers[b"connection"] == b"close"
    assert client.received == 0 and app.calls == 0


async def test_streamed_body_is_cut_off_at_the_cap() -> None:
    app, client = App(), Client(chunk=b"x" * 100, chunks=10**6)
    await limit(app)(scope(headers={"transfer-encoding": "chunked"}),
                     client.receive, client.send)
    assert client.status == 413 and app.calls == 0
    assert client.received <= CAP + 100


async def test_auth_paths_answer_in_the_auth_shape_and_have_their_own_cap() -> None:
    app, client = App(), Client(chunk=b"x" * 10, chunks=100)
    await limit(app, path_caps={"/api/auth/ed25519": 64})(
        scope("/api/auth/ed25519", headers={"transfer-encoding": "chunked"}),
        client.receive, client.send)
    assert client.status == 413
    assert client.json == {"success": False, "error": "Request body too large"}
    assert client.received <= 64 + 10


async def test_a_body_within_the_cap_reaches_the_app_whole() -> None:
    app, client = App(), Client(chunk=b"7" * 100, chunks=10)
    await limit(app)(scope(headers={"transfer-encoding": "chunked"}),
                     client.receive, client.send)
    assert client.status == 200 and app.body == b"7" * 1000


async def test_a_body_sent_too_slowly_is_408() -> None:
    app, client = App(), Client(stall=True)
    await limit(app, read_timeout=0.05)(scope(headers={"content-length": "10"}),
                                        client.receive, client.send)
    assert client.status == 408 and app.calls == 0


@pytest.mark.parametrize("body", [
    b'{"type": "docker", "name": "x", "pricing_amount": 1e999}',
    b'{"config": {"nested": [1, {"deep": NaN}]}}',
    b'{"a": -Infinity}',
    b'{"id": 9223372036854775808}',
])
async def test_unsafe_numbers_are_400_before_the_app(body: bytes) -> None:
    app, client = App(), Client(body=body)
    await limit(app)(scope(headers={**JSON, "content-length": str(len(body))}),
                     client.receive, client.send)
    assert client.status == 400 and app.calls == 0
    assert client.json["error"].startswith("Invalid request body: numbers must be finite")


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", b'{"a": '),  # malformed: the app answers it as it always has
    ("application/json; charset=utf-8", b'{"a": 1.5}'),
    ("application/merge-patch+json", b'{"a": 9223372036854775807}'),
    ("text/plain", b"NaN"),
])
async def test_other_bodies_reach_the_app(content_type: str, body: bytes) -> None:
    app, client = App(), Client(body=body)
    await limit(app)(scope(headers={"content-type": content_type,
                                    "content-length": str(len(body))}),
                     client.receive, client.send)
    assert client.status == 200 and app.body == body


def check_token(token: str) -> object:
    if token != "good":
        raise AuthFailed("Unauthorized")
    return object()


def gate(app: App, **kw: Any) -> Gate:
    return Gate(app, check_token=check_token, public_paths={"/api/health",
                                                            "/api/auth/challenge"}, **kw)


@pytest.mark.parametrize("authorization", [None, "Bearer bad", "Basic good", "Bearer "])
async def test_no_valid_token_is_401_and_the_body_is_never_read(
        authorization: str | None) -> None:
    app, client = App(), Client(chunk=b"x" * 4096, chunks=10**6)
    headers = {"transfer-encoding": "chunked"}
    if authorization is not None:
        headers["authorization"] = authorization
    await gate(app)(scope(headers=headers), client.receive, client.send)
    assert client.status == 401 and client.json == {"error": "Unauthorized"}
    assert client.headers[b"connection"] == b"close"
    assert client.received == 0 and app.calls == 0


async def test_a_valid_token_and_public_paths_pass() -> None:
    app = App()
    for path, headers in (("/api/services", {"authorization": "Bearer good"}),
                          ("/api/health", {})):
        client = Client(body=b"")
        await gate(app)(scope(path, method="GET", headers=headers), client.receive, client.send)
        assert client.status == 200
    assert app.calls == 2


async def test_rate_limited_route_is_429_per_address() -> None:
    app = App()
    now = [0.0]
    g = gate(app, rate_limits={("GET", "/api/auth/challenge"):
                               RateLimiter(burst=3, per_second=0.5)}, clock=lambda: now[0])

    async def get(address: str) -> Client:
        client = Client(body=b"")
        await g(scope("/api/auth/challenge", method="GET", client=address),
                client.receive, client.send)
        return client

    assert [(await get("192.0.2.1")).status for _ in range(5)] == [200, 200, 200, 429, 429]
    refused = await get("192.0.2.1")
    assert refused.json == {"success": False, "error": "Too many requests: try again later"}
    assert refused.headers[b"retry-after"] == b"2"
    assert (await get("192.0.2.2")).status == 200  # another address has its own bucket
    now[0] = 2.0
    assert (await get("192.0.2.1")).status == 200
    assert app.calls == 5


async def test_websocket_scopes_pass_to_their_route() -> None:
    seen: list[str] = []

    async def ws_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    client = Client()
    await Gate(ws_app, check_token=check_token, public_paths=set())(
        {"type": "websocket", "path": "/api/ws", "headers": []}, client.receive, client.send)
    await BodyLimit(ws_app, max_bytes=1, read_timeout=1)(
        {"type": "websocket", "path": "/api/ws", "headers": []}, client.receive, client.send)
    assert seen == ["websocket", "websocket"]
