"""The original UI's WebSocket keepalive: ``{"type": "ping"}`` is answered with ``pong``."""

from __future__ import annotations

import json
import time

import pytest

from tests.api.test_websocket import call, next_of, ws_connect
from tests.support.node_process import ApiClient


@pytest.mark.parametrize("raw", [
    json.dumps({"type": "ping", "timestamp": 1_700_000_000_000}),
    json.dumps({"type": "ping"}),
    json.dumps({"type": "ping", "payload": None}),
])
async def test_ping_is_answered_with_pong(client: ApiClient, raw: str) -> None:
    async with ws_connect(client) as ws:
        before = int(time.time())
        await ws.send(raw)
        msg = await next_of(ws, "pong")
        assert set(msg) == {"type", "payload", "timestamp"}
        assert msg["payload"] is None
        assert isinstance(msg["timestamp"], int)
        assert before - 1 <= msg["timestamp"] <= int(time.time()) + 1
        # Other messages are handled as before, and events still arrive.
        await ws.send('{"type": "NO_SUCH_TYPE", "payload": {}}')
        err = await next_of(ws, "ERROR")
        assert "Unsupported message type 'NO_SUCH_TYPE'" in err["payload"]["error"]
        wf = await call(client, "POST", "/api/workflows", json={"name": "after-ping"})
        await next_of(ws, "WORKFLOW_UPDATED", {"workflow_id": wf["id"]})


async def test_ping_gets_no_error(client: ApiClient) -> None:
    async with ws_connect(client) as ws:
        await ws.send('{"type": "ping"}')
        first = json.loads(await ws.recv())
        while first.get("type") not in ("pong", "ERROR"):
            first = json.loads(await ws.recv())
        assert first["type"] == "pong"
