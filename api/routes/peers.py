"""Peers: the peers of our topic, and a peer's capabilities."""

from __future__ import annotations

from fastapi import Depends

from api.deps import Discovery, require_token
from api.responses import Message, PeerCapabilities, PeerList
from api.routing import Router
from orchestrator.errors import InvalidInput

router = Router(prefix="/api/peers", tags=["peers"], dependencies=[Depends(require_token)])


@router.get("")
async def list_peers(discovery: Discovery) -> PeerList:
    return PeerList.model_validate(discovery.list_peers())


@router.get("/{peer_id}/capabilities")
async def peer_capabilities(peer_id: str, discovery: Discovery) -> PeerCapabilities:
    return PeerCapabilities.model_validate(discovery.peer_capabilities(peer_id))


@router.get("//capabilities", include_in_schema=False)
async def peer_capabilities_without_id() -> Message:
    raise InvalidInput("peer_id is required")
