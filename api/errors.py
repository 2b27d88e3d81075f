"""The error bodies of the reference, shared by the app's handlers and the ASGI middlewares."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.types import Scope, Send

AUTH_PREFIX = "/api/auth/"


def error_payload(path: str, message: str) -> dict[str, Any]:
    """``{"error": ...}``, or ``{"success": false, "error": ...}`` on the auth endpoints."""
    if path.startswith(AUTH_PREFIX):
        return {"success": False, "error": message}
    return {"error": message}


async def send_error(scope: Scope, send: Send, status: int, message: str, *, close: bool = False,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer an HTTP request from an ASGI middleware, in the reference's error shape.

    ``close``: ask the server to drop the connection after the answer, for a request whose body
    is left unread (the server would otherwise read and discard the rest of it).
    """
    body = json.dumps(error_payload(scope.get("path", ""), message)).encode()
    raw_headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), *headers]
    if close:
        raw_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
