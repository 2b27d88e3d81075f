"""Challenges and tokens, with the clock stepped instead of waited for; key and secret files."""

from __future__ import annotations

from pathlib import Path

import jwt
import nacl.signing
import pytest

from network.certs import CertificateError, ensure_self_signed
from network.identity import (
    Identity,
    IdentityError,
    encode_key_file,
    load_or_create,
    write_private,
)
from orchestrator.auth import Authenticator, ChallengeStore, SecretFileError, load_or_create_secret
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


def test_a_challenge_flood_keeps_the_store_bounded() -> None:
    store = ChallengeStore(ttl=300, max_pending=500)
    honest = store.issue(now=0)
    for i in range(20_000):
        store.issue(now=i / 1000)
    assert len(store) == 500
    assert store.consume(honest, now=21) is False  # evicted, oldest first
    # Expiry runs as challenges are issued: after the ttl, the flood's challenges are gone.
    store.issue(now=10_000)
    assert len(store) == 1


# -- key and secret files ---------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\n", b"abcd", b"zz" * 32, b"ab" * 16])
def test_a_damaged_secret_is_an_error_and_is_kept(tmp_path, content: bytes) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "jwt.secret"
    path.write_bytes(content)
    with pytest.raises(SecretFileError, match="empty or damaged"):
        load_or_create_secret(path)
    assert path.read_bytes() == content
    assert isinstance(SecretFileError("x"), IdentityError)  # the CLI reports it, no traceback


def _damaged_keys() -> list[bytes]:
    whole = encode_key_file(Identity.generate(), None)
    sealed = encode_key_file(Identity.generate(), "p")
    return [b"", b"  \n", whole[: len(whole) // 2], whole[:-3] + b'"}',
            whole.replace(b'"seed": "', b'"seed": "ab'), sealed[: len(sealed) - 20] + b'"}']


@pytest.mark.parametrize("case", range(6))
def test_a_damaged_identity_key_is_an_error_never_a_new_identity(tmp_path,  # type: ignore[no-untyped-def]
                                                                 case: int) -> None:
    content = _damaged_keys()[case]
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    sealed = b"sealed" in content
    with pytest.raises(IdentityError) as info:
        load_or_create(path, "p" if sealed else None)
    message = str(info.value)
    assert str(path) in message
    assert ("damaged" if sealed else "empty" if not content.strip() else "truncated") in message
    assert path.read_bytes() == content


def test_key_files_are_written_with_fsync_and_rename(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    identity, created = load_or_create(tmp_path / "identity.key", None)
    load_or_create_secret(tmp_path / "jwt.secret")
    cert, key = ensure_self_signed(tmp_path / "tls", common_name="rn-test")
    assert created
    # Each file's bytes (under its temporary name), then its directory, are synced.
    pid = os.getpid()
    assert [Path(p).name for p in synced] == [
        f".identity.key.{pid}.tmp", tmp_path.name, f".jwt.secret.{pid}.tmp", tmp_path.name,
        f".server.key.{pid}.tmp", "tls", f".server.crt.{pid}.tmp", "tls"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "identity.key", "jwt.secret", "server.crt", "server.key", "tls"]
    assert load_or_create(tmp_path / "identity.key", None)[0].peer_id == identity.peer_id
    assert ensure_self_signed(tmp_path / "tls", common_name="rn-test") == (cert, key)


def test_a_key_file_created_meanwhile_is_not_overwritten(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "identity.key"
    path.write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        write_private(path, b"mine", replace=False)
    assert path.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


@pytest.mark.parametrize("damaged", ["server.crt", "server.key"])
def test_a_damaged_tls_file_is_an_error_and_is_kept(tmp_path, damaged: str) -> None:  # type: ignore[no-untyped-def]
    ensure_self_signed(tmp_path, common_name="rn-test")
    (tmp_path / damaged).write_bytes(b"")
    with pytest.raises(CertificateError, match="empty"):
        ensure_self_signed(tmp_path, common_name="rn-test")
    assert (tmp_path / damaged).read_bytes() == b""


def _login_keyless(auth: Authenticator, key: nacl.signing.SigningKey) -> tuple[str, str]:
    challenge = auth.issue_challenge()
    return auth.login(challenge, key.sign(bytes.fromhex(challenge)).signature.hex())


def test_login_without_public_key_finds_the_signer(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    auth, identity, clock = setup
    friend, stranger = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    assert _login_keyless(auth, identity.signing_key)[1] == identity.peer_id
    with pytest.raises(AuthFailed, match="bad signature"):
        _login_keyless(auth, friend)
    (tmp_path / "authorized_keys").write_text(f"{bytes(friend.verify_key).hex()} laptop\n")
    token, peer_id = _login_keyless(auth, friend)
    assert peer_id != identity.peer_id and auth.check_token(token).peer_id == peer_id
    with pytest.raises(AuthFailed, match="bad signature"):
        _login_keyless(auth, stranger)
    challenge = auth.issue_challenge()
    clock.now += 11
    with pytest.raises(AuthFailed, match="expired"):
        auth.login(challenge, identity.signing_key.sign(bytes.fromhex(challenge)).signature.hex())


def test_login_without_public_key_tries_a_bounded_number_of_keys(  # type: ignore[no-untyped-def]
        setup, tmp_path, monkeypatch) -> None:
    import orchestrator.auth as auth_module

    auth, _identity, _clock = setup
    keys = [nacl.signing.SigningKey.generate() for _ in range(5)]
    (tmp_path / "authorized_keys").write_text(
        "".join(f"{bytes(k.verify_key).hex()}\n" for k in keys))
    calls = []
    real = auth_module.verify

    def counting(*args: bytes) -> bool:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(auth_module, "verify", counting)
    monkeypatch.setattr(auth_module, "MAX_KEYS_TRIED", 3)
    with pytest.raises(AuthFailed):
        _login_keyless(auth, nacl.signing.SigningKey.generate())
    assert len(calls) == 3
