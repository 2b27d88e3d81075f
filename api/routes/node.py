"""This node: status, capabilities, restart."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from api.deps import NodeDep, require_token

router = APIRouter(prefix="/api/node", tags=["node"], dependencies=[Depends(require_token)])


@router.get("/status")
def status(node: NodeDep) -> dict[str, Any]:
    return node.status()


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
