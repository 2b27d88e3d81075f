"""The WebSocket: token check, events after REST changes, malformed input, many clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support.node_process import ApiClient, NodeProcess

TIMEOUT = 20.0


def _ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@contextlib.asynccontextmanager
async def ws_connect(client: ApiClient, url: str | None = None) -> AsyncIterator[ClientConnection]:
    async with connect(url or client.ws_url(), ssl=_ssl(), open_timeout=TIMEOUT) as ws:
        yield ws


async def next_of(ws: ClientConnection, kind: str, match: dict[str, Any] | None = None,
                  timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next message of type ``kind`` whose payload contains ``match``; others are skipped."""
    async def wait() -> dict[str, Any]:
        while True:
            message = json.loads(await ws.recv())
            payload = message.get("payload") or {}
            if message.get("type") == kind and all(payload.get(k) == v
                                                   for k, v in (match or {}).items()):
                return message
    return await asyncio.wait_for(wait(), timeout)


async def call(client: ApiClient, method: str, path: str, **kwargs: Any) -> Any:
    resp = await asyncio.to_thread(client.request, method, path, **kwargs)
    assert resp.status_code < 300, resp.text
    return resp.json()


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b.c"])
async def test_bad_or_missing_token_is_rejected(client: ApiClient, token: str | None) -> None:
    base = client.base_url.replace("https://", "wss://") + "/api/ws"
    url = base if token is None else f"{base}?token={token}"
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(client, url):
            pass
    assert info.value.response.status_code == 403


async def test_events_follow_rest_changes(client: ApiClient) -> None:
    async with ws_connect(client) as ws:
        svc = (await call(client, "POST", "/api/services",
                          json={"type": "docker", "name": "ws-svc", "endpoint": "e"}))["service"]
        msg = await next_of(ws, "SERVICE_UPDATED", {"service_id": svc["id"]})
        assert msg["payload"]["action"] == "created"
        await call(client, "PUT", f"/api/services/{svc['id']}/status",
                   json={"status": "INACTIVE"})
        assert (await next_of(ws, "SERVICE_UPDATED",
                              {"service_id": svc["id"]}))["payload"]["action"] == "updated"

        wf = await call(client, "POST", "/api/workflows", json={"name": "ws-wf"})
        msg = await next_of(ws, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})
        assert msg["payload"]["action"] == "created"
        await call(client, "DELETE", f"/api/workflows/{wf['id']}")
        msg = await next_of(ws, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})
        assert msg["payload"]["action"] == "deleted"

        peer = secrets.token_hex(20)
        await call(client, "POST", "/api/blacklist", json={"peer_id": peer})
        msg = await next_of(ws, "BLACKLIST_UPDATED", {"peer_id": peer})
        assert msg["payload"]["action"] == "added"
        await call(client, "DELETE", f"/api/blacklist/{peer}")
        assert (await next_of(ws, "BLACKLIST_UPDATED",
                              {"peer_id": peer}))["payload"]["action"] == "removed"

        await call(client, "DELETE", f"/api/services/{svc['id']}")
        assert (await next_of(ws, "SERVICE_UPDATED",
                              {"service_id": svc["id"]}))["payload"]["action"] == "deleted"


@pytest.mark.parametrize(("raw", "fragment"), [
    ("not json", "not JSON"),
    ("[1, 2]", "expected"),
    ('{"payload": {}}', "expected"),
    ('{"type": 5}', "expected"),
    ('{"type": "NO_SUCH_TYPE", "payload": {}}', "Unsupported message type 'NO_SUCH_TYPE'"),
    ('{"type": "FILE_UPLOAD_START", "payload": [1]}', "payload must be an object"),
    ('{"type": "FILE_UPLOAD_START", "payload": "x"}', "payload must be an object"),
])
async def test_malformed_messages_get_an_error(client: ApiClient, raw: str,
                                               fragment: str) -> None:
    async with ws_connect(client) as ws:
        await ws.send(raw)
        msg = await next_of(ws, "ERROR")
        assert fragment in msg["payload"]["error"]
        # The socket stays usable: a second bad message is answered, and events still arrive.
        await ws.send("still not json")
        assert "not JSON" in (await next_of(ws, "ERROR"))["payload"]["error"]
        wf = await call(client, "POST", "/api/workflows", json={"name": "after-error"})
        await next_of(ws, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})


async def test_binary_frame_is_answered_and_socket_survives(client: ApiClient) -> None:
    async with ws_connect(client) as ws:
        await ws.send(b"\x00\x01binary")
        msg = await next_of(ws, "ERROR")
        assert msg["payload"]["error"]
        wf = await call(client, "POST", "/api/workflows", json={"name": "after-binary"})
        await next_of(ws, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})


async def test_twenty_clients_all_receive(client: ApiClient) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(ws_connect(client)) for _ in range(20)]
        wf = await call(client, "POST", "/api/workflows", json={"name": "broadcast"})
        messages = await asyncio.gather(*(next_of(ws, "WORKFLOW_UPDATED",
                                                  {"workflow_id": wf["id"]})
                                          for ws in sockets))
    assert len(messages) == 20
    assert all(m["payload"]["action"] == "created" for m in messages)


async def test_abrupt_disconnects_do_not_disturb_others(client: ApiClient) -> None:
    async with ws_connect(client) as steady:
        # Several clients vanish without a close frame, one of them in the middle of a frame.
        for i in range(5):
            async with ws_connect(client) as doomed:
                if i == 0:
                    doomed.transport.write(b"\x81\xfe\x10\x00" + b"\x00" * 4 + b"half")
                doomed.transport.abort()
        wf = await call(client, "POST", "/api/workflows", json={"name": "after-aborts"})
        await next_of(steady, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})
        # The node still accepts new clients.
        async with ws_connect(client) as fresh:
            await call(client, "PUT", f"/api/workflows/{wf['id']}",
                       json={"name": "renamed"})
            await next_of(fresh, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})
        await next_of(steady, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})


async def test_token_in_the_url_never_reaches_the_log(node_proc: NodeProcess,
                                                      client: ApiClient) -> None:
    async with ws_connect(client) as ws:
        await ws.send("{}")
        await next_of(ws, "ERROR")
    assert client.token and "WebSocket /api/ws?token=[redacted]" in node_proc.log()
    assert client.token not in node_proc.log()
