"""DATA services: an uploaded file stored encrypted, its passphrase, and the service counts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.services.data_crypto import DecryptionError, decrypt_file
from tests.support.node_process import ApiClient, NodeProcess
from tests.support.upload_client import UploadSocket

MIB = 1024 * 1024


def counts(client: ApiClient) -> tuple[int, int]:
    status = client.get("/api/node/status").json()
    return status["files_count"], status["apps_count"]


@pytest.fixture
def unchanged(node_proc: NodeProcess, client: ApiClient) -> Iterator[None]:
    def state() -> Any:
        services = node_proc.data_dir / "services"
        return ([s["id"] for s in client.get("/api/services").json()["services"]],
                sorted(p.name for p in services.iterdir()) if services.exists() else [],
                sorted(p.name for p in (services / ".staging").iterdir())
                if (services / ".staging").exists() else [])

    before = state()
    yield
    assert state() == before
    assert list((node_proc.data_dir / "uploads").iterdir()) == []


async def test_data_upload_encrypted_round_trip(node_proc: NodeProcess, client: ApiClient,
                                                tmp_path: Path) -> None:
    marker = b"PLAINTEXT-MARKER-0123456789"
    data = marker + os.urandom(3 * MIB + 12345) + marker
    files_before, apps_before = counts(client)
    async with UploadSocket(client) as ws:
        done = await ws.upload(data, file_name="dataset.bin", upload_type="data",
                               chunk_size=MIB, service_name="my-dataset",
                               description="a few MiB")
    assert done["type"] == "FILE_UPLOAD_COMPLETE", done
    service_id = done["payload"]["service_id"]
    assert done["payload"]["service_type"] == "DATA"
    assert "passphrase" not in str(done)
    try:
        service = client.get(f"/api/services/{service_id}").json()["service"]
        assert (service["name"], service["status"], service["service_type"]) == (
            "my-dataset", "ACTIVE", "DATA")
        assert counts(client) == (files_before + 1, apps_before)

        resp = client.get(f"/api/services/{service_id}/passphrase")
        assert resp.status_code == 200
        body = resp.json()
        passphrase, details = body["passphrase"], body["data_details"]
        assert len(passphrase) >= 40
        assert details["service_id"] == service_id
        assert details["file_size"] == len(data)
        assert details["file_hash"] == hashlib.sha256(data).hexdigest()
        assert details["encryption_method"] == "AES-256-GCM"

        encrypted = Path(details["file_path"])
        assert encrypted.is_relative_to(node_proc.data_dir / "services")
        raw = encrypted.read_bytes()
        # Beside them, the names the original web UI's service page reads.
        assert (details["size_bytes"], details["original_size_bytes"], details["hash"],
                details["compression_type"]) == (len(raw), len(data), details["file_hash"],
                                                 "none")
        assert marker not in raw and len(raw) > len(data)
        out = tmp_path / "plain"
        assert decrypt_file(encrypted, out, passphrase) == (len(data),
                                                            hashlib.sha256(data).hexdigest())
        assert out.read_bytes() == data
        with pytest.raises(DecryptionError):
            decrypt_file(encrypted, tmp_path / "nope", "wrong-passphrase")

        # The passphrase shows up nowhere else.
        listing = client.get("/api/services").text
        assert passphrase not in listing and passphrase not in client.get(
            f"/api/services/{service_id}").text
        assert passphrase not in node_proc.log()
        # No plaintext copy is left on the node's disk.
        for path in node_proc.data_dir.rglob("*"):
            if path.is_file() and path.stat().st_size >= len(data):
                assert marker not in path.read_bytes(), path
    finally:
        client.delete(f"/api/services/{service_id}")
    assert not encrypted.exists()
    assert counts(client) == (files_before, apps_before)


async def test_inactive_data_service_not_counted(client: ApiClient) -> None:
    files_before, _ = counts(client)
    async with UploadSocket(client) as ws:
        done = await ws.upload(b"tiny", file_name="t.txt", upload_type="data")
    service_id = done["payload"]["service_id"]
    try:
        assert counts(client)[0] == files_before + 1
        client.put(f"/api/services/{service_id}/status", json={"status": "INACTIVE"})
        assert counts(client)[0] == files_before
    finally:
        client.delete(f"/api/services/{service_id}")


async def test_data_upload_bad_hash_leaves_nothing(client: ApiClient, unchanged: None) -> None:
    data = os.urandom(300_000)
    async with UploadSocket(client) as ws:
        done = await ws.upload(data, file_name="d.bin", upload_type="data",
                               chunk_size=100_000, sha256=hashlib.sha256(b"x").hexdigest())
        assert done["type"] == "FILE_UPLOAD_ERROR"
        assert "sha256 mismatch" in done["payload"]["error"]
        sid, _ = await ws.start(data, file_name="d.bin", upload_type="data", chunk_size=100_000)
        await ws.chunk(sid, 1, data[100_000:200_000])
        missing = await ws.end(sid)
        assert "missing chunk(s) 0, 2" in missing["payload"]["error"]
        _, refused = await ws.start(data, file_name="d.bin", upload_type="data",
                                    service_id=1)
        assert "standalone uploads only" in refused["payload"]["error"]


def test_passphrase_only_for_data_services(client: ApiClient) -> None:
    other = client.post("/api/services/standalone/from-local",
                        json={"service_name": "p", "executable_path": "/usr/bin/wc"})
    service_id = other.json()["service"]["id"]
    try:
        resp = client.get(f"/api/services/{service_id}/passphrase")
        assert resp.status_code == 400
        assert "not a DATA service" in resp.json()["error"]
    finally:
        client.delete(f"/api/services/{service_id}")


async def test_data_file_feeds_an_uploaded_program_in_a_workflow(node_proc: NodeProcess,
                                                                 client: ApiClient) -> None:
    """A DATA service wired into an uploaded, finalized script: the job reads the clear bytes,
    which are not left in the node's artifact store afterwards (only the encrypted file is)."""
    data = os.urandom(200_000)
    script = b"#!/bin/sh\nsha256sum | cut -d' ' -f1\n"
    async with UploadSocket(client) as ws:
        data_done = await ws.upload(data, file_name="in.bin", upload_type="data")
        prog_done = await ws.upload(script, file_name="digest.sh")
    data_id = data_done["payload"]["service_id"]
    prog_id = prog_done["payload"]["service_id"]
    workflow = None
    try:
        resp = client.post(f"/api/services/standalone/{prog_id}/finalize",
                           json={"executable_path": "digest.sh"})
        assert resp.status_code == 200, resp.text
        prog_ifaces = {i["interface_type"]: i["id"] for i in
                       client.get(f"/api/services/{prog_id}/interfaces").json()["interfaces"]}
        workflow = client.post("/api/workflows", json={"name": "data-digest"}).json()["id"]
        nodes = [client.post(f"/api/workflows/{workflow}/nodes",
                             json={"service_id": sid}).json()["id"] for sid in (data_id, prog_id)]
        resp = client.post(f"/api/workflows/{workflow}/connections", json={
            "source_node_id": nodes[0], "target_node_id": nodes[1],
            "target_interface_id": prog_ifaces["STDIN"]})
        assert resp.status_code == 201, resp.text
        resp = client.post(f"/api/workflows/{workflow}/execute")
        assert resp.status_code == 202, resp.text
        execution = resp.json()["execution_id"]
        deadline = time.monotonic() + 240
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = client.get(f"/api/workflow-executions/{execution}/status").json()
            if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                break
            await asyncio.sleep(0.3)
        assert status["status"] == "COMPLETED", status
        jobs = client.get(f"/api/workflow-executions/{execution}/jobs").json()["jobs"]
        job = next(j for j in jobs if j["node_id"] == nodes[1])
        outs = client.get(f"/api/job-executions/{job['id']}/interfaces").json()["interfaces"]
        stdout = next(i for i in outs if i["direction"] == "output"
                      and i["interface_type"] == "STDOUT")
        clear = hashlib.sha256(data).hexdigest()
        assert stdout["value"].strip() == clear
        store = node_proc.data_dir / "artifacts"
        assert not (store / clear[:2] / clear).exists()
        encrypted = (node_proc.data_dir / "services" / str(data_id) / "data.enc").read_bytes()
        sealed = hashlib.sha256(encrypted).hexdigest()
        assert (store / sealed[:2] / sealed).is_file()
    finally:
        if workflow is not None:
            client.delete(f"/api/workflows/{workflow}")
        client.delete(f"/api/services/{data_id}")
        client.delete(f"/api/services/{prog_id}")
