"""The web UI's upload protocol as a state machine: in memory, with a stepped clock, no sockets."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest

from orchestrator.services.ui_uploads import (
    ChunkVerdict,
    ErrorCode,
    FileStart,
    UiUploadError,
    UiUploadLimits,
    UiUploadProtocol,
    parse_start,
    validate_file_path,
)
from orchestrator.states import ServiceType

CHUNK = 1024
DATA = os.urandom(2 * CHUNK + 100)
LIMITS = UiUploadLimits(max_file_size=10 * CHUNK, max_group_size=12 * CHUNK, max_files=5,
                        max_groups=2, ttl=60.0)


def payload(**over: Any) -> dict[str, Any]:
    size = over.pop("size", len(DATA))
    base = {"service_id": 7, "upload_group_id": "upload_1_abc", "filename": "f.bin",
            "file_path": "f.bin", "file_index": 0, "total_files": 1, "total_size": size,
            "total_chunks": -(-size // CHUNK), "chunk_size": CHUNK}
    return {**base, **over}


def spec(**over: Any) -> FileStart:
    return parse_start(payload(**over), LIMITS)


def protocol() -> UiUploadProtocol:
    ids = (f"s{i}" for i in itertools.count())
    return UiUploadProtocol(LIMITS, new_id=lambda: next(ids))


def piece(i: int, data: bytes = DATA) -> bytes:
    return data[i * CHUNK:(i + 1) * CHUNK]


def send_all(proto: UiUploadProtocol, sid: str, data: bytes = DATA, now: float = 0) -> None:
    for i in range(-(-len(data) // CHUNK)):
        assert proto.chunk(sid, i, piece(i, data), now) is ChunkVerdict.NEW


def test_one_file_progress_duplicates_and_completion() -> None:
    proto = protocol()
    session, dropped = proto.start(spec(), ServiceType.DATA, now=0)
    assert dropped == () and session.session_id == "s0"
    assert session.progress()["payload"] == {"session_id": "s0", "chunks_received": 0,
                                             "bytes_uploaded": 0, "percentage": 0}
    assert proto.chunk("s0", 0, piece(0), 1) is ChunkVerdict.NEW
    assert proto.chunk("s0", 0, piece(0), 2) is ChunkVerdict.DUPLICATE  # not counted twice
    assert session.progress()["payload"]["chunks_received"] == 1
    assert proto.chunk("s0", 1, piece(1), 3) is ChunkVerdict.NEW
    assert not session.all_chunks_in
    assert proto.chunk("s0", 2, piece(2), 4) is ChunkVerdict.NEW
    assert session.all_chunks_in
    progress = session.progress()
    assert progress["type"] == "file.upload.progress"
    assert progress["payload"] == {"session_id": "s0", "chunks_received": 3,
                                   "bytes_uploaded": len(DATA), "percentage": 100.0}
    group = proto.file_done("s0", "ab" * 32, 5)
    assert group is not None and group.processing and group.service_id == 7
    assert session.complete() == {"type": "file.upload.complete",
                                  "payload": {"session_id": "s0", "file_hash": "ab" * 32}}
    assert [s.session_id for s in proto.files(group)] == ["s0"]
    assert proto.expire(10_000) == ()  # a group being processed does not expire
    assert proto.finish_group(group.group_id) == ("s0",)
    assert len(proto) == 0 and proto.groups == 0


def test_empty_file_is_complete_at_start() -> None:
    proto = protocol()
    session, _ = proto.start(spec(size=0), ServiceType.STANDALONE, now=0)
    assert session.spec.total_chunks == 0 and session.all_chunks_in
    assert session.progress()["payload"]["percentage"] == 100.0
    assert proto.file_done(session.session_id, "00" * 32, 1) is not None


def test_group_in_order_and_processed_once() -> None:
    proto = protocol()
    group_args = {"total_files": 3}
    first, _ = proto.start(spec(file_path="dir/a", filename="a", **group_args),
                           ServiceType.DATA, 0)
    early = spec(file_path="dir/b", filename="b", file_index=1, **group_args)
    with pytest.raises(UiUploadError, match="previous file"):
        proto.start(early, ServiceType.DATA, 1)
    send_all(proto, first.session_id)
    assert proto.file_done(first.session_id, "11" * 32, 2) is None
    with pytest.raises(UiUploadError, match="out of order"):
        proto.start(spec(file_path="dir/c", filename="c", file_index=2, **group_args),
                    ServiceType.DATA, 3)
    second, _ = proto.start(early, ServiceType.DATA, 3)
    send_all(proto, second.session_id)
    assert proto.file_done(second.session_id, "22" * 32, 4) is None
    third, _ = proto.start(spec(file_path="c", filename="c", file_index=2, size=0, **group_args),
                           ServiceType.DATA, 5)
    group = proto.file_done(third.session_id, "33" * 32, 6)
    assert group is not None
    assert [s.spec.file_path for s in proto.files(group)] == ["dir/a", "dir/b", "c"]
    with pytest.raises(UiUploadError, match="complete"):
        proto.start(spec(file_path="d", filename="d", file_index=2, **group_args),
                    ServiceType.DATA, 7)
    assert proto.file_done(third.session_id, "33" * 32, 8) is None  # once only


@pytest.mark.parametrize("over, message", [
    ({"service_id": 8}, "one service"),
    ({"total_files": 4}, "total_files"),
    ({"file_path": "dir/a", "filename": "a"}, "twice"),
    ({"file_path": "dir", "filename": "dir"}, "clashes"),
    ({"file_path": "dir/a/x", "filename": "x"}, "clashes"),
    ({"size": 10 * CHUNK}, "exceeds"),
])
def test_group_members_must_agree(over: dict[str, Any], message: str) -> None:
    proto = protocol()
    first, _ = proto.start(spec(file_path="dir/a", filename="a", total_files=3),
                           ServiceType.DATA, 0)
    send_all(proto, first.session_id)
    proto.file_done(first.session_id, "11" * 32, 1)
    fields = {"file_path": "dir/b", "filename": "b", "file_index": 1, "total_files": 3, **over}
    with pytest.raises(UiUploadError, match=message) as info:
        proto.start(spec(**fields), ServiceType.DATA, 2)
    assert info.value.code is ErrorCode.START_FAILED and info.value.discard == ()
    assert len(proto) == 1 and proto.groups == 1  # a refusal changes nothing


def test_group_must_target_one_kind() -> None:
    proto = protocol()
    first, _ = proto.start(spec(total_files=2), ServiceType.DATA, 0)
    send_all(proto, first.session_id)
    proto.file_done(first.session_id, "11" * 32, 1)
    with pytest.raises(UiUploadError, match="one service"):
        proto.start(spec(file_path="g", filename="g", file_index=1, total_files=2),
                    ServiceType.STANDALONE, 2)


@pytest.mark.parametrize("kind", [ServiceType.DOCKER, ServiceType.RELAY])
def test_other_service_types_refused(kind: ServiceType) -> None:
    proto = protocol()
    with pytest.raises(UiUploadError, match="DATA or STANDALONE"):
        proto.start(spec(), kind, 0)
    assert len(proto) == 0 and proto.groups == 0


@pytest.mark.parametrize("over, message", [
    ({"service_id": 0}, "service_id"),
    ({"service_id": True}, "service_id"),
    ({"service_id": "7"}, "service_id"),
    ({"upload_group_id": ""}, "upload_group_id"),
    ({"upload_group_id": "x" * 129}, "upload_group_id"),
    ({"upload_group_id": "a\nb"}, "upload_group_id"),
    ({"filename": ""}, "filename"),
    ({"filename": "a/b"}, "filename"),
    ({"file_path": "../../x", "filename": "x"}, "'..'"),
    ({"file_path": "a/../x", "filename": "x"}, "'..'"),
    ({"file_path": "/etc/x", "filename": "x"}, "relative"),
    ({"file_path": "C:/x", "filename": "x"}, "relative"),
    ({"file_path": "a\\..\\x", "filename": "a\\..\\x"}, "filename"),
    ({"file_path": "a\\x", "filename": "f.bin"}, "backslash"),
    ({"file_path": "a/\x00/f.bin"}, "NUL"),
    ({"file_path": "a//f.bin"}, "file_path"),
    ({"file_path": "./f.bin"}, "file_path"),
    ({"file_path": "a/ b/f.bin"}, "file_path"),
    ({"file_path": "a/\x01/f.bin"}, "control"),
    ({"file_path": "other"}, "end with filename"),
    ({"file_path": "/".join(["d"] * 40) + "/f.bin"}, "deeper"),
    ({"file_path": "d" * 2000 + "/f.bin"}, "longer"),
    ({"file_path": "x" * 300 + "/f.bin"}, "file_path"),
    ({"total_files": 0}, "total_files"),
    ({"total_files": 6}, "total_files"),
    ({"file_index": 1}, "file_index"),
    ({"file_index": -1}, "file_index"),
    ({"total_size": -1}, "total_size"),
    ({"total_size": 10 * CHUNK + 1}, "total_size"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"chunk_size": 4 * 1024 * 1024 + 1}, "chunk_size"),
    ({"total_chunks": 2}, "total_chunks"),
    ({"total_chunks": 4}, "total_chunks"),
    ({"total_chunks": 2.5}, "total_chunks"),
])
def test_start_rejects_bad_declarations(over: dict[str, Any], message: str) -> None:
    with pytest.raises(UiUploadError, match=message) as info:
        parse_start(payload(**over), LIMITS)
    assert info.value.code is ErrorCode.START_FAILED and info.value.session_id == ""


def test_valid_paths() -> None:
    for path in ("a", "folder/sub/name.txt", "a b/c-d_e.f", "ünï/cödé"):
        assert validate_file_path(path, LIMITS) == path


def test_missing_fields_refused() -> None:
    for key in payload():
        broken = payload()
        del broken[key]
        with pytest.raises(UiUploadError):
            parse_start(broken, LIMITS)


@pytest.mark.parametrize("index, data, message", [
    (3, piece(0), "out of range"),
    (-1, piece(0), "out of range"),
    ("0", piece(0), "out of range"),
    (0, piece(0) + b"x", "expected 1024"),
    (0, piece(0)[:-1], "expected 1024"),
    (2, piece(1), "expected 100"),
])
def test_bad_chunk_fails_the_whole_group(index: Any, data: bytes, message: str) -> None:
    proto = protocol()
    first, _ = proto.start(spec(file_path="a", filename="a", total_files=2), ServiceType.DATA, 0)
    send_all(proto, first.session_id)
    proto.file_done(first.session_id, "11" * 32, 1)
    second, _ = proto.start(spec(file_path="b", filename="b", file_index=1, total_files=2),
                            ServiceType.DATA, 2)
    with pytest.raises(UiUploadError, match=message) as info:
        proto.chunk(second.session_id, index, data, 3)
    assert info.value.code is ErrorCode.CHUNK_FAILED
    assert info.value.session_id == second.session_id
    assert info.value.discard == (first.session_id, second.session_id)
    assert len(proto) == 0 and proto.groups == 0
    with pytest.raises(UiUploadError) as gone:
        proto.chunk(second.session_id, 0, piece(0), 4)
    assert gone.value.code is ErrorCode.SESSION_NOT_FOUND and gone.value.discard == ()


def test_conflicting_repeat_fails() -> None:
    proto = protocol()
    session, _ = proto.start(spec(), ServiceType.DATA, 0)
    proto.chunk(session.session_id, 0, piece(0), 1)
    with pytest.raises(UiUploadError, match="different content") as info:
        proto.chunk(session.session_id, 0, bytes(CHUNK), 2)
    assert info.value.discard == (session.session_id,)


def test_unknown_session() -> None:
    proto = protocol()
    for sid in ("nope", None, 5, ["x"]):
        with pytest.raises(UiUploadError, match="Unknown upload session") as info:
            proto.chunk(sid, 0, b"x", 0)
        assert info.value.code is ErrorCode.SESSION_NOT_FOUND


def test_pause_and_resume() -> None:
    proto = protocol()
    session, _ = proto.start(spec(), ServiceType.DATA, 0)
    proto.chunk(session.session_id, 0, piece(0), 1)
    proto.pause(session.session_id, 2)
    with pytest.raises(UiUploadError, match="paused") as info:
        proto.chunk(session.session_id, 1, piece(1), 3)
    assert info.value.code is ErrorCode.PAUSED and info.value.discard == ()
    assert proto.resume(session.session_id, 4) is session
    assert session.progress()["payload"]["chunks_received"] == 1
    assert proto.chunk(session.session_id, 1, piece(1), 5) is ChunkVerdict.NEW


def test_idle_groups_expire() -> None:
    proto = protocol()
    first, _ = proto.start(spec(upload_group_id="g1"), ServiceType.DATA, 0)
    second, _ = proto.start(spec(upload_group_id="g2", service_id=8), ServiceType.DATA, 50)
    proto.chunk(first.session_id, 0, piece(0), 30)  # activity keeps a group alive
    assert proto.expire(80) == ()
    assert proto.expire(91) == (first.session_id,)
    assert proto.expire(111) == (second.session_id,)
    assert len(proto) == 0 and proto.groups == 0


def test_bounded_groups_and_a_new_group_replaces_an_unfinished_one() -> None:
    proto = protocol()
    a, _ = proto.start(spec(upload_group_id="g1", service_id=1), ServiceType.DATA, 0)
    proto.start(spec(upload_group_id="g2", service_id=2), ServiceType.DATA, 0)
    with pytest.raises(UiUploadError, match="Too many"):
        proto.start(spec(upload_group_id="g3", service_id=3), ServiceType.DATA, 0)
    again, dropped = proto.start(spec(upload_group_id="g4", service_id=1), ServiceType.DATA, 1)
    assert dropped == (a.session_id,) and proto.groups == 2
    send_all(proto, again.session_id)
    assert proto.file_done(again.session_id, "11" * 32, 2) is not None
    with pytest.raises(UiUploadError, match="being processed"):
        proto.start(spec(upload_group_id="g5", service_id=1), ServiceType.DATA, 3)


def test_first_file_of_a_group_must_be_index_zero() -> None:
    proto = protocol()
    with pytest.raises(UiUploadError, match="starts with file 0"):
        proto.start(spec(file_index=1, total_files=2), ServiceType.DATA, 0)
    assert proto.groups == 0
