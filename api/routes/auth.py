"""Login: Ed25519 challenge and signature, answered with a JWT."""

from __future__ import annotations

from api.deps import Auth, Control
from api.responses import Challenge, Health, LoginAnswer
from api.routing import Router
from api.schemas import LoginRequest

router = Router(prefix="/api", tags=["auth"])


@router.get("/auth/challenge")
def challenge(auth: Auth) -> Challenge:
    return Challenge(challenge=auth.issue_challenge(), expires_in=auth.challenges.ttl)


@router.post("/auth/ed25519")
def login(body: LoginRequest, auth: Auth) -> LoginAnswer:
    token, peer_id = auth.login(body.challenge, body.signature, body.public_key)
    return LoginAnswer(token=token, peer_id=peer_id)


@router.get("/health")
def health(control: Control) -> Health:
    return Health(status="ok", peer_id=control.peer_id)
