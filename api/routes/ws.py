"""The WebSocket: node events out, uploads and searches in. Needs ``?token=JWT``.

A connection that sends a dot-case message (``ping``, ``service.search.request``, ...) speaks
the original web UI's dialect from then on: beside the reference's events it gets the UI's
(``api.ui_events``), including periodic snapshots, and each error also as lowercase ``error``.

A message is at most ``MAX_MESSAGE_BYTES`` (the server closes the socket with 1009 past it: an
upload chunk of the largest size, 4 MiB, base64 in JSON, fits); its numbers are read as the
REST bodies' are (``api.strict_json``: finite, integers within 64 bits) or it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect, status
from starlette.requests import HTTPConnection

from api import ui_events
from api.deps import (
    Auth,
    Blacklist,
    Bus,
    Control,
    Discovery,
    ExecutionRecords,
    Policy,
    Services,
    Workflows,
    WsHandler,
    WsHandlers,
    parts_of,
)
from api.strict_json import UnsafeNumber, loads
from api.ui_search import local_results, with_ui_handlers
from orchestrator.errors import AuthFailed, DomainError

log = logging.getLogger("remote_network.ws")
router = APIRouter(tags=["websocket"])
# 4 MiB of chunk is 5.34 MiB in base64, plus the message's other fields.
MAX_MESSAGE_BYTES = 6 * 1024 * 1024


def error_message(message: str, *, request_type: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"error": message}
    if request_type:
        payload["request_type"] = request_type
    return {"type": "ERROR", "payload": payload}


def pong_message() -> dict[str, Any]:
    """The answer to a client's keepalive ``{"type": "ping"}``."""
    return {"type": "pong", "payload": None, "timestamp": int(time.time())}


async def ui_sources(conn: HTTPConnection, records: ExecutionRecords, services: Services,
                     policy: Policy, workflows: Workflows, blacklist: Blacklist,
                     discovery: Discovery, control: Control) -> ui_events.Sources:
    """What the UI's messages are built from (read only once a connection switches)."""
    return ui_events.Sources(records=records, services=services, policy=policy,
                             workflows=workflows, blacklist=blacklist, discovery=discovery,
                             control=control, relays=parts_of(conn))


class Connection:
    """One client: its sender, and whether it speaks the UI's dialect."""

    def __init__(self, ws: WebSocket, sources: ui_events.Sources) -> None:
        self.ws = ws
        self.sources = sources
        self.ui = False
        self.pushes: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self.ws.send_json(message)

    async def error(self, message: str, *, request_type: str | None = None) -> None:
        await self.send(error_message(message, request_type=request_type))
        if self.ui:
            await self.send(ui_events.error(message, request_type=request_type))

    def saw(self, kind: str) -> None:
        """Switch to the UI's dialect on its first dot-case message."""
        if ui_events.speaks_ui(kind):
            self.switch()

    def switch(self) -> None:
        if not self.ui:
            self.ui = True
            self.pushes = asyncio.create_task(_ui_pushes(self))


@router.websocket("/api/ws")
async def websocket(ws: WebSocket, auth: Auth, bus: Bus, handlers: WsHandlers,
                    sources: Annotated[ui_events.Sources, Depends(ui_sources)]) -> None:
    try:
        auth.check_token(ws.query_params.get("token", ""))
    except AuthFailed:
        await ws.close(code=status.WS_1008_POLICY_VIOLATION, reason="Unauthorized")
        return
    await ws.accept()
    conn = Connection(ws, sources)
    if ws.headers.get("origin"):
        # A browser page (every browser sends Origin on a WebSocket; the UI sends nothing for
        # its first 30 s): its dashboard gets the UI's snapshots from the start. The
        # reference's messages still come; a client ignores the types it does not know.
        conn.switch()
    background: set[asyncio.Task[None]] = set()
    async with bus.subscribe() as sub:
        pump = asyncio.create_task(_pump(sub, conn))
        try:
            node = parts_of(ws)
            await _receive(ws, with_ui_handlers(
                handlers, own_peer_id=node.peer_id,
                local=local_results(sources.services, node.peer_id)), conn, background)
        except WebSocketDisconnect:
            pass
        finally:
            tasks = (pump, *background, *([conn.pushes] if conn.pushes else []))
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _pump(sub: Any, conn: Connection) -> None:
    while True:
        event = await sub.get()
        try:
            await conn.send(event.to_message())
            if conn.ui and event.type in ui_events.TRANSLATED:
                for message in await _ui_messages(event, conn.sources):
                    await conn.send(message)
        except Exception:  # the client went away mid-send; the receive side will notice
            return


async def _ui_messages(event: Any, sources: ui_events.Sources) -> list[dict[str, Any]]:
    try:
        return await asyncio.to_thread(ui_events.translate, event.type, event.payload, sources)
    except Exception:
        log.exception("UI message for %s failed", event.type)
        return []


async def _ui_pushes(conn: Connection) -> None:
    """The UI's periodic snapshots, from the switch on, until the connection closes."""
    elapsed = 0
    while True:
        for message in await asyncio.to_thread(ui_events.periodic, elapsed, conn.sources):
            try:
                await conn.send(message)
            except Exception:  # the client went away; the receive side will notice
                return
        await asyncio.sleep(ui_events.TICK_SECONDS)
        elapsed += ui_events.TICK_SECONDS


async def _receive_frame(ws: WebSocket) -> str:
    """The next frame as text; a binary frame is read as UTF-8 (undecodable: not JSON)."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is not None:
        return str(message["text"])
    return bytes(message.get("bytes") or b"").decode("utf-8", errors="replace")


async def _receive(ws: WebSocket, handlers: Mapping[str, WsHandler], conn: Connection,
                   background: set[asyncio.Task[None]]) -> None:
    while True:
        raw = await _receive_frame(ws)
        if len(raw) > MAX_MESSAGE_BYTES:
            await conn.error("Message too large")
            continue
        try:
            message = loads(raw)
        except UnsafeNumber as exc:
            await conn.error(f"Malformed message: {exc}")
            continue
        except (ValueError, RecursionError):
            await conn.error("Malformed message: not JSON")
            continue
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await conn.error("Malformed message: expected {\"type\", \"payload\"}")
            continue
        kind, payload = message["type"], message.get("payload") or {}
        if kind == "ping":
            await conn.send(pong_message())
            conn.saw(kind)
            continue
        conn.saw(kind)
        if not isinstance(payload, dict):
            await conn.error("Malformed message: payload must be an object", request_type=kind)
            continue
        handler = handlers.get(kind)
        if handler is None:
            await conn.error(f"Unsupported message type '{kind}'", request_type=kind)
            continue
        if getattr(handler, "runs_in_background", False):
            # Long requests (a search across peers) must not hold up the messages after them.
            task = asyncio.create_task(_handle(handler, kind, payload, conn))
            background.add(task)
            task.add_done_callback(background.discard)
        else:
            await _handle(handler, kind, payload, conn)


async def _handle(handler: Any, kind: str, payload: dict[str, Any], conn: Connection) -> None:
    try:
        await handler(payload, conn.send)
    except DomainError as exc:
        await conn.error(exc.message, request_type=kind)
    except Exception:
        log.exception("WebSocket handler for %s failed", kind)
        with contextlib.suppress(Exception):
            await conn.error("Internal error", request_type=kind)
