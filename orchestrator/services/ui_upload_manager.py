"""The web UI's upload handlers: the protocol (``ui_uploads``) driven over the upload store,
ending in the files of an existing DATA or STANDALONE service.

Replies go to the uploading client only: ``file.upload.progress`` (one per start, chunk and
resume), ``file.upload.complete`` (once a file's chunks are all in) and ``file.upload.error``.
When the last file of a group is complete, the group is processed once, in the background:
a DATA service gets the file (one file as is; several as a tar.gz of their tree), encrypted; a
STANDALONE service gets the tree in its install directory, to be finalized. The registry then
publishes the change (SERVICE_UPDATED; ``services.updated`` for the UI). The uploader gets no
message about it; a failure is logged and leaves the service as it was.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import shutil
import tarfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import DomainError, InvalidInput
from orchestrator.services.data_services import DataServices
from orchestrator.services.standalone_services import StandaloneServices
from orchestrator.services.ui_uploads import (
    CHUNK,
    PAUSE,
    RESUME,
    START,
    ChunkVerdict,
    ErrorCode,
    UiGroup,
    UiSession,
    UiUploadError,
    UiUploadLimits,
    UiUploadProtocol,
    folders_of,
    parse_start,
)
from orchestrator.services.upload_store import READ_BLOCK, UploadStore
from orchestrator.states import ServiceType

log = logging.getLogger("remote_network.ui_uploads")

Reply = Callable[[dict[str, Any]], Awaitable[None]]
# How long stopping the node waits for groups being processed.
STOP_GRACE_SECONDS = 30.0


class UiUploadManager:
    def __init__(self, settings: Settings, *, store: UploadStore, standalone: StandaloneServices,
                 data: DataServices, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.standalone = standalone
        self.data = data
        self.clock = clock
        self.protocol = UiUploadProtocol(UiUploadLimits(
            max_file_size=settings.upload_max_bytes, max_group_size=settings.upload_max_bytes,
            ttl=settings.upload_ttl_seconds))
        self._processing: set[asyncio.Task[None]] = set()

    def handlers(self) -> dict[str, Callable[[dict[str, Any], Reply], Awaitable[None]]]:
        return {START: self.on_start, CHUNK: self.on_chunk, PAUSE: self.on_pause,
                RESUME: self.on_resume}

    # -- lifecycle ------------------------------------------------------------------------------
    async def sweep(self) -> tuple[str, ...]:
        """Drop the groups idle past the ttl, and their files."""
        expired = self.protocol.expire(self.clock())
        if expired:
            log.info("%d UI upload file(s) abandoned after %.0fs; removed", len(expired),
                     self.settings.upload_ttl_seconds)
            await asyncio.to_thread(self._discard, expired)
        return expired

    async def stop(self) -> None:
        """Let the groups being processed finish (for a while), then cancel what is left."""
        if not self._processing:
            return
        _, pending = await asyncio.wait(set(self._processing), timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- handlers -------------------------------------------------------------------------------
    async def on_start(self, payload: dict[str, Any], reply: Reply) -> None:
        try:
            spec = parse_start(payload, self.protocol.limits)
            kind = await asyncio.to_thread(self._target, spec.service_id)
            session, dropped = self.protocol.start(spec, kind, self.clock())
        except UiUploadError as exc:
            await _send(reply, exc.reply())
            return
        except DomainError as exc:
            await _send(reply, UiUploadError(exc.message, ErrorCode.START_FAILED).reply())
            return
        await asyncio.to_thread(self._discard, dropped)
        try:
            await asyncio.to_thread(self.store.open_session, store_key(session.session_id))
        except OSError:
            log.exception("cannot open UI upload %s", session.session_id)
            await self._error(reply, self.protocol.fail(
                session.session_id, "Upload failed: cannot store files", ErrorCode.WRITE_FAILED))
            return
        await _send(reply, session.progress())
        if session.all_chunks_in:  # an empty file
            await self._file_done(session, reply)

    async def on_chunk(self, payload: dict[str, Any], reply: Reply) -> None:
        try:
            session = self.protocol.get(payload.get("session_id"))
            sid = session.session_id
            raw = payload.get("data")
            try:
                if not isinstance(raw, str):
                    raise ValueError("not a string")
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise self.protocol.fail(sid, "chunk data is not valid base64",
                                         ErrorCode.INVALID_ENCODING) from None
            index: Any = payload.get("chunk_index")
            verdict = self.protocol.chunk(sid, index, data, self.clock())
            if verdict is ChunkVerdict.NEW:  # the protocol checked that index is an int in range
                try:
                    await asyncio.to_thread(self.store.write_chunk, store_key(sid), index, data)
                except OSError:
                    log.exception("cannot store a chunk of UI upload %s", sid)
                    raise self.protocol.fail(sid, "Upload failed: cannot store the chunk",
                                             ErrorCode.WRITE_FAILED) from None
        except UiUploadError as exc:
            await self._error(reply, exc)
            return
        await _send(reply, session.progress())
        if verdict is ChunkVerdict.NEW and session.all_chunks_in:
            await self._file_done(session, reply)

    async def on_pause(self, payload: dict[str, Any], reply: Reply) -> None:
        try:
            self.protocol.pause(payload.get("session_id"), self.clock())
        except UiUploadError as exc:
            await _send(reply, exc.reply())

    async def on_resume(self, payload: dict[str, Any], reply: Reply) -> None:
        try:
            session = self.protocol.resume(payload.get("session_id"), self.clock())
        except UiUploadError as exc:
            await _send(reply, exc.reply())
            return
        await _send(reply, session.progress())

    async def _file_done(self, session: UiSession, reply: Reply) -> None:
        sid = session.session_id
        try:
            try:
                file_hash = await asyncio.to_thread(self._hash, session)
            except OSError:
                log.exception("cannot read UI upload %s", sid)
                raise self.protocol.fail(sid, "Upload failed: cannot read the file back",
                                         ErrorCode.WRITE_FAILED) from None
            group = self.protocol.file_done(sid, file_hash, self.clock())
        except UiUploadError as exc:
            await self._error(reply, exc)
            return
        await _send(reply, session.complete())
        if group is not None:
            task = asyncio.create_task(self._process(group), name=f"ui-upload-{sid}")
            self._processing.add(task)
            task.add_done_callback(self._processing.discard)

    async def _error(self, reply: Reply, exc: UiUploadError) -> None:
        await asyncio.to_thread(self._discard, exc.discard)
        await _send(reply, exc.reply())

    # -- I/O (in worker threads) ----------------------------------------------------------------
    def _target(self, service_id: int) -> ServiceType:
        """The type of the service the upload goes to, once it is known to accept one."""
        kind = ServiceType(self.data.registry.get(service_id).service.service_type)
        if kind is ServiceType.DATA:
            self.data.check_attach_target(service_id)
        elif kind is ServiceType.STANDALONE:
            self.standalone.check_stage_target(service_id)
        else:
            raise InvalidInput("Uploads go to DATA or STANDALONE services only")
        return kind

    def _discard(self, session_ids: tuple[str, ...]) -> None:
        for sid in session_ids:
            self.store.discard(store_key(sid))

    def _hash(self, session: UiSession) -> str:
        digest = hashlib.sha256()
        for block in self.store.iter_chunks(store_key(session.session_id),
                                            session.spec.total_chunks):
            digest.update(block)
        return digest.hexdigest()

    # -- group processing -----------------------------------------------------------------------
    async def _process(self, group: UiGroup) -> None:
        files = self.protocol.files(group)
        try:
            await asyncio.to_thread(self._process_files, group, files)
            log.info("UI upload of %d file(s) into service %d done", len(files),
                     group.service_id)
        except DomainError as exc:
            log.warning("UI upload into service %d refused: %s", group.service_id, exc.message)
        except Exception:
            log.exception("UI upload into service %d failed", group.service_id)
        finally:
            await asyncio.to_thread(self._discard, self.protocol.finish_group(group.group_id))

    def _process_files(self, group: UiGroup, files: list[UiSession]) -> None:
        if group.kind is ServiceType.DATA:
            self._to_data(group.service_id, files)
        else:
            self._to_standalone(group.service_id, files)

    def _to_data(self, service_id: int, files: list[UiSession]) -> None:
        if len(files) == 1:
            only = files[0]
            self.data.attach_file(
                service_id, file_name=only.spec.filename,
                pieces=self.store.iter_chunks(store_key(only.session_id), only.spec.total_chunks),
                expected_size=only.spec.total_size, expected_sha256=only.file_hash)
            return
        work = store_key(f"work-{uuid.uuid4().hex}")
        self.store.open_session(work)
        try:
            archive = self.store.session_dir(work) / "files.tar.gz"
            self._write_tree_archive(files, archive, self.store.session_dir(work))
            self.data.attach_file(service_id, file_name=archive_name(files),
                                  pieces=_blocks(archive))
        finally:
            self.store.discard(work)

    def _write_tree_archive(self, files: list[UiSession], archive: Path, work: Path) -> None:
        """A tar.gz of the files' tree, folders first; each file checked against its hash."""
        now = int(time.time())
        with tarfile.open(archive, "w:gz", compresslevel=6) as tf:
            folders = sorted({f for s in files for f in folders_of(s.spec.file_path)})
            for folder in folders:
                info = tarfile.TarInfo(folder)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                tf.addfile(info)
            for session in files:
                plain = work / "file"
                self._assemble(session, plain)
                try:
                    info = tarfile.TarInfo(session.spec.file_path)
                    info.size, info.mode, info.mtime = session.spec.total_size, 0o644, now
                    with open(plain, "rb") as fh:
                        tf.addfile(info, fh)
                finally:
                    plain.unlink(missing_ok=True)

    def _to_standalone(self, service_id: int, files: list[UiSession]) -> None:
        staged = self.settings.services_dir / ".staging" / uuid.uuid4().hex
        staged.mkdir(parents=True)
        try:
            for session in files:
                dest = staged / session.spec.file_path  # checked by the protocol: stays inside
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._assemble(session, dest)
            single = files[0].spec.file_path if len(files) == 1 else None
            self.standalone.stage_upload(service_id, staged=staged, single_file=single)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _assemble(self, session: UiSession, dest: Path) -> None:
        size, sha = self.store.assemble(store_key(session.session_id),
                                        session.spec.total_chunks, dest)
        if sha != session.file_hash or size != session.spec.total_size:
            dest.unlink(missing_ok=True)
            raise InvalidInput(f"Upload rejected: '{session.spec.file_path}' changed on disk")


async def _send(reply: Reply, message: dict[str, Any]) -> None:
    """In the UI's envelope: ``timestamp`` in Unix seconds."""
    await reply({**message, "timestamp": int(time.time())})


def store_key(session_id: str) -> str:
    """The session's directory name in the upload store: the reference protocol's session ids
    cannot start with '_', so the two protocols never share a directory."""
    return f"_ui-{session_id}"


def archive_name(files: list[UiSession]) -> str:
    """``<folder>.tar.gz`` when every file is in one top folder, else ``files.tar.gz``."""
    tops = {s.spec.file_path.split("/", 1)[0] for s in files}
    if len(tops) == 1 and all("/" in s.spec.file_path for s in files):
        return f"{tops.pop()}.tar.gz"
    return "files.tar.gz"


def _blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(READ_BLOCK):
            yield block
