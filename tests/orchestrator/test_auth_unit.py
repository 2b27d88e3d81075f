"""Challenges and tokens, with the clock stepped instead of waited for."""

from __future__ import annotations

import jwt
import nacl.signing
import pytest

from network.identity import Identity
from orchestrator.auth import Authenticator, ChallengeStore, load_or_create_secret
from orchestrator.errors import AuthFailed, InvalidInput


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _login(auth: Authenticator, key: nacl.signing.SigningKey) -> tuple[str, str]:
    challenge = auth.issue_challenge()
    sig = key.sign(bytes.fromhex(challenge)).signature.hex()
    return auth.login(challenge, sig, bytes(key.verify_key).hex())


@pytest.fixture
def setup(tmp_path) -> tuple[Authenticator, Identity, Clock]:  # type: ignore[no-untyped-def]
    identity, clock = Identity.generate(), Clock()
    auth = Authenticator(identity, b"s" * 32, authorized_keys_path=tmp_path / "authorized_keys",
                         token_ttl=100, challenge_ttl=10, clock=clock)
    return auth, identity, clock


def test_challenge_single_use_and_expiry() -> None:
    store = ChallengeStore(ttl=10)
    c = store.issue(now=0)
    assert store.consume(c, now=5) is True
    assert store.consume(c, now=5) is False
    late = store.issue(now=0)
    assert store.consume(late, now=10.5) is False
    assert store.consume("unknown", now=0) is False


def test_challenge_store_is_bounded() -> None:
    store = ChallengeStore(ttl=10, max_pending=3)
    first = store.issue(now=0)
    for i in range(3):
        store.issue(now=i + 1)
    assert store.consume(first, now=4) is False


def test_login_issues_token_for_own_key(setup) -> None:  # type: ignore[no-untyped-def]
    auth, identity, clock = setup
    token, peer_id = _login(auth, identity.signing_key)
    assert peer_id == identity.peer_id
    claims = auth.check_token(token)
    assert claims.peer_id == identity.peer_id
    assert claims.expires_at - claims.issued_at == 100
    clock.now += 101
    with pytest.raises(AuthFailed):
        auth.check_token(token)


def test_login_refuses_expired_challenge(setup) -> None:  # type: ignore[no-untyped-def]
    auth, identity, clock = setup
    challenge = auth.issue_challenge()
    clock.now += 11
    sig = identity.sign(bytes.fromhex(challenge)).hex()
    with pytest.raises(AuthFailed, match="Invalid or expired challenge"):
        auth.login(challenge, sig, identity.public_key_hex)


def test_authorized_keys(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    auth, _identity, _clock = setup
    friend = nacl.signing.SigningKey.generate()
    with pytest.raises(AuthFailed, match="not authorized"):
        _login(auth, friend)
    (tmp_path / "authorized_keys").write_text(f"laptop {bytes(friend.verify_key).hex()}\n")
    _token, peer_id = _login(auth, friend)
    assert peer_id != auth.identity.peer_id


def test_login_input_errors(setup) -> None:  # type: ignore[no-untyped-def]
    auth, identity, _clock = setup
    challenge = auth.issue_challenge()
    with pytest.raises(InvalidInput):
        auth.login(challenge, "zz", identity.public_key_hex)
    with pytest.raises(InvalidInput):
        auth.login(challenge, "00" * 64, "00" * 31)


def test_tokens_from_elsewhere_are_refused(setup) -> None:  # type: ignore[no-untyped-def]
    auth, identity, clock = setup
    now = int(clock.now)
    claims = {"peer_id": identity.peer_id, "iss": "remote-network-node", "iat": now,
              "exp": now + 50}
    for token in (jwt.encode(claims, b"other" * 8, algorithm="HS256"),
                  jwt.encode({**claims, "iss": "someone"}, b"s" * 32, algorithm="HS256"),
                  jwt.encode({k: v for k, v in claims.items() if k != "peer_id"}, b"s" * 32,
                             algorithm="HS256"),
                  jwt.encode(claims, b"s" * 64, algorithm="HS512"),
                  "", "a.b.c"):
        with pytest.raises(AuthFailed):
            auth.check_token(token)
    assert auth.check_token(jwt.encode(claims, b"s" * 32, algorithm="HS256")).peer_id


def test_secret_is_created_once_and_private(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "jwt.secret"
    first = load_or_create_secret(path)
    assert len(first) == 32 and load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
