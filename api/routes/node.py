"""This node: status, capabilities, restart."""

from __future__ import annotations

import asyncio

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from api.deps import Capabilities, Control, node_control_of, require_token
from api.responses import NodeCapabilities, NodeStatus, Success, SystemCapabilities
from api.routing import Router

router = Router(prefix="/api/node", tags=["node"], dependencies=[Depends(require_token)])
# Matched before the other modules' routes: /api/node/* overlaps no other path, and the status
# is polled by every dashboard (see api.app.route_modules).
ROUTE_PRIORITY = 0


@router.get("/status", response_model=NodeStatus)
async def status(request: Request) -> JSONResponse:
    # The hot path of every dashboard, kept lean: on the loop, not in the thread pool (the
    # status is in memory; the registry caches the service counts); the node's control read
    # from the app rather than through one more dependency; the dict, plain JSON already, sent
    # as is rather than through FastAPI's generic encoder, which would cost more than
    # everything else here.
    return JSONResponse(node_control_of(request).status())


@router.get("/capabilities")
async def capabilities(probe: Capabilities) -> NodeCapabilities:
    system = await asyncio.to_thread(probe.get)
    return NodeCapabilities(docker_available=system["has_docker"],
                            docker_version=system["docker_version"],
                            system=SystemCapabilities.model_validate(system))


@router.post("/restart")
async def restart(control: Control) -> Success:
    control.restart()
    return Success(message="Node restart initiated successfully")
