"""The upload protocol state machine, in memory with a stepped clock; and its disk side."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.services.upload_store import UploadStore
from orchestrator.services.uploads import (
    ChunkVerdict,
    UploadError,
    UploadLimits,
    UploadProtocol,
    UploadType,
    parse_start,
)

DATA = os.urandom(10_000)
CHUNK = 4096


def start_payload(**over: Any) -> dict[str, Any]:
    payload = {"session_id": "s1", "upload_type": "data", "file_name": "f.bin",
               "file_size": len(DATA), "chunk_size": CHUNK, "total_chunks": 3,
               "sha256": hashlib.sha256(DATA).hexdigest()}
    payload.update(over)
    return payload


def piece(i: int) -> bytes:
    return DATA[i * CHUNK:(i + 1) * CHUNK]


def test_out_of_order_and_duplicates() -> None:
    proto = UploadProtocol()
    session = proto.start(start_payload(), now=0)
    assert session.spec.upload_type is UploadType.DATA
    assert session.spec.service_name == "f.bin"  # defaults to the file name
    assert proto.chunk("s1", 2, piece(2), now=1) is ChunkVerdict.NEW
    assert proto.chunk("s1", 0, piece(0), now=2) is ChunkVerdict.NEW
    assert proto.chunk("s1", 0, piece(0), now=3) is ChunkVerdict.DUPLICATE
    assert session.progress() == {"session_id": "s1", "received_chunks": 2, "total_chunks": 3,
                                  "percentage": 66.7}
    assert proto.chunk("s1", 1, piece(1), now=4) is ChunkVerdict.NEW
    assert proto.finish("s1", now=5) is session
    assert len(proto) == 0
    with pytest.raises(UploadError, match="Unknown upload session"):
        proto.chunk("s1", 0, piece(0), now=6)


def test_conflicting_duplicate_ends_session() -> None:
    proto = UploadProtocol()
    proto.start(start_payload(), now=0)
    proto.chunk("s1", 0, piece(0), now=0)
    with pytest.raises(UploadError, match="different content") as info:
        proto.chunk("s1", 0, bytes(CHUNK), now=0)
    assert info.value.fatal and info.value.session_id == "s1"
    assert len(proto) == 0


@pytest.mark.parametrize("index, data, message", [
    (3, DATA[:10], "out of range"),
    (-1, DATA[:10], "out of range"),
    ("0", DATA[:CHUNK], "out of range"),
    (0, DATA[:CHUNK - 1], "expected 4096"),
    (2, DATA[:CHUNK], f"expected {len(DATA) - 2 * CHUNK}"),
])
def test_bad_chunks_are_fatal(index: Any, data: bytes, message: str) -> None:
    proto = UploadProtocol()
    proto.start(start_payload(), now=0)
    with pytest.raises(UploadError, match=message) as info:
        proto.chunk("s1", index, data, now=0)
    assert info.value.fatal
    assert len(proto) == 0


def test_missing_chunk_at_end() -> None:
    proto = UploadProtocol()
    proto.start(start_payload(), now=0)
    proto.chunk("s1", 1, piece(1), now=0)
    with pytest.raises(UploadError, match=r"missing chunk\(s\) 0, 2") as info:
        proto.finish("s1", now=0)
    assert info.value.fatal and len(proto) == 0


def test_expiry_counts_from_last_activity() -> None:
    proto = UploadProtocol(UploadLimits(ttl=10))
    proto.start(start_payload(), now=0)
    proto.start(start_payload(session_id="s2"), now=0)
    proto.chunk("s2", 0, piece(0), now=8)
    assert proto.expire(now=10) == []
    assert [s.session_id for s in proto.expire(now=10.5)] == ["s1"]
    assert proto.expire(now=18) == []
    assert [s.session_id for s in proto.expire(now=18.5)] == ["s2"]
    assert len(proto) == 0


def test_defaults_for_what_the_reference_leaves_out() -> None:
    payload = start_payload()
    del payload["upload_type"], payload["total_chunks"]
    spec = parse_start(payload, UploadLimits())
    assert spec.upload_type is UploadType.STANDALONE and spec.total_chunks == 3


def test_session_limits() -> None:
    proto = UploadProtocol(UploadLimits(max_sessions=1, max_file_size=len(DATA)))
    proto.start(start_payload(), now=0)
    with pytest.raises(UploadError, match="already open"):
        proto.start(start_payload(), now=0)
    with pytest.raises(UploadError, match="Too many uploads"):
        proto.start(start_payload(session_id="s2"), now=0)
    proto.abort("s1")
    with pytest.raises(UploadError, match="exceeds the limit"):
        proto.start(start_payload(file_size=len(DATA) + 1, total_chunks=3), now=0)


@pytest.mark.parametrize("over, message", [
    ({"file_name": "../x"}, "file_name"),
    ({"file_name": "a/b"}, "file_name"),
    ({"file_name": "a\\b"}, "file_name"),
    ({"file_name": "."}, "file_name"),
    ({"file_name": None}, "file_name"),
    ({"session_id": ""}, "session_id"),
    ({"session_id": "../up"}, "session_id"),
    ({"session_id": ".hidden"}, "session_id"),
    ({"upload_type": "other"}, "upload_type"),
    ({"file_size": "10"}, "file_size"),
    ({"file_size": True}, "file_size"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"total_chunks": 2}, "total_chunks"),
    ({"sha256": "XYZ"}, "sha256"),
    ({"service_id": 3}, "standalone uploads only"),
    ({"upload_type": "standalone", "service_id": -3}, "service_id"),
])
def test_start_validation(over: dict[str, Any], message: str) -> None:
    with pytest.raises(UploadError, match=message):
        parse_start(start_payload(**over), UploadLimits())


def test_store_writes_assembles_and_sweeps(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "uploads")
    store.open_session("s1")
    for i in (2, 0, 1):
        store.write_chunk("s1", i, piece(i))
    dest = tmp_path / "file"
    assert store.assemble("s1", 3, dest) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert dest.read_bytes() == DATA
    assert b"".join(store.iter_chunks("s1", 3)) == DATA
    store.discard("s1")
    assert list((tmp_path / "uploads").iterdir()) == []
    store.open_session("s2")
    store.write_chunk("s2", 0, b"x")
    with pytest.raises(FileNotFoundError):
        store.assemble("s2", 2, tmp_path / "partial")
    assert not (tmp_path / "partial").exists()
    (tmp_path / "uploads" / "stray").write_bytes(b"")
    assert store.sweep_all() == 2
    assert list((tmp_path / "uploads").iterdir()) == []
    with pytest.raises(ValueError):
        store.session_dir("..")
