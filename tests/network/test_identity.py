"""The node identity: peer id, signatures, the key file with and without a passphrase."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from network.identity import (
    Identity,
    IdentityError,
    decode_key_file,
    encode_key_file,
    load_authorized_keys,
    load_or_create,
    peer_id_for,
    verify,
)


def test_peer_id_is_sha1_of_public_key() -> None:
    ident = Identity.generate()
    assert ident.peer_id == hashlib.sha1(ident.public_key).hexdigest() == peer_id_for(
        ident.public_key)
    assert len(ident.seed) == 32 and Identity.from_seed(ident.seed).peer_id == ident.peer_id


def test_sign_and_verify() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"hello")
    assert verify(ident.public_key, b"hello", sig)
    assert not verify(ident.public_key, b"hellO", sig)
    assert not verify(Identity.generate().public_key, b"hello", sig)
    assert not verify(b"short", b"hello", sig)
    assert not verify(ident.public_key, b"hello", b"\x00" * 3)


def test_plain_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k" / "identity.key"
    ident, created = load_or_create(path, None)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["seed"] == ident.seed.hex()
    again, created = load_or_create(path, None)
    assert not created and again.peer_id == ident.peer_id


def test_encrypted_key_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    ident, _ = load_or_create(path, "pass phrase")
    raw = path.read_text()
    assert ident.seed.hex() not in raw and "pass phrase" not in raw
    assert load_or_create(path, "pass phrase")[0].peer_id == ident.peer_id
    with pytest.raises(IdentityError, match="wrong passphrase") as info:
        load_or_create(path, "wrong")
    assert "wrong" not in str(info.value).replace("wrong passphrase", "")
    with pytest.raises(IdentityError, match="encrypted"):
        load_or_create(path, None)


def test_each_encryption_is_salted() -> None:
    ident = Identity.generate()
    assert encode_key_file(ident, "p") != encode_key_file(ident, "p")
    assert decode_key_file(encode_key_file(ident, "p"), "p").seed == ident.seed


@pytest.mark.parametrize("raw", [b"", b"{}", b"not json", b'{"seed": "zz"}',
                                 b'{"encrypted": true, "salt": "00"}'])
def test_malformed_key_file(raw: bytes) -> None:
    with pytest.raises(IdentityError):
        decode_key_file(raw, "p")


def test_authorized_keys_format(tmp_path: Path) -> None:
    a, b, c = (Identity.generate().public_key for _ in range(3))
    path = tmp_path / "authorized_keys"
    path.write_text(f"# comment\n{a.hex()}\nlaptop {b.hex()}\n{c.hex()} desk # note\n"
                    f"# {Identity.generate().public_key.hex()}\nnot-a-key\n{'ab' * 31}\n")
    assert load_authorized_keys(path) == {a, b, c}
    assert load_authorized_keys(tmp_path / "missing") == set()
