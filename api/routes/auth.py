"""Login: Ed25519 challenge and signature, answered with a JWT."""

from __future__ import annotations

from api.deps import NodeDep
from api.responses import Challenge, Health, LoginAnswer
from api.routing import Router
from api.schemas import LoginRequest

router = Router(prefix="/api", tags=["auth"])


@router.get("/auth/challenge")
def challenge(node: NodeDep) -> Challenge:
    return Challenge(challenge=node.auth.issue_challenge(), expires_in=node.auth.challenges.ttl)


@router.post("/auth/ed25519")
def login(body: LoginRequest, node: NodeDep) -> LoginAnswer:
    token, peer_id = node.auth.login(body.challenge, body.signature, body.public_key)
    return LoginAnswer(token=token, peer_id=peer_id)


@router.get("/health")
def health(node: NodeDep) -> Health:
    return Health(status="ok", peer_id=node.peer_id)
