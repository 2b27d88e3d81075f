"""The WebSocket chunked upload and finalize of standalone services, against a real node."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.node_process import ApiClient, NodeProcess
from tests.support.upload_client import UploadSocket

SCRIPT = b"#!/bin/sh\necho \"uploaded script says $1\"\n" + b"# padding\n" * 300


def tar_gz(entries: list[tarfile.TarInfo | tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                name, data, mode = entry
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), mode
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def state(node: NodeProcess, client: ApiClient) -> dict[str, Any]:
    def names(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir()) if path.exists() else []

    return {"ids": [s["id"] for s in client.get("/api/services").json()["services"]],
            "services_dir": names(node.data_dir / "services"),
            "staging": names(node.data_dir / "services" / ".staging")}


@pytest.fixture
def unchanged(node_proc: NodeProcess, client: ApiClient) -> Iterator[None]:
    before = state(node_proc, client)
    yield
    assert state(node_proc, client) == before
    uploads = node_proc.data_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


async def test_script_upload_out_of_order_then_finalize(node_proc: NodeProcess,
                                                        client: ApiClient) -> None:
    chunk = 1000
    total = -(-len(SCRIPT) // chunk)
    async with UploadSocket(client) as ws:
        sid, ready = await ws.start(SCRIPT, file_name="hello.sh", chunk_size=chunk,
                                    service_name="uploaded-hello", description="from ws")
        assert ready == {"type": "FILE_UPLOAD_READY", "payload": {
            "session_id": sid, "total_chunks": total, "chunk_size": chunk}}
        order = [2, 0, 1, *range(3, total)]
        seen = []
        for i in order:
            reply = await ws.chunk(sid, i, SCRIPT[i * chunk:(i + 1) * chunk])
            assert reply["type"] == "FILE_UPLOAD_PROGRESS"
            seen.append(reply["payload"]["received_chunks"])
        assert seen == list(range(1, total + 1))
        assert reply["payload"]["percentage"] == 100
        dup = await ws.chunk(sid, 0, SCRIPT[:chunk])  # an identical repeat is harmless
        assert dup["type"] == "FILE_UPLOAD_PROGRESS" and dup["payload"]["duplicate"] is True
        assert dup["payload"]["received_chunks"] == total
        done = await ws.end(sid)
    assert done["type"] == "FILE_UPLOAD_COMPLETE", done
    payload = done["payload"]
    assert payload["session_id"] == sid and payload["sha256"] == hashlib.sha256(SCRIPT).hexdigest()
    service_id = payload["service_id"]
    service = client.get(f"/api/services/{service_id}").json()["service"]
    assert (service["name"], service["status"], service["service_type"]) == (
        "uploaded-hello", "INACTIVE", "STANDALONE")
    counts = client.get("/api/node/status").json()
    details = client.get(f"/api/services/standalone/{service_id}/details").json()["details"]
    assert details["source"] == "upload"
    stored = node_proc.data_dir / "services" / str(service_id) / "hello.sh"
    assert stored.read_bytes() == SCRIPT
    assert not list((node_proc.data_dir / "uploads").iterdir())

    resp = client.post(f"/api/services/standalone/{service_id}/finalize",
                       json={"executable_path": "hello.sh", "arguments": ["--now"],
                             "environment_variables": {"MODE": "x"}, "timeout_seconds": 30})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True and body["service"]["status"] == "ACTIVE"
    assert [i["interface_type"] for i in body["suggested_interfaces"]] == [
        "STDIN", "STDOUT", "STDERR", "LOGS"]
    assert os.access(stored, os.X_OK)  # a plain upload is made executable
    details = client.get(f"/api/services/standalone/{service_id}/details").json()["details"]
    assert details["executable_path"] == str(stored)
    assert details["arguments"] == ["--now"] and details["timeout_seconds"] == 30
    after = client.get("/api/node/status").json()
    assert after["apps_count"] == counts["apps_count"] + 1  # ACTIVE only now
    assert after["files_count"] == counts["files_count"]

    assert client.delete(f"/api/services/standalone/{service_id}").status_code == 200
    assert not stored.parent.exists()  # the node's own copy of an upload goes with it
    assert client.get("/api/node/status").json()["apps_count"] == counts["apps_count"]


async def test_archive_upload_and_finalize(node_proc: NodeProcess, client: ApiClient) -> None:
    archive = tar_gz([("app/run.sh", b"#!/bin/sh\necho app\n", 0o755),
                      ("app/conf/settings.ini", b"[x]\n", 0o644),
                      symlink("app/current", "conf")])
    async with UploadSocket(client) as ws:
        done = await ws.upload(archive, file_name="app.tar.gz", chunk_size=512,
                               service_name="archived-app")
    assert done["type"] == "FILE_UPLOAD_COMPLETE", done
    service_id = done["payload"]["service_id"]
    root = node_proc.data_dir / "services" / str(service_id)
    try:
        assert (root / "app/conf/settings.ini").read_bytes() == b"[x]\n"
        assert os.access(root / "app/run.sh", os.X_OK)
        finalize = f"/api/services/standalone/{service_id}/finalize"
        bad: list[tuple[dict[str, Any], str]] = [
            ({"executable_path": "../../../bin/sh"}, "'..'"),
            ({"executable_path": "/bin/sh"}, "relative"),
            ({"executable_path": "app/missing"}, "does not exist"),
            ({"executable_path": "app/conf/settings.ini"}, "not executable"),
            ({"executable_path": "app"}, "not a regular file"),
            ({"executable_path": "app/run.sh", "working_directory": "nope"}, "not a directory"),
            ({"executable_path": "app/run.sh", "run_as_user": "no-such-user-xyz"},
             "does not exist"),
            ({}, "executable_path"),
        ]
        for body, message in bad:
            resp = client.post(finalize, json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert message in resp.json()["error"], (body, resp.text)
        assert client.get(f"/api/services/{service_id}").json()["service"]["status"] == "INACTIVE"
        resp = client.post(finalize, json={
            "executable_path": "app/run.sh", "working_directory": "app",
            "custom_interfaces": [{"interface_type": "STDOUT"}]})
        assert resp.status_code == 200, resp.text
        details = client.get(f"/api/services/standalone/{service_id}/details").json()
        assert details["service"]["status"] == "ACTIVE"
        assert details["details"]["executable_path"] == str(root / "app/run.sh")
        assert details["details"]["working_directory"] == str(root / "app")
        assert [i["interface_type"] for i in details["service"]["interfaces"]] == ["STDOUT"]
    finally:
        client.delete(f"/api/services/{service_id}")
    assert not root.exists()


async def test_reupload_into_existing_service(node_proc: NodeProcess, client: ApiClient) -> None:
    async with UploadSocket(client) as ws:
        first = await ws.upload(b"#!/bin/sh\necho v1\n", file_name="v1.sh")
        service_id = first["payload"]["service_id"]
        try:
            client.post(f"/api/services/standalone/{service_id}/finalize",
                        json={"executable_path": "v1.sh"})
            second = await ws.upload(b"#!/bin/sh\necho v2\n", file_name="v2.sh",
                                     service_id=service_id)
            assert second["type"] == "FILE_UPLOAD_COMPLETE", second
            assert second["payload"]["service_id"] == service_id
            root = node_proc.data_dir / "services" / str(service_id)
            assert sorted(p.name for p in root.iterdir()) == ["v2.sh"]
            service = client.get(f"/api/services/{service_id}").json()["service"]
            assert service["status"] == "INACTIVE"  # to be finalized again
            wrong = await ws.upload(b"x", file_name="x.sh", service_id=999999)
            assert wrong["type"] == "FILE_UPLOAD_ERROR"
            assert "not found" in wrong["payload"]["error"]
        finally:
            client.delete(f"/api/services/{service_id}")


@pytest.mark.parametrize("entries, message", [
    ([("ok.txt", b"x", 0o644), ("../escape.sh", b"x", 0o755)], "'..'"),
    ([("/etc/evil", b"x", 0o644)], "absolute path"),
    ([symlink("app/link", "../../../../etc")], "links outside"),
    ([symlink("abs", "/etc/passwd")], "links outside"),
])
async def test_evil_archives_rejected(node_proc: NodeProcess, client: ApiClient, unchanged: None,
                                      entries: list[Any], message: str) -> None:
    async with UploadSocket(client) as ws:
        done = await ws.upload(tar_gz(entries), file_name="evil.tar.gz", chunk_size=256)
    assert done["type"] == "FILE_UPLOAD_ERROR", done
    assert message in done["payload"]["error"]
    assert not (node_proc.data_dir.parent / "escape.sh").exists()


async def test_bad_hash_missing_chunk_and_conflicts(client: ApiClient, unchanged: None) -> None:
    data = os.urandom(10_000)
    async with UploadSocket(client) as ws:
        bad = await ws.upload(data, file_name="f.bin", chunk_size=4096,
                              sha256=hashlib.sha256(b"other").hexdigest())
        assert bad["type"] == "FILE_UPLOAD_ERROR"
        assert "sha256 mismatch" in bad["payload"]["error"]

        sid, _ = await ws.start(data, file_name="f.bin", chunk_size=4096)
        await ws.chunk(sid, 0, data[:4096])
        await ws.chunk(sid, 2, data[8192:])
        missing = await ws.end(sid)
        assert missing["type"] == "FILE_UPLOAD_ERROR"
        assert missing["payload"] == {"session_id": sid,
                                      "error": "Upload incomplete: missing chunk(s) 1"}
        again = await ws.chunk(sid, 1, data[4096:8192])  # the session is gone
        assert "Unknown upload session" in again["payload"]["error"]

        sid, _ = await ws.start(data, file_name="f.bin", chunk_size=4096)
        await ws.chunk(sid, 0, data[:4096])
        conflict = await ws.chunk(sid, 0, bytes(4096))
        assert conflict["type"] == "FILE_UPLOAD_ERROR"
        assert "different content" in conflict["payload"]["error"]

        sid, _ = await ws.start(data, file_name="f.bin", chunk_size=4096)
        for index, piece, message in [(3, data[:10], "out of range"),
                                      (0, data[:100], "expected 4096")]:
            reply = await ws.chunk(sid, index, piece)
            assert reply["type"] == "FILE_UPLOAD_ERROR" and message in reply["payload"]["error"]
            sid, _ = await ws.start(data, file_name="f.bin", chunk_size=4096)
        reply = await ws.request("FILE_UPLOAD_CHUNK", {"session_id": sid, "chunk_index": 0,
                                                       "data": "@@not base64@@"})
        assert "base64" in reply["payload"]["error"]


@pytest.mark.parametrize("payload, message", [
    ({"file_name": "../evil.sh"}, "file_name"),
    ({"file_name": "dir/evil.sh"}, "file_name"),
    ({"file_name": "..\\evil"}, "file_name"),
    ({"file_name": ""}, "file_name"),
    ({"upload_type": "zip"}, "upload_type"),
    ({"sha256": "abc"}, "sha256"),
    ({"total_chunks": 7}, "total_chunks"),
    ({"file_size": 0}, "file_size"),
    ({"chunk_size": 64 * 1024 * 1024}, "chunk_size"),
    ({"session_id": "../x"}, "session_id"),
])
async def test_start_rejects_bad_declarations(client: ApiClient, unchanged: None,
                                              payload: dict[str, Any], message: str) -> None:
    base = {"session_id": "bad-start", "upload_type": "standalone", "file_name": "a.sh",
            "file_size": 10, "chunk_size": 4, "total_chunks": 3, "sha256": "0" * 64}
    async with UploadSocket(client) as ws:
        reply = await ws.request("FILE_UPLOAD_START", {**base, **payload})
    assert reply["type"] == "FILE_UPLOAD_ERROR", reply
    assert message in reply["payload"]["error"]


async def test_duplicate_session_id_refused(client: ApiClient, unchanged: None) -> None:
    async with UploadSocket(client) as ws:
        sid, ready = await ws.start(b"abc", file_name="a", session_id="dup-session")
        assert ready["type"] == "FILE_UPLOAD_READY"
        _, second = await ws.start(b"abc", file_name="a", session_id="dup-session")
        assert second["type"] == "FILE_UPLOAD_ERROR" and "already open" in \
            second["payload"]["error"]
        await ws.chunk(sid, 0, b"abd")
        assert (await ws.end(sid))["type"] == "FILE_UPLOAD_ERROR"  # bad hash: cleaned up
