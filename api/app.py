"""The FastAPI application: routers, the edge middlewares, CORS and the error shapes.

Middlewares, outermost first: CORS (answers preflights), ``api.gate.Gate`` (rate limits of the
login endpoints, the bearer token, before any body is read), ``api.body_limit.BodyLimit``
(body size, read time, JSON numbers), then the routes; with ``web_ui_dir`` set, what no route
matched falls through to ``api.web_ui.WebUI``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import api.routes
from api.body_limit import BodyLimit
from api.deps import NodeParts, describe_validation
from api.errors import error_payload
from api.gate import Gate
from api.rate_limit import RateLimiter
from api.web_ui import WebUI
from orchestrator.auth import TokenClaims
from orchestrator.config import Settings
from orchestrator.errors import DomainError

log = logging.getLogger("remote_network.api")

_HTTP_MESSAGES = {
    400: "Invalid request body",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    500: "Internal server error",
    503: "Service unavailable",
}


def error_response(request: Request, status: int, message: str) -> JSONResponse:
    """``{"error": ...}``, or ``{"success": false, "error": ...}`` on the auth endpoints."""
    return JSONResponse(error_payload(request.url.path, message), status_code=status)


def create_app(node: NodeParts) -> FastAPI:
    """The app over ``node``'s parts (``api.deps`` reads each from ``app.state.node``)."""
    app = FastAPI(
        title="Remote Network Node",
        version="0.1.0",
        description="REST API of a Remote Network Node. Log in with GET /api/auth/challenge "
        "and POST /api/auth/ed25519, then send `Authorization: Bearer <token>`.",
        docs_url="/docs",
    )
    app.state.node = node
    add_edge_middlewares(app, node.settings, node.auth.check_token)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
    )

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(request, exc.status_code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 400, describe_validation(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else None
        if message is None or message == _default_phrase(exc.status_code):
            message = _HTTP_MESSAGES.get(exc.status_code, "Request failed")
        return error_response(request, exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s crashed", request.method, request.url.path)
        return error_response(request, 500, "Internal server error")

    for router in route_modules():
        app.include_router(router)
    if node.settings.web_ui_dir is not None:
        # Only what no route matched reaches the UI; ``/api`` and non-reads keep the 404.
        app.router.default = WebUI(node.settings.web_ui_dir, app.router.default)
    return app


CHALLENGE_PATH = "/api/auth/challenge"
LOGIN_PATH = "/api/auth/ed25519"
# The login body is a challenge, a signature and a key in hex: a few hundred bytes.
LOGIN_BODY_MAX_BYTES = 16 * 1024


def public_paths(app: FastAPI) -> set[str]:
    """The paths anyone may call without a token: login, health and the API docs."""
    docs = {app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url}
    return {CHALLENGE_PATH, LOGIN_PATH, "/api/health", *(p for p in docs if p)}


def add_edge_middlewares(app: FastAPI, settings: Settings,
                         check_token: Callable[[str], TokenClaims]) -> None:
    """The gate and the body limit, from the node's settings (added before CORS: inside it)."""
    public = public_paths(app)

    def limiter() -> RateLimiter:
        return RateLimiter(burst=settings.auth_rate_burst,
                           per_second=settings.auth_rate_per_second)

    app.add_middleware(
        BodyLimit,
        max_bytes=settings.http_body_max_bytes,
        read_timeout=settings.http_body_timeout_seconds,
        # Nothing public takes more than the login body.
        path_caps={path: min(LOGIN_BODY_MAX_BYTES, settings.http_body_max_bytes)
                   for path in public},
    )
    app.add_middleware(
        Gate,
        check_token=check_token,
        public_paths=public,
        rate_limits={("GET", CHALLENGE_PATH): limiter(), ("POST", LOGIN_PATH): limiter()},
        open_reads=settings.web_ui_dir is not None,
    )


def route_modules() -> list[APIRouter]:
    """Every ``router`` in ``api/routes``; a new module needs no wiring.

    Routers are matched in module-name order, except that a module may set ``ROUTE_PRIORITY``
    (default 100; lower comes first) to be matched before the others: requests are matched
    against the routes one by one, so a hot path with no overlap with other modules' paths
    (the node status every dashboard polls) is cheaper at the front.
    """
    modules = []
    for info in pkgutil.iter_modules(api.routes.__path__):
        module = importlib.import_module(f"api.routes.{info.name}")
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            modules.append((int(getattr(module, "ROUTE_PRIORITY", 100)), info.name, router))
    return [router for _priority, _name, router in sorted(modules, key=lambda m: m[:2])]


def _default_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
