"""Relay sessions (relay mode) and relay candidates (NAT mode).

The handlers run on the event loop (``async``): the relay state they touch lives there.
Outside its mode, a route answers 403 (its dependency refuses before the body is validated)."""

from __future__ import annotations

from fastapi import Depends, status

from api.deps import NatRelay, RelaySessions, require_token
from api.responses import RelayCandidate, RelaySession, Success
from api.routing import Router
from api.schemas import RelayPeerRequest

router = Router(prefix="/api/relay", tags=["relay"], dependencies=[Depends(require_token)])


@router.get("/sessions")
async def sessions(relay: RelaySessions) -> list[RelaySession]:
    return [RelaySession.model_validate(s) for s in relay.sessions()]


@router.post("/sessions/{session_id}/disconnect")
async def disconnect_session(session_id: str, relay: RelaySessions) -> Success:
    relay.disconnect(session_id)
    return Success(message="Session disconnected successfully")


@router.post("/sessions/{session_id}/blacklist")
async def blacklist_session(session_id: str, relay: RelaySessions) -> Success:
    relay.blacklist_session(session_id)
    return Success(message="Peer blacklisted and disconnected successfully")


@router.get("/candidates")
async def candidates(nat: NatRelay) -> list[RelayCandidate]:
    return [RelayCandidate.model_validate(c) for c in nat.candidates()]


@router.post("/connect", status_code=status.HTTP_202_ACCEPTED)
async def connect(body: RelayPeerRequest, nat: NatRelay) -> Success:
    nat.connect(body.peer_id)
    return Success(message="Relay connection initiated")


@router.post("/disconnect")
async def disconnect(nat: NatRelay) -> Success:
    nat.disconnect()
    return Success(message="Disconnected from relay successfully")


@router.post("/prefer")
async def prefer(body: RelayPeerRequest, nat: NatRelay) -> Success:
    nat.prefer(body.peer_id)
    return Success(message="Preferred relay set successfully")
