"""Encryption at rest for DATA service files: AES-256-GCM in chunks, key from a passphrase.

File layout (all integers big-endian)::

    header  = MAGIC (8) | log2_n (1) | r (1) | p (1) | salt (16) | nonce_prefix (7) | chunk_size (4)
    chunk_i = AES-256-GCM(key, nonce_i, plaintext_i, aad=header)   (ciphertext + 16-byte tag)
    nonce_i = nonce_prefix (7) | i (4) | last (1)

The key is scrypt(passphrase, salt, n=2**log2_n, r, p). Every chunk but the last holds exactly
``chunk_size`` plaintext bytes; the last one (possibly empty) carries the ``last`` flag in its
nonce, so a truncated, reordered or extended file fails to decrypt, as does any flipped bit.
Neither side ever holds more than one chunk in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

ENCRYPTION_METHOD = "AES-256-GCM"
MAGIC = b"RNDATA1\x00"
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 7
_HEADER = struct.Struct(f">8sBBB{SALT_SIZE}s{NONCE_PREFIX_SIZE}sI")
HEADER_SIZE = _HEADER.size
# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB of memory per derivation.
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_CHUNKS = 2**32


class DecryptionError(Exception):
    """The file is not ours, was altered, or the passphrase is wrong."""


def generate_passphrase() -> str:
    """A fresh random passphrase (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def _derive_key(passphrase: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    kdf = Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p)
    return kdf.derive(passphrase.encode("utf-8"))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_CHUNKS:
        raise ValueError("file too large for this format")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def _rechunk(pieces: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Re-cut a stream of byte strings into ``size`` blocks, flagging the last one."""
    buffer = bytearray()
    pending: bytes | None = None
    for piece in pieces:
        buffer += piece
        while len(buffer) >= size:
            if pending is not None:
                yield pending, False
            pending = bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        if pending is not None:
            yield pending, False
        yield bytes(buffer), True
    elif pending is not None:
        yield pending, True
    else:
        yield b"", True


def encrypt_stream(pieces: Iterable[bytes], out: BinaryIO, passphrase: str, *,
                   chunk_size: int = CHUNK_SIZE) -> tuple[int, str]:
    """Encrypt the concatenation of ``pieces`` into ``out``.

    Returns (plaintext size, hex sha256 of the plaintext).
    """
    salt = os.urandom(SALT_SIZE)
    prefix = os.urandom(NONCE_PREFIX_SIZE)
    header = _HEADER.pack(MAGIC, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, salt, prefix, chunk_size)
    aead = AESGCM(_derive_key(passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P))
    digest = hashlib.sha256()
    size = 0
    out.write(header)
    for index, (block, last) in enumerate(_rechunk(pieces, chunk_size)):
        digest.update(block)
        size += len(block)
        out.write(aead.encrypt(_nonce(prefix, index, last), block, header))
    return size, digest.hexdigest()


def _read_blocks(src: BinaryIO, size: int) -> Iterator[bytes]:
    while block := src.read(size):
        yield block


def encrypt_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 passphrase: str) -> tuple[int, str]:
    """Encrypt ``src`` into ``dst`` (written atomically). Returns (size, sha256 of plaintext)."""
    with open(src, "rb") as fin:
        return _write_atomic(Path(dst), lambda fout: encrypt_stream(
            _read_blocks(fin, CHUNK_SIZE), fout, passphrase))


def decrypt_stream(src: str | os.PathLike[str] | BinaryIO, passphrase: str) -> Iterator[bytes]:
    """Yield the plaintext of an encrypted file, one authenticated chunk at a time.

    Raises DecryptionError (possibly after some chunks were yielded) when the passphrase is
    wrong or the file was altered or truncated: a consumer must discard what it got then.
    """
    with contextlib.ExitStack() as stack:
        fin: BinaryIO = (src if hasattr(src, "read")  # type: ignore[assignment]
                         else stack.enter_context(open(src, "rb")))  # type: ignore[arg-type]
        header = fin.read(HEADER_SIZE)
        if len(header) != HEADER_SIZE:
            raise DecryptionError("not an encrypted data file (too short)")
        magic, log2_n, r, p, salt, prefix, chunk_size = _HEADER.unpack(header)
        if magic != MAGIC:
            raise DecryptionError("not an encrypted data file (bad magic)")
        if not (10 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16
                and 0 < chunk_size <= MAX_CHUNK_SIZE):
            raise DecryptionError("encrypted data file has an invalid header")
        aead = AESGCM(_derive_key(passphrase, salt, log2_n, r, p))
        record = chunk_size + TAG_SIZE
        index = 0
        current = fin.read(record)
        while True:
            following = fin.read(record) if len(current) == record else b""
            last = not following
            if len(current) < TAG_SIZE:
                raise DecryptionError("encrypted data file is truncated")
            try:
                plain = aead.decrypt(_nonce(prefix, index, last), current, header)
            except InvalidTag:
                if index == 0:
                    raise DecryptionError(
                        "decryption failed: wrong passphrase or corrupted file") from None
                raise DecryptionError(
                    f"decryption failed at chunk {index}: file corrupted or truncated") from None
            yield plain
            if last:
                return
            current, index = following, index + 1


def decrypt_file(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                 passphrase: str) -> tuple[int, str]:
    """Decrypt ``src`` into ``dst``, which appears only when the whole file checked out.

    Returns (size, sha256) of the plaintext.
    """

    def write(fout: BinaryIO) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        for block in decrypt_stream(src, passphrase):
            digest.update(block)
            size += len(block)
            fout.write(block)
        return size, digest.hexdigest()

    return _write_atomic(Path(dst), write)


def _write_atomic(dst: Path, writer: Callable[[BinaryIO], tuple[int, str]]) -> tuple[int, str]:
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fout:
            result = writer(fout)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result
