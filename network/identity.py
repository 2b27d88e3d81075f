"""The node's persistent Ed25519 identity.

``peer_id`` is the lowercase hex SHA-1 of the raw 32-byte public key. The private seed lives in
the data dir: sealed with a key derived from a passphrase (Argon2id + XSalsa20-Poly1305 secretbox)
when one is given, otherwise in plain hex with mode 0600.
"""

from __future__ import annotations

import contextlib
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
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # Before CryptoError: a seed or box of the wrong length is nacl's ValueError, one too.
        raise IdentityError(f"identity key file is malformed or truncated ({type(exc).__name__}):"
                            f" restore it from a backup") from exc
    except nacl.exceptions.CryptoError as exc:
        # A damaged sealed seed fails its check the same way.
        raise IdentityError("wrong passphrase for the identity key (or its file is damaged)"
                            ) from exc


def write_durable(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole.

    The bytes go to a temporary file beside it (with ``mode`` from the first byte), which is
    fsynced, then renamed over ``path``, and the directory is fsynced so the rename itself
    survives a power loss. ``replace=False``: ``FileExistsError`` when ``path`` exists (checked
    at the rename, atomically), and the file there is left as it is.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` durably and atomically, with mode 0600 from the first byte."""
    write_durable(path, data, mode=0o600, replace=replace)


def read_key_file(path: Path, passphrase: str | None) -> Identity:
    """The identity stored at ``path``; ``IdentityError`` naming the file when it is damaged."""
    raw = path.read_bytes()
    if not raw.strip():
        raise IdentityError(
            f"the identity key {path} is empty (cut off by a crash?): restore it from a backup; "
            f"the node does not make a new identity over it (delete the file to start afresh "
            f"with a new peer id)")
    try:
        return decode_key_file(raw, passphrase)
    except IdentityError as exc:
        raise IdentityError(f"{path}: {exc}") from exc


def load_or_create(path: Path, passphrase: str | None) -> tuple[Identity, bool]:
    """Load the identity at ``path``, creating it on first use. Returns (identity, created).

    A file that is there is never replaced: a damaged one is an ``IdentityError``.
    """
    if path.exists():
        return read_key_file(path, passphrase), False
    identity = Identity.generate()
    try:
        write_private(path, encode_key_file(identity, passphrase), replace=False)
    except FileExistsError:  # another process created it meanwhile: use that one
        return read_key_file(path, passphrase), False
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
