"""The APIRouter our route modules use."""

from __future__ import annotations

from fastapi import APIRouter


class Router(APIRouter):
    """An APIRouter whose routes declare their answers.

    Each handler's return annotation is a model of ``api.responses`` (or ``response_model=``
    names it, where the handler sends a ready ``Response``), so ``/openapi.json`` describes
    every answer and FastAPI checks each answer against it.
    """
