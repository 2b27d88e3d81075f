"""A WebSocket client for the chunked upload protocol, for tests (real TLS, not verified)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import uuid
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.support.node_process import ApiClient

UPLOAD_REPLIES = {"FILE_UPLOAD_READY", "FILE_UPLOAD_PROGRESS", "FILE_UPLOAD_COMPLETE",
                  "FILE_UPLOAD_ERROR", "ERROR"}


def insecure_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class UploadConnection:
    """One WebSocket; ``request`` sends a message and returns the next upload reply."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"type": kind, "payload": payload}))

    async def reply(self, timeout: float = 60.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:  # bounded by the timeout; node events are skipped
                message = json.loads(await self.ws.recv())
                if message["type"] in UPLOAD_REPLIES:
                    return message  # type: ignore[no-any-return]

    async def request(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        await self.send(kind, payload)
        return await self.reply()

    async def start(self, data: bytes, *, file_name: str, upload_type: str = "standalone",
                    chunk_size: int = 64 * 1024, session_id: str | None = None,
                    sha256: str | None = None, **extra: Any) -> tuple[str, dict[str, Any]]:
        sid = session_id or f"t-{uuid.uuid4().hex}"
        payload = {"session_id": sid, "upload_type": upload_type, "file_name": file_name,
                   "file_size": len(data), "chunk_size": chunk_size,
                   "total_chunks": -(-len(data) // chunk_size),
                   "sha256": sha256 or hashlib.sha256(data).hexdigest(), **extra}
        return sid, await self.request("FILE_UPLOAD_START", payload)

    async def chunk(self, sid: str, index: int, piece: bytes) -> dict[str, Any]:
        return await self.request("FILE_UPLOAD_CHUNK", {
            "session_id": sid, "chunk_index": index,
            "data": base64.b64encode(piece).decode()})

    async def end(self, sid: str) -> dict[str, Any]:
        return await self.request("FILE_UPLOAD_END", {"session_id": sid})

    async def upload(self, data: bytes, *, file_name: str, chunk_size: int = 64 * 1024,
                     order: Iterable[int] | None = None, **extra: Any) -> dict[str, Any]:
        """A whole upload; returns the final reply (COMPLETE or ERROR)."""
        sid, ready = await self.start(data, file_name=file_name, chunk_size=chunk_size, **extra)
        if ready["type"] != "FILE_UPLOAD_READY":
            return ready
        total = -(-len(data) // chunk_size)
        for index in (range(total) if order is None else order):
            reply = await self.chunk(sid, index, data[index * chunk_size:(index + 1) * chunk_size])
            if reply["type"] != "FILE_UPLOAD_PROGRESS":
                return reply
        return await self.end(sid)


class UploadSocket:
    """``async with UploadSocket(client) as conn:`` a logged-in WebSocket."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._cm: Any = None

    async def __aenter__(self) -> UploadConnection:
        self._cm = connect(self.client.ws_url(), ssl=insecure_ssl(), max_size=2**24,
                           open_timeout=30)
        return UploadConnection(await self._cm.__aenter__())

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)
