"""The web UI's upload dialect (``file.upload.*``) over a real WebSocket, against a real node:
into DATA and STANDALONE services created first by ``POST /api/services``, as the UI does."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.services.data_crypto import decrypt_file
from tests.api.helpers import db_path
from tests.support.node_process import ApiClient, NodeProcess, logged_in
from tests.support.ui_upload_client import CHUNK, UiUploadSocket, start_payload

MIB = 1024 * 1024
SCRIPT = b"#!/bin/sh\necho \"ui upload says $1\"\n" + b"# padding\n" * 100


def create(client: ApiClient, kind: str, name: str, **extra: Any) -> int:
    resp = client.post("/api/services", json={"type": kind, "name": name, "status": "INACTIVE",
                                              **extra})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["service"]["id"])


def standalone_placeholder(client: ApiClient, name: str) -> int:
    """The UI's STANDALONE placeholder: ``endpoint: ""`` where the node accepts it."""
    resp = client.post("/api/services", json={"type": "standalone", "name": name,
                                              "status": "INACTIVE", "endpoint": ""})
    if resp.status_code == 201:
        return int(resp.json()["service"]["id"])
    return create(client, "standalone", name, endpoint="upload")


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded by the deadline
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def data_details(client: ApiClient, service_id: int) -> dict[str, Any] | None:
    resp = client.get(f"/api/services/{service_id}/passphrase")
    if resp.status_code != 200 or not resp.json()["data_details"]["file_hash"]:
        return None
    return resp.json()  # type: ignore[no-any-return]


def original_name(node: NodeProcess, service_id: int) -> str:
    with sqlite3.connect(db_path(node), timeout=30) as conn:
        row = conn.execute("SELECT original_name FROM data_service_details WHERE service_id = ?",
                           (service_id,)).fetchone()
    conn.close()
    return str(row[0]) if row else ""


def uploads_empty(node: NodeProcess) -> bool:
    uploads = node.data_dir / "uploads"
    return not uploads.exists() or not list(uploads.iterdir())


@pytest.fixture
def nothing_left(node_proc: NodeProcess) -> Iterator[None]:
    """No upload file left behind, and no new entry in the node's directory."""
    def names() -> set[str]:
        return {p.name for p in node_proc.data_dir.iterdir()} | {"services", "uploads"}

    before = names()
    yield
    wait_for(lambda: uploads_empty(node_proc), "the upload files to go")
    assert names() == before


async def test_data_single_file(node_proc: NodeProcess, client: ApiClient, tmp_path: Path,
                                nothing_left: None) -> None:
    data = os.urandom(MIB + 12345)
    sha = hashlib.sha256(data).hexdigest()
    service_id = create(client, "storage", "ui-data-one")
    try:
        async with UiUploadSocket(client) as ws:
            replies = await ws.upload_file(service_id, "upload_1_one", data, file_path="d.bin",
                                           chunk_size=MIB)
            sid = replies[0]["payload"]["session_id"]
            assert [r["type"] for r in replies] == ["file.upload.progress"] * 3 + [
                "file.upload.complete"]
            assert [r["payload"] for r in replies[:3]] == [
                {"session_id": sid, "chunks_received": 0, "bytes_uploaded": 0, "percentage": 0},
                {"session_id": sid, "chunks_received": 1, "bytes_uploaded": MIB,
                 "percentage": 50.0},
                {"session_id": sid, "chunks_received": 2, "bytes_uploaded": len(data),
                 "percentage": 100.0}]
            assert replies[3]["payload"] == {"session_id": sid, "file_hash": sha}
            assert all(isinstance(r["timestamp"], int) for r in replies)
            assert await ws.drain() == []  # exactly one reply per message
            body = wait_for(lambda: data_details(client, service_id), "the DATA file")
            # the change is published, in both dialects
            await ws.wait_event(lambda m: m["type"] == "SERVICE_UPDATED"
                                and m["payload"]["service_id"] == service_id)
            await ws.wait_event(lambda m: m["type"] == "services.updated" and any(
                s["id"] == service_id for s in m["payload"]["services"]))
        details = body["data_details"]
        assert details["file_hash"] == sha and details["file_size"] == len(data)
        encrypted = Path(details["file_path"])
        assert encrypted.parent == node_proc.data_dir / "services" / str(service_id)
        out = tmp_path / "plain"
        assert decrypt_file(encrypted, out, body["passphrase"]) == (len(data), sha)
        assert out.read_bytes() == data
        service = client.get(f"/api/services/{service_id}").json()["service"]
        assert (service["service_type"], service["status"]) == ("DATA", "INACTIVE")
        interfaces = client.get(f"/api/services/{service_id}/interfaces").json()["interfaces"]
        assert [i["interface_type"] for i in interfaces] == ["STDOUT"]
    finally:
        client.delete(f"/api/services/{service_id}")
    assert not (node_proc.data_dir / "services" / str(service_id)).exists()


async def test_data_folder_becomes_a_tree_archive(node_proc: NodeProcess, client: ApiClient,
                                                  tmp_path: Path, nothing_left: None) -> None:
    files = [("folder/a.txt", b"alpha\n"), ("folder/sub/b.bin", os.urandom(3 * CHUNK + 7)),
             ("folder/empty", b"")]
    service_id = create(client, "storage", "ui-data-folder")
    try:
        async with UiUploadSocket(client) as ws:
            done = await ws.upload_files(service_id, "upload_2_folder", files)
            assert [r[-1]["type"] for r in done] == ["file.upload.complete"] * 3
            assert done[2] == [  # an empty file: progress, then complete, at once
                {"type": "file.upload.progress", "timestamp": done[2][0]["timestamp"],
                 "payload": {"session_id": done[2][0]["payload"]["session_id"],
                             "chunks_received": 0, "bytes_uploaded": 0, "percentage": 100.0}},
                {"type": "file.upload.complete", "timestamp": done[2][1]["timestamp"],
                 "payload": {"session_id": done[2][0]["payload"]["session_id"],
                             "file_hash": hashlib.sha256(b"").hexdigest()}}]
            assert len({r[0]["payload"]["session_id"] for r in done}) == 3
        body = wait_for(lambda: data_details(client, service_id), "the DATA file")
        out = tmp_path / "plain.tar.gz"
        decrypt_file(body["data_details"]["file_path"], out, body["passphrase"])
        with tarfile.open(out, "r:gz") as tf:
            members = {m.name: m for m in tf.getmembers()}
            assert sorted(members) == ["folder", "folder/a.txt", "folder/empty", "folder/sub",
                                       "folder/sub/b.bin"]
            for path, data in files:
                extracted = tf.extractfile(members[path])
                assert extracted is not None and extracted.read() == data
        assert original_name(node_proc, service_id) == "folder.tar.gz"
    finally:
        client.delete(f"/api/services/{service_id}")


async def test_standalone_upload_then_finalize_both_spellings(
        node_proc: NodeProcess, client: ApiClient, nothing_left: None) -> None:
    service_id = standalone_placeholder(client, "ui-standalone")
    root = node_proc.data_dir / "services" / str(service_id)
    try:
        async with UiUploadSocket(client) as ws:
            replies = await ws.upload_file(service_id, "upload_3_exe", SCRIPT, file_path="run.sh",
                                           chunk_size=1000)
            assert replies[-1]["type"] == "file.upload.complete", replies[-1]
            assert await ws.drain() == []

        def staged() -> bool:
            details = client.get(f"/api/services/standalone/{service_id}/details")
            return details.status_code == 200 and bool(details.json()["details"]["executable_path"])

        wait_for(staged, "the files to be staged")
        assert (root / "run.sh").read_bytes() == SCRIPT
        finalize = f"/api/services/standalone/{service_id}/finalize"
        for bad, message in [(f"{service_id}/../../../bin/sh", "'..'"),
                             (f"{service_id}/missing", "does not exist"),
                             (f"{service_id + 1}/run.sh", "does not exist"),
                             ("/bin/sh", "relative")]:
            resp = client.post(finalize, json={"executable_path": bad})
            assert resp.status_code == 400 and message in resp.json()["error"], (bad, resp.text)
        assert client.get(f"/api/services/{service_id}").json()["service"]["status"] == "INACTIVE"
        resp = client.post(finalize, json={"executable_path": f"{service_id}/run.sh",
                                           "arguments": ["x"], "timeout_seconds": 30})
        assert resp.status_code == 200, resp.text
        assert resp.json()["service"]["status"] == "ACTIVE"
        details = client.get(f"/api/services/standalone/{service_id}/details").json()["details"]
        assert details["executable_path"] == str(root / "run.sh")
        assert details["source"] == "upload" and os.access(root / "run.sh", os.X_OK)
        resp = client.post(finalize, json={"executable_path": "run.sh"})  # the reference's
        assert resp.status_code == 200, resp.text
    finally:
        client.delete(f"/api/services/{service_id}")
    assert not root.exists()


async def test_finalize_escape_through_a_symlink_refused(node_proc: NodeProcess,
                                                         client: ApiClient) -> None:
    service_id = standalone_placeholder(client, "ui-symlink")
    root = node_proc.data_dir / "services" / str(service_id)
    try:
        async with UiUploadSocket(client) as ws:
            replies = await ws.upload_file(service_id, "upload_4_link", SCRIPT,
                                           file_path="run.sh")
            assert replies[-1]["type"] == "file.upload.complete"
        wait_for(lambda: (root / "run.sh").exists(), "the files to be staged")
        (root / "out").symlink_to("/bin")
        resp = client.post(f"/api/services/standalone/{service_id}/finalize",
                           json={"executable_path": f"{service_id}/out/sh"})
        assert resp.status_code == 400 and "outside" in resp.json()["error"], resp.text
        assert client.get(f"/api/services/{service_id}").json()["service"]["status"] == "INACTIVE"
    finally:
        client.delete(f"/api/services/{service_id}")


async def test_pause_and_resume(client: ApiClient, nothing_left: None) -> None:
    data = os.urandom(3 * CHUNK)
    service_id = create(client, "storage", "ui-pause")
    try:
        async with UiUploadSocket(client) as ws:
            first = await ws.request("file.upload.start", start_payload(
                service_id, "upload_5_pause", data, file_path="p.bin"))
            sid = first["payload"]["session_id"]
            await ws.chunk(sid, 0, data[:CHUNK])
            await ws.send("file.upload.pause", {"session_id": sid})
            assert await ws.drain() == []  # no reply to a pause
            refused = await ws.chunk(sid, 1, data[CHUNK:2 * CHUNK])
            assert refused["payload"]["code"] == "UPLOAD_PAUSED"
            resumed = await ws.request("file.upload.resume", {"session_id": sid})
            assert resumed["type"] == "file.upload.progress"
            assert resumed["payload"] == {"session_id": sid, "chunks_received": 1,
                                          "bytes_uploaded": CHUNK,
                                          "percentage": pytest.approx(33.33)}
            await ws.chunk(sid, 1, data[CHUNK:2 * CHUNK])
            again = await ws.chunk(sid, 1, data[CHUNK:2 * CHUNK])  # a repeat: not counted
            assert again["payload"]["chunks_received"] == 2
            await ws.chunk(sid, 2, data[2 * CHUNK:])
            done = await ws.reply()
            assert done["type"] == "file.upload.complete"
            assert await ws.drain() == []
            unknown = await ws.request("file.upload.resume", {"session_id": "nope"})
            assert unknown["payload"]["code"] == "SESSION_NOT_FOUND"
        wait_for(lambda: data_details(client, service_id), "the DATA file")
    finally:
        client.delete(f"/api/services/{service_id}")


# -- attacks: each refused, each leaving everything as it was --------------------------------
def snapshot(client: ApiClient, service_id: int) -> Any:
    return (client.get(f"/api/services/{service_id}").json(),
            client.get(f"/api/services/{service_id}/interfaces").json(),
            client.get(f"/api/services/{service_id}/passphrase").status_code)


@pytest.mark.parametrize("over, message", [
    ({"file_path": "../../x", "filename": "x"}, "'..'"),
    ({"file_path": "/tmp/x", "filename": "x"}, "relative"),
    ({"file_path": "a\\..\\..\\x", "filename": "x"}, "backslash"),
    ({"file_path": "ok/\x00/x", "filename": "x"}, "NUL"),
    ({"total_size": 3 * 1024**3, "total_chunks": 3 * 1024}, "total_size"),
    ({"chunk_size": 8 * MIB, "total_chunks": 1}, "chunk_size"),
    ({"total_chunks": 99}, "total_chunks"),
    ({"total_files": 10_001}, "total_files"),
    ({"service_id": 10**9}, "not found"),
])
async def test_bad_start_changes_nothing(node_proc: NodeProcess, client: ApiClient,
                                         nothing_left: None, over: dict[str, Any],
                                         message: str) -> None:
    service_id = create(client, "storage", "ui-target")
    try:
        before = snapshot(client, service_id)
        async with UiUploadSocket(client) as ws:
            payload = {**start_payload(service_id, "upload_6_bad", b"x" * 10, file_path="f"),
                       **over}
            reply = await ws.request("file.upload.start", payload)
            assert reply["type"] == "file.upload.error", reply
            assert reply["payload"]["code"] == "UPLOAD_START_FAILED"
            assert reply["payload"]["session_id"] == ""
            assert message in reply["payload"]["error"], reply
            assert await ws.drain() == []
        assert uploads_empty(node_proc)
        assert not (node_proc.data_dir.parent / "x").exists()
        assert not (node_proc.data_dir / "x").exists()
        assert snapshot(client, service_id) == before
    finally:
        client.delete(f"/api/services/{service_id}")


@pytest.mark.parametrize("kind, extra, message", [
    ("docker", {"endpoint": "x"}, "DATA or STANDALONE"),
    ("relay", {"endpoint": "x"}, "DATA or STANDALONE"),
    ("standalone", {"endpoint": "x", "status": "ACTIVE"}, "not created by an upload"),
])
async def test_other_services_refused_and_unchanged(node_proc: NodeProcess, client: ApiClient,
                                                    nothing_left: None, kind: str,
                                                    extra: dict[str, Any], message: str) -> None:
    service_id = create(client, kind, f"ui-not-a-target-{kind}", **extra)
    try:
        before = snapshot(client, service_id)
        async with UiUploadSocket(client) as ws:
            reply = await ws.request("file.upload.start", start_payload(
                service_id, "upload_7_other", SCRIPT, file_path="run.sh"))
        assert reply["type"] == "file.upload.error" and message in reply["payload"]["error"]
        assert snapshot(client, service_id) == before
        assert not (node_proc.data_dir / "services" / str(service_id)).exists()
    finally:
        client.delete(f"/api/services/{service_id}")


@pytest.mark.parametrize("piece, code", [
    (os.urandom(CHUNK + 1), "UPLOAD_CHUNK_FAILED"),  # oversize
    (os.urandom(CHUNK - 1), "UPLOAD_CHUNK_FAILED"),  # short
    (None, "INVALID_ENCODING"),
])
async def test_bad_chunk_stores_nothing(node_proc: NodeProcess, client: ApiClient,
                                        nothing_left: None, piece: bytes | None,
                                        code: str) -> None:
    data = os.urandom(2 * CHUNK)
    service_id = create(client, "storage", "ui-bad-chunk")
    try:
        before = snapshot(client, service_id)
        async with UiUploadSocket(client) as ws:
            first = await ws.upload_file(service_id, "upload_8_chunk", b"first", file_path="a",
                                         total_files=2)
            assert first[-1]["type"] == "file.upload.complete"
            start = await ws.request("file.upload.start", start_payload(
                service_id, "upload_8_chunk", data, file_path="b", index=1, total_files=2))
            sid = start["payload"]["session_id"]
            encoded = "@@not base64@@" if piece is None else base64.b64encode(piece).decode()
            reply = await ws.request("file.upload.chunk", {"session_id": sid, "chunk_index": 0,
                                                           "data": encoded})
            assert reply["type"] == "file.upload.error", reply
            assert reply["payload"]["code"] == code and reply["payload"]["session_id"] == sid
            assert uploads_empty(node_proc)  # the group's files are gone, the first's too
            late = await ws.chunk(sid, 0, data[:CHUNK])
            assert late["payload"]["code"] == "SESSION_NOT_FOUND"
            assert await ws.drain() == []
        assert snapshot(client, service_id) == before
    finally:
        client.delete(f"/api/services/{service_id}")


async def test_group_rules_over_the_socket(node_proc: NodeProcess, client: ApiClient,
                                           nothing_left: None) -> None:
    service_id = create(client, "storage", "ui-group-rules")
    other_id = create(client, "storage", "ui-group-other")
    try:
        before = snapshot(client, service_id)
        async with UiUploadSocket(client) as ws:
            first = await ws.upload_file(service_id, "upload_9_group", b"one", file_path="d/a",
                                         total_files=3)
            assert first[-1]["type"] == "file.upload.complete"
            for payload, message in [
                (start_payload(service_id, "upload_9_group", b"2", file_path="d/a", index=1,
                               total_files=3), "twice"),
                (start_payload(other_id, "upload_9_group", b"2", file_path="d/b", index=1,
                               total_files=3), "one service"),
                (start_payload(service_id, "upload_9_group", b"2", file_path="d/b", index=1,
                               total_files=2), "total_files"),
                (start_payload(service_id, "upload_9_group", b"2", file_path="d/a/x", index=1,
                               total_files=3), "clashes"),
            ]:
                reply = await ws.request("file.upload.start", payload)
                assert reply["type"] == "file.upload.error", reply
                assert message in reply["payload"]["error"], reply
            # a new batch for the same service replaces the unfinished one
            again = await ws.upload_file(service_id, "upload_9_again", b"solo", file_path="s")
            assert again[-1]["type"] == "file.upload.complete"
        wait_for(lambda: data_details(client, service_id), "the DATA file")
        assert original_name(node_proc, service_id) == "s"
        assert snapshot(client, other_id)[2] == before[2]  # the other service got no file
    finally:
        client.delete(f"/api/services/{service_id}")
        client.delete(f"/api/services/{other_id}")


# -- limits set through settings, on a node of this module's own ------------------------------
@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, ApiClient]]:
    with logged_in(NodeProcess(tmp_path_factory.mktemp("ui-tight") / "node",
                               env={"RN_UPLOAD_TTL_SECONDS": "1",
                                    "RN_UPLOAD_MAX_BYTES": "1000"})) as running:
        yield running


async def test_abandoned_group_expires(tight: tuple[NodeProcess, ApiClient]) -> None:
    node, client = tight
    service_id = create(client, "storage", "ui-expiring")
    before = snapshot(client, service_id)
    async with UiUploadSocket(client) as ws:
        start = await ws.request("file.upload.start", start_payload(
            service_id, "upload_10_idle", b"0123456789", file_path="a", chunk_size=5))
        sid = start["payload"]["session_id"]
        await ws.chunk(sid, 0, b"01234")
        assert not uploads_empty(node)
        wait_for(lambda: uploads_empty(node), "the abandoned upload to go")
        late = await ws.chunk(sid, 1, b"56789")
        assert late["payload"]["code"] == "SESSION_NOT_FOUND"
    assert snapshot(client, service_id) == before


async def test_file_and_group_sizes_bounded(tight: tuple[NodeProcess, ApiClient]) -> None:
    node, client = tight
    service_id = create(client, "storage", "ui-bounded")
    before = snapshot(client, service_id)
    async with UiUploadSocket(client) as ws:
        big = await ws.request("file.upload.start", start_payload(
            service_id, "upload_11_big", b"x" * 1001, file_path="big"))
        assert big["payload"]["code"] == "UPLOAD_START_FAILED"
        assert "total_size" in big["payload"]["error"]
        first = await ws.upload_file(service_id, "upload_11_group", b"x" * 600, file_path="a",
                                     total_files=2)
        assert first[-1]["type"] == "file.upload.complete"
        second = await ws.request("file.upload.start", start_payload(
            service_id, "upload_11_group", b"y" * 500, file_path="b", index=1, total_files=2))
        assert second["type"] == "file.upload.error" and "exceeds" in second["payload"]["error"]
    wait_for(lambda: uploads_empty(node), "the unfinished group to expire")
    assert snapshot(client, service_id) == before


async def test_second_upload_replaces_the_data_file(node_proc: NodeProcess, client: ApiClient,
                                                    tmp_path: Path, nothing_left: None) -> None:
    service_id = create(client, "storage", "ui-data-twice")
    directory = node_proc.data_dir / "services" / str(service_id)
    try:
        async with UiUploadSocket(client) as ws:
            first = await ws.upload_file(service_id, "upload_12_one", b"version one",
                                         file_path="v")
            assert first[-1]["type"] == "file.upload.complete"
            old = wait_for(lambda: data_details(client, service_id), "the first file")
            # until the first group is done, a new one for the service is refused
            wait_for(lambda: uploads_empty(node_proc), "the first group to be done")
            second = await ws.upload_file(service_id, "upload_12_two", b"version two",
                                          file_path="v")
            assert second[-1]["type"] == "file.upload.complete"
        new = wait_for(lambda: (body := data_details(client, service_id)) is not None
                       and body["passphrase"] != old["passphrase"] and body, "the second file")
        stored = Path(new["data_details"]["file_path"])
        assert [p.name for p in directory.iterdir()] == [stored.name]
        out = tmp_path / "plain"
        decrypt_file(stored, out, new["passphrase"])
        assert out.read_bytes() == b"version two"
    finally:
        client.delete(f"/api/services/{service_id}")
    assert not directory.exists()
