"""Login: Ed25519 challenge and signature, answered with a JWT."""

from __future__ import annotations

from typing import Any

from api.deps import NodeDep
from api.routing import Router
from api.schemas import LoginRequest

router = Router(prefix="/api", tags=["auth"])


@router.get("/auth/challenge")
def challenge(node: NodeDep) -> dict[str, Any]:
    return {"challenge": node.auth.issue_challenge(),
            "expires_in": node.auth.challenges.ttl}


@router.post("/auth/ed25519")
def login(body: LoginRequest, node: NodeDep) -> dict[str, Any]:
    token, peer_id = node.auth.login(body.challenge, body.signature, body.public_key)
    return {"success": True, "token": token, "peer_id": peer_id}


@router.get("/health")
def health(node: NodeDep) -> dict[str, Any]:
    return {"status": "ok", "peer_id": node.peer_id}
