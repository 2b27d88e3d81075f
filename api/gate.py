"""Who may send a request in: checked from the request line and headers, before any body.

A pure ASGI middleware in front of the body limit and the app. For each HTTP request:
- a route with a rate limit (the login endpoints) takes a token from the client address's
  bucket, or is answered 429 with ``Retry-After``;
- every route but the public ones (login, health, the API docs) needs a valid bearer token in
  the ``Authorization`` header, or is answered 401 without its body being read;
- with ``open_reads=True`` (a web UI is served), GET and HEAD requests for paths outside
  ``/api`` need no token either: they only reach the UI's static files, which load before
  login.
Refused requests that announced a body are answered with ``Connection: close``, so the server
drops the connection instead of reading the rest. The WebSocket handshake carries its token in
``?token=`` and is checked by its route before it is accepted; it has no body.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from api.body_limit import has_body, header
from api.errors import send_error
from api.rate_limit import RateLimiter, client_key
from api.web_ui import is_api_path
from orchestrator.errors import AuthFailed

TOO_MANY = "Too many requests: try again later"
UNAUTHORIZED = "Unauthorized"
# Where a verified request's token claims are kept (``request.state.token_claims``).
CLAIMS = "token_claims"


def bearer(raw: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if raw is None:
        return None
    scheme, _, token = raw.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Gate:
    def __init__(self, app: ASGIApp, *, check_token: Callable[[str], object],
                 public_paths: Iterable[str],
                 rate_limits: Mapping[tuple[str, str], RateLimiter] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 open_reads: bool = False) -> None:
        self.app = app
        self.check_token = check_token
        self.public_paths = frozenset(public_paths)
        self.rate_limits = dict(rate_limits or {})
        self.clock = clock
        self.open_reads = open_reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limiter = self.rate_limits.get((scope.get("method", ""), path))
        if limiter is not None:
            client = scope.get("client")
            wait = limiter.check(client_key(client[0] if client else None), self.clock())
            if wait:
                retry = str(max(1, math.ceil(wait))).encode()
                await send_error(scope, send, 429, TOO_MANY, close=has_body(scope),
                                 headers=[(b"retry-after", retry)])
                return
        if not self._public(scope, path) and not self._authorized(scope):
            await send_error(scope, send, 401, UNAUTHORIZED, close=has_body(scope))
            return
        await self.app(scope, receive, send)

    def _public(self, scope: Scope, path: str) -> bool:
        if path in self.public_paths:
            return True
        return (self.open_reads and scope.get("method") in ("GET", "HEAD")
                and not is_api_path(path))

    def _authorized(self, scope: Scope) -> bool:
        token = bearer(header(scope, b"authorization"))
        if token is None:
            return False
        try:
            claims = self.check_token(token)
        except AuthFailed:
            return False
        # The route's dependency reads the claims from here rather than verifying again.
        scope.setdefault("state", {})[CLAIMS] = claims
        return True
