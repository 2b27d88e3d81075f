"""This node: status, capabilities, restart."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from api.deps import NodeDep, require_token
from api.routing import Router
from orchestrator.node import Node

router = Router(prefix="/api/node", tags=["node"], dependencies=[Depends(require_token)])
# Matched before the other modules' routes: /api/node/* overlaps no other path, and the status
# is polled by every dashboard (see api.app.route_modules).
ROUTE_PRIORITY = 0


@router.get("/status")
async def status(request: Request) -> JSONResponse:
    # The hot path of every dashboard, kept lean: on the loop, not in the thread pool (the
    # status is in memory; the registry caches the service counts); the node read from the app
    # rather than through one more dependency; the dict, plain JSON already, sent as is rather
    # than through FastAPI's generic encoder, which would cost more than everything else here.
    node: Node = request.app.state.node
    return JSONResponse(node.status())


@router.get("/capabilities")
async def capabilities(node: NodeDep) -> dict[str, Any]:
    system = await asyncio.to_thread(node.capabilities.get)
    return {
        "docker_available": system["has_docker"],
        "docker_version": system["docker_version"],
        "system": system,
    }


@router.post("/restart")
async def restart(node: NodeDep) -> dict[str, Any]:
    node.restart()
    return {"success": True, "message": "Node restart initiated successfully"}
