"""The WebSocket: node events out, uploads and searches in. Needs ``?token=JWT``.

A message is at most ``MAX_MESSAGE_BYTES`` (the server closes the socket with 1009 past it: an
upload chunk of the largest size, 4 MiB, base64 in JSON, fits); its numbers are read as the
REST bodies' are (``api.strict_json``: finite, integers within 64 bits) or it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status

from api.deps import Auth, Bus, WsHandler, WsHandlers
from api.strict_json import UnsafeNumber, loads
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


@router.websocket("/api/ws")
async def websocket(ws: WebSocket, auth: Auth, bus: Bus, handlers: WsHandlers) -> None:
    try:
        auth.check_token(ws.query_params.get("token", ""))
    except AuthFailed:
        await ws.close(code=status.WS_1008_POLICY_VIOLATION, reason="Unauthorized")
        return
    await ws.accept()
    send_lock = asyncio.Lock()

    async def send(message: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_json(message)

    background: set[asyncio.Task[None]] = set()
    async with bus.subscribe() as sub:
        pump = asyncio.create_task(_pump(sub, send))
        try:
            await _receive(ws, handlers, send, background)
        except WebSocketDisconnect:
            pass
        finally:
            for task in (pump, *background):
                task.cancel()
            for task in (pump, *background):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _pump(sub: Any, send: Any) -> None:
    while True:
        event = await sub.get()
        try:
            await send(event.to_message())
        except Exception:  # the client went away mid-send; the receive side will notice
            return


async def _receive_frame(ws: WebSocket) -> str:
    """The next frame as text; a binary frame is read as UTF-8 (undecodable: not JSON)."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is not None:
        return str(message["text"])
    return bytes(message.get("bytes") or b"").decode("utf-8", errors="replace")


async def _receive(ws: WebSocket, handlers: Mapping[str, WsHandler], send: Any,
                   background: set[asyncio.Task[None]]) -> None:
    while True:
        raw = await _receive_frame(ws)
        if len(raw) > MAX_MESSAGE_BYTES:
            await send(error_message("Message too large"))
            continue
        try:
            message = loads(raw)
        except UnsafeNumber as exc:
            await send(error_message(f"Malformed message: {exc}"))
            continue
        except (ValueError, RecursionError):
            await send(error_message("Malformed message: not JSON"))
            continue
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await send(error_message("Malformed message: expected {\"type\", \"payload\"}"))
            continue
        kind, payload = message["type"], message.get("payload") or {}
        if not isinstance(payload, dict):
            await send(error_message("Malformed message: payload must be an object",
                                     request_type=kind))
            continue
        handler = handlers.get(kind)
        if handler is None:
            await send(error_message(f"Unsupported message type '{kind}'", request_type=kind))
            continue
        if getattr(handler, "runs_in_background", False):
            # Long requests (a search across peers) must not hold up the messages after them.
            task = asyncio.create_task(_handle(handler, kind, payload, send))
            background.add(task)
            task.add_done_callback(background.discard)
        else:
            await _handle(handler, kind, payload, send)


async def _handle(handler: Any, kind: str, payload: dict[str, Any], send: Any) -> None:
    try:
        await handler(payload, send)
    except DomainError as exc:
        await send(error_message(exc.message, request_type=kind))
    except Exception:
        log.exception("WebSocket handler for %s failed", kind)
        with contextlib.suppress(Exception):
            await send(error_message("Internal error", request_type=kind))
