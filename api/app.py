"""The FastAPI application: routers, CORS and the error shapes of the reference."""

from __future__ import annotations

import importlib
import logging
import pkgutil

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import api.routes
from api.deps import describe_validation
from orchestrator.errors import DomainError
from orchestrator.node import Node

log = logging.getLogger("remote_network.api")

_HTTP_MESSAGES = {
    400: "Invalid request body",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    500: "Internal server error",
    503: "Service unavailable",
}


def error_response(request: Request, status: int, message: str) -> JSONResponse:
    """``{"error": ...}``, or ``{"success": false, "error": ...}`` on the auth endpoints."""
    body: dict[str, object] = {"error": message}
    if request.url.path.startswith("/api/auth/"):
        body = {"success": False, "error": message}
    return JSONResponse(body, status_code=status)


def create_app(node: Node) -> FastAPI:
    app = FastAPI(
        title="Remote Network Node",
        version="0.1.0",
        description="REST API of a Remote Network Node. Log in with GET /api/auth/challenge "
        "and POST /api/auth/ed25519, then send `Authorization: Bearer <token>`.",
        docs_url="/docs",
    )
    app.state.node = node
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
    return app


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
