"""What a request may carry: a bounded body, read in bounded time, with numbers the node accepts.

A pure ASGI middleware, so nothing is read before it decides. A request whose Content-Length is
over the cap is answered 413 at once, its body unread; a streamed (chunked) body is counted and
cut off at the cap (413); a body not received within ``read_timeout`` seconds is answered 408.
A JSON body (``application/json`` or ``+json``) whose numbers are not finite or overflow the
signed 64-bit integers (``api.strict_json``) is answered 400, for every route. The body read
here is handed on to the app, which reads it as usual. Bodiless requests pass untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import send_error
from api.strict_json import UnsafeNumber, loads

TOO_LARGE = "Request body too large"
TOO_SLOW = "Request body not received in time"
UNSAFE_NUMBER = "Invalid request body: {}"


class BodyTooLarge(Exception):
    pass


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def declared_length(scope: Scope) -> int | None:
    """The Content-Length of the request, if it gives a valid one."""
    raw = header(scope, b"content-length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)


def has_body(scope: Scope) -> bool:
    """Whether the request says a body follows (a Content-Length over 0, or chunked)."""
    length = declared_length(scope)
    return bool(length) or header(scope, b"transfer-encoding") is not None


def is_json(scope: Scope) -> bool:
    raw = header(scope, b"content-type")
    if raw is None:
        return False
    kind = raw.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/")
                                           and kind.endswith(b"+json"))


async def read_capped(receive: Receive, cap: int) -> bytes | None:
    """The whole body, or None when the client went away; ``BodyTooLarge`` past ``cap`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def unsafe_number(body: bytes) -> str | None:
    """Why a JSON body's numbers are refused, or None (malformed JSON is left to the app)."""
    try:
        loads(body)
    except UnsafeNumber as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class BodyLimit:
    """Caps request bodies at ``max_bytes`` (or the smaller cap ``path_caps`` gives a path)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, read_timeout: float,
                 path_caps: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.path_caps = dict(path_caps or {})

    def cap(self, path: str) -> int:
        return self.path_caps.get(path, self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        cap = self.cap(scope.get("path", ""))
        length = declared_length(scope)
        if length is not None and length > cap:
            await send_error(scope, send, 413, TOO_LARGE, close=True)
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await read_capped(receive, cap)
        except BodyTooLarge:
            await send_error(scope, send, 413, TOO_LARGE, close=True)
            return
        except TimeoutError:
            await send_error(scope, send, 408, TOO_SLOW, close=True)
            return
        if body is None:
            return
        if body and is_json(scope):
            reason = unsafe_number(body)
            if reason is not None:
                await send_error(scope, send, 400, UNSAFE_NUMBER.format(reason))
                return
        await self.app(scope, _replay(body, receive), send)

