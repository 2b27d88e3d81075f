"""The node's persistent Ed25519 identity.

``peer_id`` is the lowercase hex SHA-1 of the raw 32-byte public key. The private seed lives in
the data dir: sealed with a key derived from a passphrase (Argon2id + XSalsa20-Poly1305 secretbox)
when one is given, otherwise in plain hex with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils


class IdentityError(Exception):
    """The key file is unreadable, or the passphrase does not open it."""


def peer_id_for(public_key: bytes) -> str:
    return hashlib.sha1(public_key).hexdigest()


@dataclass(frozen=True)
class Identity:
    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def public_key_hex(self) -> str:
        return self.public_key.hex()

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def peer_id(self) -> str:
        return peer_id_for(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False
    return True


_KDF = nacl.pwhash.argon2id


def _derive(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    return _KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=ops,
                    memlimit=mem)


def encode_key_file(identity: Identity, passphrase: str | None) -> bytes:
    if passphrase is None:
        doc = {"version": 1, "encrypted": False, "seed": identity.seed.hex()}
    else:
        salt = nacl.utils.random(_KDF.SALTBYTES)
        ops, mem = _KDF.OPSLIMIT_INTERACTIVE, _KDF.MEMLIMIT_INTERACTIVE
        box = nacl.secret.SecretBox(_derive(passphrase, salt, ops, mem))
        doc = {
            "version": 1,
            "encrypted": True,
            "kdf": "argon2id",
            "salt": salt.hex(),
            "opslimit": ops,
            "memlimit": mem,
            "sealed": bytes(box.encrypt(identity.seed)).hex(),
        }
    return json.dumps(doc).encode()


def decode_key_file(raw: bytes, passphrase: str | None) -> Identity:
    try:
        doc = json.loads(raw)
        if not doc.get("encrypted"):
            return Identity.from_seed(bytes.fromhex(doc["seed"]))
        if passphrase is None:
            raise IdentityError("the identity key is encrypted: give its passphrase "
                                "(RN_KEY_PASSPHRASE or --key-passphrase-file)")
        key = _derive(passphrase, bytes.fromhex(doc["salt"]), doc["opslimit"], doc["memlimit"])
        seed = nacl.secret.SecretBox(key).decrypt(bytes.fromhex(doc["sealed"]))
        return Identity.from_seed(seed)
    except nacl.exceptions.CryptoError as exc:
        raise IdentityError("wrong passphrase for the identity key") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"identity key file is malformed: {type(exc).__name__}") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load_or_create(path: Path, passphrase: str | None) -> tuple[Identity, bool]:
    """Load the identity at ``path``, creating it on first use. Returns (identity, created)."""
    if path.exists():
        return decode_key_file(path.read_bytes(), passphrase), False
    identity = Identity.generate()
    write_private(path, encode_key_file(identity, passphrase))
    return identity, True


def load_authorized_keys(path: Path) -> set[bytes]:
    """Public keys allowed to log in besides the node's own.

    One key a line as 64 hex digits, optionally with a label before or after it (``laptop
    <hex>`` or ``<hex> laptop``); ``#`` starts a comment; lines without a key are ignored.
    """
    keys: set[bytes] = set()
    if not path.exists():
        return keys
    for line in path.read_text().splitlines():
        for token in line.split("#", 1)[0].split():
            if len(token) != 64:
                continue
            try:
                keys.add(bytes.fromhex(token))
            except ValueError:
                continue
            break
    return keys
