"""The APIRouter our route modules use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.datastructures import DefaultPlaceholder


class Router(APIRouter):
    """An APIRouter whose routes have no response model unless one is given.

    Handlers return plain dicts shaped by ``api.schemas``. FastAPI would otherwise take the
    return annotation (``dict[str, Any]``) as a response model and validate every response
    against it, through the thread pool for sync handlers: a cost on every request for nothing.
    """

    def add_api_route(self, path: str, endpoint: Callable[..., Any], *,
                      response_model: Any = None, **kwargs: Any) -> None:
        if isinstance(response_model, DefaultPlaceholder):
            response_model = None
        super().add_api_route(path, endpoint, response_model=response_model, **kwargs)
