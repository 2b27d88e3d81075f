"""Relay sessions (relay mode) and relay candidates (NAT mode).

The handlers run on the event loop (``async``): the relay state they touch lives there."""

from __future__ import annotations

from fastapi import Depends, status

from api.deps import NodeDep, require_token
from api.responses import RelayCandidate, RelaySession, Success
from api.routing import Router
from api.schemas import RelayPeerRequest


def _relay_mode(node: NodeDep) -> None:
    node.relay_server()


def _nat_mode(node: NodeDep) -> None:
    node.relay_client()


router = Router(prefix="/api/relay", tags=["relay"], dependencies=[Depends(require_token)])
RELAY_ONLY = [Depends(_relay_mode)]
NAT_ONLY = [Depends(_nat_mode)]


@router.get("/sessions", dependencies=RELAY_ONLY)
async def sessions(node: NodeDep) -> list[RelaySession]:
    return [RelaySession.model_validate(s) for s in node.relay_server().sessions()]


@router.post("/sessions/{session_id}/disconnect", dependencies=RELAY_ONLY)
async def disconnect_session(session_id: str, node: NodeDep) -> Success:
    node.relay_server().disconnect(session_id)
    return Success(message="Session disconnected successfully")


@router.post("/sessions/{session_id}/blacklist", dependencies=RELAY_ONLY)
async def blacklist_session(session_id: str, node: NodeDep) -> Success:
    node.relay_server().blacklist_session(session_id)
    return Success(message="Peer blacklisted and disconnected successfully")


@router.get("/candidates", dependencies=NAT_ONLY)
async def candidates(node: NodeDep) -> list[RelayCandidate]:
    return [RelayCandidate.model_validate(c) for c in node.relay_client().candidates()]


@router.post("/connect", status_code=status.HTTP_202_ACCEPTED, dependencies=NAT_ONLY)
async def connect(body: RelayPeerRequest, node: NodeDep) -> Success:
    node.relay_client().connect(body.peer_id)
    return Success(message="Relay connection initiated")


@router.post("/disconnect", dependencies=NAT_ONLY)
async def disconnect(node: NodeDep) -> Success:
    node.relay_client().disconnect()
    return Success(message="Disconnected from relay successfully")


@router.post("/prefer", dependencies=NAT_ONLY)
async def prefer(body: RelayPeerRequest, node: NodeDep) -> Success:
    node.relay_client().prefer(body.peer_id)
    return Success(message="Preferred relay set successfully")
