"""Owner login: single-use Ed25519 challenges and HS256 JWTs.

The challenge store and token checks take ``now`` so they can be tested without waiting.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from network.identity import (
    Identity,
    IdentityError,
    load_authorized_keys,
    peer_id_for,
    verify,
    write_private,
)
from orchestrator.errors import AuthFailed, InvalidInput

CHALLENGE_BYTES = 32
SECRET_BYTES = 32
ISSUER = "remote-network-node"
# Tokens whose signature has been checked, kept so a client's repeated requests skip the HMAC
# and JSON work; the expiry is still checked on every request.
VERIFIED_CACHE_SIZE = 1024
# A login without a public key tries the node's key and then the authorized ones, at most this
# many keys in all, so one request costs a bounded number of signature checks.
MAX_KEYS_TRIED = 256


@dataclass(frozen=True, slots=True)
class TokenClaims:
    peer_id: str
    issued_at: int
    expires_at: int


class ChallengeStore:
    """Random challenges, each valid once and for ``ttl`` seconds; at most ``max_pending``.

    All challenges live the same ``ttl``, so they expire in the order they were issued: expiry
    and eviction (of the oldest, when full) take from the front of an ordered dict, and a flood
    of requests costs the same per request however many are outstanding.
    """

    def __init__(self, ttl: int, *, max_pending: int = 10_000) -> None:
        self.ttl = ttl
        self.max_pending = max_pending
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def issue(self, now: float) -> str:
        challenge = secrets.token_hex(CHALLENGE_BYTES)
        with self._lock:
            self._expire(now)
            while len(self._pending) >= self.max_pending:
                self._pending.popitem(last=False)
            self._pending[challenge] = now + self.ttl
        return challenge

    def consume(self, challenge: str, now: float) -> bool:
        """True once for a live challenge; False for an unknown, used or expired one."""
        with self._lock:
            expires = self._pending.pop(challenge, None)
        return expires is not None and now <= expires

    def _expire(self, now: float) -> None:
        while self._pending:
            oldest, expires = next(iter(self._pending.items()))
            if expires >= now:
                return
            del self._pending[oldest]


class SecretFileError(IdentityError):
    """The token secret's file is there but unreadable (empty, truncated or not hex)."""


def load_or_create_secret(path: Path) -> bytes:
    """The HS256 secret of the node's tokens, created (durably) on first use.

    A file that is there but empty or damaged is an error, never silently replaced: a new
    secret would quietly log every client out.
    """
    if path.exists():
        raw = path.read_bytes().strip()
        try:
            secret = bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            secret = b""
        if len(secret) < SECRET_BYTES:
            raise SecretFileError(
                f"the token secret {path} is empty or damaged ({len(raw)} bytes); restore it "
                f"from a backup, or delete it to make a new one (every token issued is then "
                f"refused)")
        return secret
    secret = secrets.token_bytes(SECRET_BYTES)
    write_private(path, secret.hex().encode())
    return secret


class Authenticator:
    def __init__(
        self,
        identity: Identity,
        secret: bytes,
        *,
        authorized_keys_path: Path | None = None,
        token_ttl: int = 24 * 3600,
        challenge_ttl: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self._secret = secret
        self._authorized_keys_path = authorized_keys_path
        self.token_ttl = token_ttl
        self.challenges = ChallengeStore(challenge_ttl)
        self.clock = clock
        self._verified: dict[str, TokenClaims] = {}

    def issue_challenge(self) -> str:
        return self.challenges.issue(self.clock())

    def allowed_keys(self) -> set[bytes]:
        keys = {self.identity.public_key}
        if self._authorized_keys_path is not None:
            keys |= load_authorized_keys(self._authorized_keys_path)
        return keys

    def login(self, challenge: str, signature_hex: str,
              public_key_hex: str | None = None) -> tuple[str, str]:
        """Check a signed challenge; return (token, peer_id of the key that signed).

        Without ``public_key_hex`` the signature is tried against the node's key, then each
        authorized key (at most ``MAX_KEYS_TRIED`` in all); the first that verifies signed it.
        """
        try:
            challenge_bytes = bytes.fromhex(challenge)
            signature = bytes.fromhex(signature_hex)
            public_key = None if public_key_hex is None else bytes.fromhex(public_key_hex)
        except ValueError as exc:
            raise InvalidInput("challenge, signature and public_key must be hex") from exc
        if (public_key is not None and len(public_key) != 32) or len(signature) != 64:
            raise InvalidInput("public_key must be 32 bytes and signature 64 bytes, hex-encoded")
        if not self.challenges.consume(challenge, self.clock()):
            raise AuthFailed("Invalid or expired challenge")
        if public_key is None:
            public_key = self._signer(challenge_bytes, signature)
            if public_key is None:
                raise AuthFailed("Authentication failed: bad signature")
        else:
            if public_key not in self.allowed_keys():
                raise AuthFailed("Authentication failed: key not authorized")
            if not verify(public_key, challenge_bytes, signature):
                raise AuthFailed("Authentication failed: bad signature")
        peer_id = peer_id_for(public_key)
        return self.issue_token(peer_id), peer_id

    def _signer(self, message: bytes, signature: bytes) -> bytes | None:
        """The allowed key (node's first, then authorized ones) whose signature this is."""
        own = self.identity.public_key
        others = sorted(self.allowed_keys() - {own})
        for key in [own, *others][:MAX_KEYS_TRIED]:
            if verify(key, message, signature):
                return key
        return None

    def issue_token(self, peer_id: str | None = None) -> str:
        now = int(self.clock())
        claims = {
            "peer_id": peer_id or self.identity.peer_id,
            "iss": ISSUER,
            "iat": now,
            "exp": now + self.token_ttl,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def check_token(self, token: str) -> TokenClaims:
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        if claims.expires_at < self.clock():
            raise AuthFailed("Unauthorized")
        return claims

    def _decode(self, token: str) -> TokenClaims:
        """The claims of a token signed with our secret (expiry not checked here)."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "iss", "peer_id"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise AuthFailed("Unauthorized") from exc
        try:
            return TokenClaims(str(claims["peer_id"]), int(claims["iat"]), int(claims["exp"]))
        except (TypeError, ValueError) as exc:
            raise AuthFailed("Unauthorized") from exc
