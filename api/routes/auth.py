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
    """Without ``public_key`` (the original UI) the answer's ``peer_id`` is this node's, which
    that UI takes as the node it talks to; the token still names the key that signed."""
    token, peer_id = auth.login(body.challenge, body.signature, body.public_key)
    if body.public_key is None:
        peer_id = auth.identity.peer_id
    return LoginAnswer(token=token, peer_id=peer_id)


@router.get("/health")
def health(control: Control) -> Health:
    return Health(status="ok", peer_id=control.peer_id)
