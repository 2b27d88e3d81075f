"""The peer blacklist."""

from __future__ import annotations

from fastapi import Depends

from api.deps import Blacklist, require_token
from api.responses import (
    BlacklistAdded,
    BlacklistCheck,
    BlacklistEntryPublic,
    BlacklistList,
    Message,
)
from api.routing import Router
from api.schemas import BlacklistAdd
from orchestrator.blacklist import validate_peer_id
from orchestrator.errors import InvalidInput

router = Router(prefix="/api/blacklist", tags=["blacklist"],
                dependencies=[Depends(require_token)])


@router.get("")
def list_blacklist(blacklist: Blacklist) -> BlacklistList:
    entries = blacklist.list()
    return BlacklistList(blacklist=[BlacklistEntryPublic.model_validate(e) for e in entries],
                         peer_ids=[e.peer_id for e in entries], total=len(entries))


@router.post("")
def add(body: BlacklistAdd, blacklist: Blacklist) -> BlacklistAdded:
    entry = blacklist.add(body.peer_id, body.reason)
    return BlacklistAdded(peer_id=entry.peer_id, reason=entry.reason,
                          message="Peer added to blacklist successfully")


@router.get("/check")
def check(blacklist: Blacklist, peer_id: str | None = None) -> BlacklistCheck:
    if not peer_id:
        raise InvalidInput("Missing peer_id query parameter")
    peer_id = validate_peer_id(peer_id)
    return BlacklistCheck(peer_id=peer_id, is_blacklisted=blacklist.contains(peer_id))


@router.delete("")
def remove_without_id() -> Message:
    raise InvalidInput("Missing peer ID")


@router.delete("/{peer_id}")
def remove(peer_id: str, blacklist: Blacklist) -> Message:
    blacklist.remove(peer_id)
    return Message(message="Peer removed from blacklist successfully")
