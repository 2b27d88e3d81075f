"""The peer blacklist."""

from __future__ import annotations

from fastapi import Depends

from api.deps import NodeDep, require_token
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
def list_blacklist(node: NodeDep) -> BlacklistList:
    entries = node.blacklist.list()
    return BlacklistList(blacklist=[BlacklistEntryPublic.model_validate(e) for e in entries],
                         peer_ids=[e.peer_id for e in entries], total=len(entries))


@router.post("")
def add(body: BlacklistAdd, node: NodeDep) -> BlacklistAdded:
    entry = node.blacklist.add(body.peer_id, body.reason)
    return BlacklistAdded(peer_id=entry.peer_id, reason=entry.reason,
                          message="Peer added to blacklist successfully")


@router.get("/check")
def check(node: NodeDep, peer_id: str | None = None) -> BlacklistCheck:
    if not peer_id:
        raise InvalidInput("Missing peer_id query parameter")
    peer_id = validate_peer_id(peer_id)
    return BlacklistCheck(peer_id=peer_id, is_blacklisted=node.blacklist.contains(peer_id))


@router.delete("")
def remove_without_id() -> Message:
    raise InvalidInput("Missing peer ID")


@router.delete("/{peer_id}")
def remove(peer_id: str, node: NodeDep) -> Message:
    node.blacklist.remove(peer_id)
    return Message(message="Peer removed from blacklist successfully")
