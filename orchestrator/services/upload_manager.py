"""The WebSocket upload handlers: the protocol (``uploads``) driven over the store
(``upload_store``), ending in a standalone or a DATA service.

Replies go to the uploading client only: FILE_UPLOAD_READY, FILE_UPLOAD_PROGRESS,
FILE_UPLOAD_COMPLETE and FILE_UPLOAD_ERROR, each with the ``session_id``. After an error about a
session, that session is gone and its files are removed; the client starts again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import DomainError
from orchestrator.services.archive import ArchiveError, extract, is_archive
from orchestrator.services.data_services import DataServices
from orchestrator.services.standalone_services import StandaloneServices
from orchestrator.services.ui_upload_manager import UiUploadManager
from orchestrator.services.upload_store import UploadStore
from orchestrator.services.uploads import (
    ChunkVerdict,
    UploadError,
    UploadLimits,
    UploadProtocol,
    UploadSession,
    UploadType,
)

log = logging.getLogger("remote_network.uploads")

Reply = Callable[[dict[str, Any]], Awaitable[None]]

READY = "FILE_UPLOAD_READY"
PROGRESS = "FILE_UPLOAD_PROGRESS"
COMPLETE = "FILE_UPLOAD_COMPLETE"
ERROR = "FILE_UPLOAD_ERROR"


def _message(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "payload": payload}


class UploadManager:
    def __init__(self, settings: Settings, *, standalone: StandaloneServices,
                 data: DataServices, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.standalone = standalone
        self.data = data
        self.clock = clock
        self.protocol = UploadProtocol(UploadLimits(max_file_size=settings.upload_max_bytes,
                                                    ttl=settings.upload_ttl_seconds))
        self.store = UploadStore(settings.uploads_dir)
        # The web UI's dialect (``file.upload.*``), on the same store, sweeper and limits.
        self.ui = UiUploadManager(settings, store=self.store, standalone=standalone, data=data,
                                  clock=clock)
        self._sweeper: asyncio.Task[None] | None = None
        # Sessions past END whose files are being turned into a service.
        self._completing: set[str] = set()

    def handlers(self) -> dict[str, Callable[[dict[str, Any], Reply], Awaitable[None]]]:
        return {"FILE_UPLOAD_START": self.on_start, "FILE_UPLOAD_CHUNK": self.on_chunk,
                "FILE_UPLOAD_END": self.on_end}

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Remove what earlier runs left behind and start expiring abandoned sessions."""
        removed = await asyncio.to_thread(self._startup_cleanup)
        if removed:
            log.info("removed %d leftover upload(s)", removed)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="upload-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.ui.stop()

    def _startup_cleanup(self) -> int:
        self.settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._staging_root(), ignore_errors=True)
        return self.store.sweep_all()

    @property
    def sweep_interval(self) -> float:
        return max(0.2, min(30.0, self.settings.upload_ttl_seconds / 4))

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
                await self.ui.sweep()
            except Exception:
                log.exception("upload sweep failed")

    async def sweep(self) -> list[str]:
        """Drop the sessions idle past the ttl, and their files."""
        expired = self.protocol.expire(self.clock())
        for session in expired:
            log.info("upload %s abandoned after %.0fs; removed", session.session_id,
                     self.settings.upload_ttl_seconds)
            await asyncio.to_thread(self.store.discard, session.session_id)
        return [s.session_id for s in expired]

    # -- handlers -------------------------------------------------------------------------------
    async def on_start(self, payload: dict[str, Any], reply: Reply) -> None:
        try:
            if payload.get("session_id") in self._completing:
                raise UploadError("Upload session is still being completed",
                                  session_id=str(payload.get("session_id")))
            session = self.protocol.start(payload, self.clock())
        except UploadError as exc:
            await self._error(reply, exc)
            return
        spec = session.spec
        try:
            if spec.service_id is not None:
                await asyncio.to_thread(self.standalone.check_upload_target, spec.service_id)
            await asyncio.to_thread(self.store.open_session, spec.session_id)
        except DomainError as exc:
            self.protocol.abort(spec.session_id)
            await self._error(reply, UploadError(exc.message, session_id=spec.session_id))
            return
        except OSError:
            self.protocol.abort(spec.session_id)
            log.exception("cannot open upload %s", spec.session_id)
            await self._error(reply, UploadError("Upload failed: cannot store files",
                                                 session_id=spec.session_id))
            return
        await reply(_message(READY, {"session_id": spec.session_id,
                                     "total_chunks": spec.total_chunks,
                                     "chunk_size": spec.chunk_size}))

    async def on_chunk(self, payload: dict[str, Any], reply: Reply) -> None:
        session_id = payload.get("session_id")
        try:
            session = self.protocol.get(session_id)
            try:
                data = base64.b64decode(str(payload.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                self.protocol.abort(session.session_id)
                raise UploadError("chunk data is not valid base64", session_id=session.session_id,
                                  fatal=True) from None
            index: Any = payload.get("chunk_index")
            verdict = self.protocol.chunk(session.session_id, index, data, self.clock())
            if verdict is ChunkVerdict.NEW:  # the protocol checked that index is an int in range
                await asyncio.to_thread(self.store.write_chunk, session.session_id, index, data)
        except UploadError as exc:
            await self._error(reply, exc)
            return
        except OSError:
            log.exception("cannot store a chunk of upload %s", session_id)
            self.protocol.abort(str(session_id))
            await self._error(reply, UploadError("Upload failed: cannot store the chunk",
                                                 session_id=str(session_id), fatal=True))
            return
        progress = session.progress()
        progress["duplicate"] = verdict is ChunkVerdict.DUPLICATE
        await reply(_message(PROGRESS, progress))

    async def on_end(self, payload: dict[str, Any], reply: Reply) -> None:
        try:
            session = self.protocol.finish(payload.get("session_id"), self.clock())
        except UploadError as exc:
            await self._error(reply, exc)
            return
        sid = session.session_id
        self._completing.add(sid)
        try:
            result = await asyncio.to_thread(self._complete, session)
        except UploadError as exc:
            await self._error(reply, exc)
            return
        except DomainError as exc:
            await self._error(reply, UploadError(exc.message, session_id=sid, fatal=True))
            return
        except Exception:
            log.exception("upload %s could not be completed", sid)
            await self._error(reply, UploadError("Upload failed: internal error", session_id=sid,
                                                 fatal=True))
            return
        finally:
            await asyncio.to_thread(self.store.discard, sid)
            self._completing.discard(sid)
        await reply(_message(COMPLETE, {"session_id": sid, **result}))

    async def _error(self, reply: Reply, exc: UploadError) -> None:
        if exc.fatal and exc.session_id:
            await asyncio.to_thread(self.store.discard, exc.session_id)
        await reply(_message(ERROR, {"session_id": exc.session_id, "error": exc.message}))

    # -- completion (runs in a worker thread) ---------------------------------------------------
    def _staging_root(self) -> Path:
        return self.settings.services_dir / ".staging"

    def _complete(self, session: UploadSession) -> dict[str, Any]:
        spec = session.spec
        if spec.upload_type is UploadType.DATA:
            pieces = self.store.iter_chunks(spec.session_id, spec.total_chunks)
            view = self.data.create_from_stream(
                name=spec.service_name, description=spec.description, file_name=spec.file_name,
                pieces=pieces, expected_size=spec.file_size, expected_sha256=spec.sha256)
            message = "Data service created; the file is stored encrypted"
        else:
            staged = self._staging_root() / uuid.uuid4().hex
            staged.mkdir(parents=True)
            try:
                single = self._stage_standalone(session, staged)
                if spec.service_id is not None:
                    view = self.standalone.replace_upload(spec.service_id, staged=staged,
                                                          single_file=single)
                else:
                    view = self.standalone.create_from_upload(
                        name=spec.service_name, description=spec.description, staged=staged,
                        single_file=single)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            message = (f"Upload complete; finalize with POST /api/services/standalone/"
                       f"{view.service.id}/finalize")
        return {"service_id": view.service.id, "service_type": view.service.service_type,
                "status": view.service.status, "upload_type": str(spec.upload_type),
                "file_name": spec.file_name, "file_size": spec.file_size,
                "sha256": spec.sha256, "message": message}

    def _stage_standalone(self, session: UploadSession, staged: Path) -> str | None:
        """Put the upload's files into ``staged``; the file's name if it was a plain file."""
        spec = session.spec
        archive = is_archive(spec.file_name)
        target = (self.store.session_dir(spec.session_id) / "assembled" if archive
                  else staged / spec.file_name)
        size, sha = self.store.assemble(spec.session_id, spec.total_chunks, target)
        if sha != spec.sha256 or size != spec.file_size:
            raise UploadError(f"Upload rejected: sha256 mismatch (declared {spec.sha256}, "
                              f"received {sha})", session_id=spec.session_id, fatal=True)
        if not archive:
            return spec.file_name
        try:
            extract(target, staged, max_bytes=max(self.settings.upload_max_bytes * 4, 1024**3))
        except ArchiveError as exc:
            raise UploadError(f"Upload rejected: {exc}", session_id=spec.session_id,
                              fatal=True) from None
        return None
