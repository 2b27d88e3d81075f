"""The typed models of the node's and its peers' capabilities and of the peer list: built from
what the producers give (a real probe, a real directory, real signed records), the routes answer
the same bytes as the plain dicts do, and a summary from a hostile peer answers cleanly."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from api.deps import require_token
from api.responses import NodeCapabilities, PeerCapabilities, PeerList, SystemCapabilities
from api.routes import node as node_routes
from api.routes import peers as peer_routes
from network.identity import Identity
from network.peers import PeerInfo
from network.records import (
    NatFacts,
    PeerRecord,
    capabilities_from_summary,
    decode_record,
    encode_record,
)
from orchestrator.blacklist import Blacklist
from orchestrator.capabilities import CapabilityProbe, summary, system_capabilities
from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.discovery import NO_CAPABILITIES, PEER_NOT_FOUND, Discovery, peer_directory
from orchestrator.events import EventBus
from orchestrator.registry import ServiceRegistry

Client = httpx.AsyncClient


def wire(value: Any) -> bytes:
    """The bytes a plain dict answers with."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class Parts:
    """The node parts the capabilities and peers routes read, real ones."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = Database(f"sqlite:///{tmp_path / 'node.db'}")
        self.db.migrate()
        self.bus = EventBus()
        self.identity = Identity.generate()
        self.settings = Settings(data_dir=tmp_path)
        self.capabilities = CapabilityProbe(tmp_path, None, ttl=3600)
        self.peers = peer_directory(self.identity.peer_id, self.settings, self.bus)
        self.blacklist = Blacklist(self.db, self.bus, own_peer_id=self.identity.peer_id)
        self.fetched: list[str] = []
        self.fetch_started = asyncio.Event()
        self.discovery = Discovery(
            self.identity, self.settings, peers=self.peers, bus=self.bus,
            services=ServiceRegistry(self.db, self.bus), capabilities=self.capabilities,
            blacklist=self.blacklist, fetch_capabilities=self._fetch)

    async def _fetch(self, peer_id: str) -> dict[str, Any]:
        self.fetched.append(peer_id)
        self.fetch_started.set()
        return {}

    def publish(self, peer: Identity, *, capabilities: dict[str, Any] | None,
                **fields: Any) -> PeerRecord:
        """A record of ``peer`` signed, framed and checked as the DHT does, then listed."""
        record = PeerRecord(peer_id=peer.peer_id, public_key=peer.public_key_hex, seq=1,
                            timestamp=time.time(), topic=self.settings.topic,
                            capabilities=capabilities, **fields)
        checked = decode_record(encode_record(record, peer), expected_peer_id=peer.peer_id,
                                now=time.time())
        assert self.peers.update_from_record(checked)
        return checked


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    p = Parts(tmp_path)
    try:
        yield p
    finally:
        p.db.close()


@pytest.fixture
async def http(parts: Parts) -> AsyncIterator[Client]:
    app = FastAPI()
    app.include_router(node_routes.router)
    app.include_router(peer_routes.router)
    app.state.node = parts

    async def no_login() -> None:
        return None

    app.dependency_overrides[require_token] = no_login
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        yield client


async def test_node_capabilities_are_the_probe_exactly(parts: Parts, http: Client) -> None:
    system = parts.capabilities.get()
    today = {"docker_available": system["has_docker"], "docker_version": system["docker_version"],
             "system": system}
    resp = await http.get("/api/node/capabilities")
    assert resp.status_code == 200
    assert resp.content == wire(today)
    model = NodeCapabilities.model_validate(today)
    assert model.model_dump_json().encode() == wire(today)
    assert isinstance(model.system, SystemCapabilities)


class _NVMLError(Exception):
    pass


def _nvml_with(gpus: list[tuple[Any, int, Any]]) -> types.ModuleType:
    """A stand-in for pynvml (names and UUIDs in bytes or text, as bindings differ)."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = _NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: b"550.54.15"  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: gpus[h][0]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=gpus[h][1])  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: gpus[h][2]  # type: ignore[attr-defined]
    return mod


@pytest.mark.parametrize("gpus", [
    [],
    [(b"NVIDIA H200", 143771 * 1024**2, b"GPU-1111"), ("NVIDIA A100", 80 * 1024**3, "GPU-2")],
])
def test_gpu_detection_fits_the_model(gpus: list[tuple[Any, int, Any]], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _nvml_with(gpus))
    caps = system_capabilities(tmp_path, None)
    assert len(caps["gpus"]) == len(gpus)
    model = SystemCapabilities.model_validate(caps)
    assert model.model_dump_json().encode() == wire(caps)
    assert model.model_dump(mode="json") == caps


async def test_peer_list_is_the_directory_exactly(parts: Parts, http: Client) -> None:
    full, live = Identity.generate(), Identity.generate()
    parts.publish(full, capabilities=summary(parts.capabilities.get()), is_relay=True,
                  dht_node_id="ab" * 20, files_count=2, apps_count=3,
                  quic_addresses=(("10.0.0.1", 30070),),
                  nat=NatFacts(True, "full_cône", True, "cd" * 20))
    parts.peers.mark_seen(live.peer_id, address=("10.0.0.2", 30070))
    today = parts.discovery.list_peers()
    assert today["total"] == 2
    resp = await http.get("/api/peers")
    assert resp.status_code == 200
    assert resp.content == wire(today)
    assert PeerList.model_validate(today).model_dump_json().encode() == wire(today)


async def test_peer_capabilities_are_the_summary_exactly(parts: Parts, http: Client) -> None:
    peer, live = Identity.generate(), Identity.generate()
    own = parts.capabilities.get()
    parts.publish(peer, capabilities=summary(own))
    parts.peers.mark_seen(live.peer_id)

    resp = await http.get(f"/api/peers/{peer.peer_id}/capabilities")
    assert resp.status_code == 200
    today = {"peer_id": peer.peer_id, "capabilities": capabilities_from_summary(summary(own))}
    assert resp.content == wire(today)
    assert list(resp.json()["capabilities"]) == list(own)
    assert PeerCapabilities.model_validate(today).model_dump_json().encode() == wire(today)
    await asyncio.wait_for(parts.fetch_started.wait(), 5)
    assert parts.fetched == [peer.peer_id]

    for peer_id, error in ((live.peer_id, NO_CAPABILITIES), ("0" * 40, PEER_NOT_FOUND)):
        resp = await http.get(f"/api/peers/{peer_id}/capabilities")
        assert resp.status_code == 200
        assert resp.content == wire({"peer_id": peer_id, "error": error})


async def test_a_hostile_summary_answers_cleanly(parts: Parts, http: Client) -> None:
    peer = Identity.generate()
    hostile = {**summary(parts.capabilities.get()), "cpu_cores": "many", "has_docker": "yes",
               "total_memory_mb": True, "gpu_count": 2, "gpu_memory_mb": 1001,
               "gpu_vendor": "NVIDIA", "tpu_count": 4, "note": None}
    parts.publish(peer, capabilities=hostile)
    resp = await http.get(f"/api/peers/{peer.peer_id}/capabilities")
    assert resp.status_code == 200
    caps = resp.json()["capabilities"]
    assert resp.content == wire({"peer_id": peer.peer_id,
                                 "capabilities": capabilities_from_summary(hostile)})
    assert caps["cpu_cores"] == 0 and caps["has_docker"] is False
    assert caps["total_memory_mb"] == 0
    assert [g["memory_mb"] for g in caps["gpus"]] == [500, 500]
    assert {g["vendor"] for g in caps["gpus"]} == {"NVIDIA"}
    assert "tpu_count" not in caps and "note" not in caps


def test_unknown_keys_are_dropped_and_wrong_types_refused() -> None:
    caps = capabilities_from_summary({"platform": "linux", "gpu_count": 1, "gpu_memory_mb": 8})
    body = {"peer_id": "a" * 40,
            "capabilities": {**caps, "tpu_count": 4,
                             "gpus": [{**caps["gpus"][0], "tensor_cores": 528}]}}
    assert PeerCapabilities.model_validate(body).model_dump(mode="json") == {
        "peer_id": "a" * 40, "capabilities": caps}
    with pytest.raises(ValidationError) as info:
        PeerCapabilities.model_validate({"peer_id": "a" * 40,
                                         "capabilities": {**caps, "cpu_cores": "many"}})
    assert info.value.errors()[0]["loc"] == ("capabilities", "cpu_cores")


async def test_openapi_names_every_field(parts: Parts, http: Client) -> None:
    doc = (await http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert schemas["NodeCapabilities"]["properties"]["system"] == {
        "$ref": "#/components/schemas/SystemCapabilities"}
    assert schemas["PeerList"]["properties"]["peers"]["items"] == {
        "$ref": "#/components/schemas/Peer"}
    caps = schemas["PeerCapabilities"]["properties"]["capabilities"]
    assert {"$ref": "#/components/schemas/SystemCapabilities"} in caps["anyOf"]
    gpu = capabilities_from_summary({"gpu_count": 1})["gpus"][0]
    for name, producer in (("SystemCapabilities", parts.capabilities.get()), ("Gpu", gpu),
                           ("Peer", PeerInfo("a" * 40, time.time()).to_api())):
        schema = schemas[name]
        assert list(schema["properties"]) == list(producer) == schema["required"], name



async def test_answers_conform_to_their_schemas(parts: Parts, http: Client) -> None:
    peer, live = Identity.generate(), Identity.generate()
    parts.publish(peer, capabilities=summary(parts.capabilities.get()),
                  nat=NatFacts(True, "symmetric", False, ""))
    parts.peers.mark_seen(live.peer_id)
    doc = (await http.get("/openapi.json")).json()
    registry = Registry().with_resource("urn:api", Resource.from_contents(
        doc, default_specification=DRAFT202012))
    for path, template in (("/api/node/capabilities", "/api/node/capabilities"),
                           ("/api/peers", "/api/peers"),
                           *((f"/api/peers/{pid}/capabilities", "/api/peers/{peer_id}/capabilities")
                             for pid in (peer.peer_id, live.peer_id, "0" * 40))):
        resp = await http.get(path)
        answer = doc["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]
        ref = "urn:api" + answer["schema"]["$ref"]
        Draft202012Validator({"$ref": ref}, registry=registry).validate(resp.json())
