"""A WebSocket client speaking the web UI's upload dialect (``file.upload.*``), for tests.

It behaves like the UI: one file at a time, stop-and-wait (the next chunk is the
``chunks_received`` of the last progress), the node assigning the session id.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.support.node_process import ApiClient
from tests.support.upload_client import insecure_ssl

UI_REPLIES = {"file.upload.progress", "file.upload.complete", "file.upload.error"}
CHUNK = 64 * 1024


def start_payload(service_id: int, group: str, data: bytes, *, file_path: str, index: int = 0,
                  total_files: int = 1, chunk_size: int = CHUNK) -> dict[str, Any]:
    return {"service_id": service_id, "upload_group_id": group,
            "filename": file_path.rsplit("/", 1)[-1], "file_path": file_path,
            "file_index": index, "total_files": total_files, "total_size": len(data),
            "total_chunks": -(-len(data) // chunk_size), "chunk_size": chunk_size}


class UiUploadConnection:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []  # the other messages seen while reading replies

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"type": kind, "payload": payload}))

    async def reply(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next upload reply (other messages are kept in ``events``)."""
        async with asyncio.timeout(timeout):
            while True:  # bounded by the timeout
                message = json.loads(await self.ws.recv())
                if message["type"] in UI_REPLIES:
                    return message  # type: ignore[no-any-return]
                self.events.append(message)

    async def request(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        await self.send(kind, payload)
        return await self.reply()

    async def drain(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The upload replies still on their way: everything before the answer to a ping."""
        await self.ws.send(json.dumps({"type": "ping"}))
        seen = []
        async with asyncio.timeout(timeout):
            while True:  # bounded by the timeout
                message = json.loads(await self.ws.recv())
                if message["type"] == "pong":
                    return seen
                if message["type"] in UI_REPLIES:
                    seen.append(message)
                else:
                    self.events.append(message)

    async def wait_event(self, match: Callable[[dict[str, Any]], bool],
                         timeout: float = 60.0) -> dict[str, Any]:
        """The first message (seen already or to come) that ``match`` accepts."""
        for message in self.events:
            if match(message):
                return message
        async with asyncio.timeout(timeout):
            while True:  # bounded by the timeout
                message = json.loads(await self.ws.recv())
                self.events.append(message)
                if match(message):
                    return message

    async def chunk(self, sid: str, index: int, piece: bytes) -> dict[str, Any]:
        return await self.request("file.upload.chunk", {
            "session_id": sid, "chunk_index": index, "data": base64.b64encode(piece).decode()})

    async def upload_file(self, service_id: int, group: str, data: bytes, *, file_path: str,
                          index: int = 0, total_files: int = 1,
                          chunk_size: int = CHUNK) -> list[dict[str, Any]]:
        """One file, as the UI sends it -> every reply, the last one COMPLETE or ERROR."""
        replies = [await self.request("file.upload.start", start_payload(
            service_id, group, data, file_path=file_path, index=index, total_files=total_files,
            chunk_size=chunk_size))]
        total = -(-len(data) // chunk_size)
        for _ in range(total + 1):  # one reply per chunk, then the completion
            last = replies[-1]
            if last["type"] != "file.upload.progress":
                return replies
            payload = last["payload"]
            received = payload["chunks_received"]
            if received >= total:
                replies.append(await self.reply())
                return replies
            piece = data[received * chunk_size:(received + 1) * chunk_size]
            replies.append(await self.chunk(payload["session_id"], received, piece))
        raise AssertionError(f"the upload did not end: {replies[-3:]}")

    async def upload_files(self, service_id: int, group: str, files: list[tuple[str, bytes]],
                           *, chunk_size: int = CHUNK) -> list[list[dict[str, Any]]]:
        """A batch, one file after the other; stops at the first file that does not complete."""
        done = []
        for index, (path, data) in enumerate(files):
            replies = await self.upload_file(service_id, group, data, file_path=path, index=index,
                                             total_files=len(files), chunk_size=chunk_size)
            done.append(replies)
            if replies[-1]["type"] != "file.upload.complete":
                break
        return done


class UiUploadSocket:
    """``async with UiUploadSocket(client) as conn:`` a logged-in WebSocket."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._cm: Any = None

    async def __aenter__(self) -> UiUploadConnection:
        self._cm = connect(self.client.ws_url(), ssl=insecure_ssl(), max_size=2**24,
                           open_timeout=30)
        return UiUploadConnection(await self._cm.__aenter__())

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)
