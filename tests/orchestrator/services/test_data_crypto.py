from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from orchestrator.services.data_crypto import (
    CHUNK_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    DecryptionError,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    encrypt_stream,
    generate_passphrase,
)

PASS = "correct horse battery staple"


def _roundtrip(tmp_path: Path, data: bytes) -> tuple[Path, bytes]:
    src, enc, out = tmp_path / "plain", tmp_path / "enc", tmp_path / "out"
    src.write_bytes(data)
    size, sha = encrypt_file(src, enc, PASS)
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert decrypt_file(enc, out, PASS) == (size, sha)
    return enc, out.read_bytes()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
                                  3 * CHUNK_SIZE, 3 * 1024 * 1024 + 17])
def test_round_trip_exact(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    enc, back = _roundtrip(tmp_path, data)
    assert back == data
    chunks = max(1, -(-size // CHUNK_SIZE))
    assert enc.stat().st_size == HEADER_SIZE + size + chunks * TAG_SIZE


def test_ciphertext_hides_plaintext_and_is_salted(tmp_path: Path) -> None:
    data = b"secret-marker " * 5000
    src = tmp_path / "p"
    src.write_bytes(data)
    encrypt_file(src, tmp_path / "a", PASS)
    encrypt_file(src, tmp_path / "b", PASS)
    a, b = (tmp_path / "a").read_bytes(), (tmp_path / "b").read_bytes()
    assert b"secret-marker" not in a
    assert a != b  # fresh salt and nonces every time


def test_stream_pieces_of_any_size(tmp_path: Path) -> None:
    pieces = [os.urandom(n) for n in (5, CHUNK_SIZE * 2 + 3, 0, 700, CHUNK_SIZE)]
    buf = io.BytesIO()
    size, sha = encrypt_stream(iter(pieces), buf, PASS)
    joined = b"".join(pieces)
    assert (size, sha) == (len(joined), hashlib.sha256(joined).hexdigest())
    buf.seek(0)
    assert b"".join(decrypt_stream(buf, PASS)) == joined


def test_wrong_passphrase_fails_and_leaves_no_output(tmp_path: Path) -> None:
    enc, _ = _roundtrip(tmp_path, b"hello world")
    out = tmp_path / "wrong"
    with pytest.raises(DecryptionError, match="wrong passphrase"):
        decrypt_file(enc, out, "not the passphrase")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("where", ["header", "first", "last"])
def test_tampered_file_fails(tmp_path: Path, where: str) -> None:
    enc, _ = _roundtrip(tmp_path, os.urandom(CHUNK_SIZE * 2 + 10))
    raw = bytearray(enc.read_bytes())
    offset = {"header": 20, "first": HEADER_SIZE + 3, "last": len(raw) - 1}[where]
    raw[offset] ^= 0x01
    enc.write_bytes(bytes(raw))
    with pytest.raises(DecryptionError):
        decrypt_file(enc, tmp_path / "x", PASS)
    assert not (tmp_path / "x").exists()


def test_truncated_and_extended_files_fail(tmp_path: Path) -> None:
    enc, _ = _roundtrip(tmp_path, os.urandom(CHUNK_SIZE * 3))
    raw = enc.read_bytes()
    record = CHUNK_SIZE + TAG_SIZE
    # Dropping whole trailing chunks must not pass as a shorter file.
    enc.write_bytes(raw[: HEADER_SIZE + 2 * record])
    with pytest.raises(DecryptionError):
        b"".join(decrypt_stream(enc, PASS))
    enc.write_bytes(raw + raw[-record:])
    with pytest.raises(DecryptionError):
        b"".join(decrypt_stream(enc, PASS))
    enc.write_bytes(raw[:10])
    with pytest.raises(DecryptionError, match="too short"):
        b"".join(decrypt_stream(enc, PASS))
    enc.write_bytes(b"X" * 100)
    with pytest.raises(DecryptionError, match="bad magic"):
        b"".join(decrypt_stream(enc, PASS))


def test_generated_passphrases_are_random() -> None:
    a, b = generate_passphrase(), generate_passphrase()
    assert a != b and len(a) >= 40
