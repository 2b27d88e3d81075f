"""This node: status, capabilities, restart."""

from __future__ import annotations

import asyncio

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from api.deps import NodeDep, require_token
from api.responses import NodeCapabilities, NodeStatus, Success
from api.routing import Router
from orchestrator.node import Node

router = Router(prefix="/api/node", tags=["node"], dependencies=[Depends(require_token)])
# Matched before the other modules' routes: /api/node/* overlaps no other path, and the status
# is polled by every dashboard (see api.app.route_modules).
ROUTE_PRIORITY = 0


@router.get("/status", response_model=NodeStatus)
async def status(request: Request) -> JSONResponse:
    # The hot path of every dashboard, kept lean: on the loop, not in the thread pool (the
    # status is in memory; the registry caches the service counts); the node read from the app
    # rather than through one more dependency; the dict, plain JSON already, sent as is rather
    # than through FastAPI's generic encoder, which would cost more than everything else here.
    node: Node = request.app.state.node
    return JSONResponse(node.status())


@router.get("/capabilities")
async def capabilities(node: NodeDep) -> NodeCapabilities:
    system = await asyncio.to_thread(node.capabilities.get)
    return NodeCapabilities(docker_available=system["has_docker"],
                            docker_version=system["docker_version"], system=system)


@router.post("/restart")
async def restart(node: NodeDep) -> Success:
    node.restart()
    return Success(message="Node restart initiated successfully")
