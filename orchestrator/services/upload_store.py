"""The disk side of uploads: one directory per session under ``uploads_dir``, one file per chunk.

Chunk files are written atomically (temp name, then rename), so a crash never leaves a chunk
half-written under its final name. Sessions live in memory only, so every directory found at
startup belongs to an upload that can no longer finish and is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

READ_BLOCK = 1024 * 1024


class UploadStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def session_dir(self, session_id: str) -> Path:
        # session ids are checked by the protocol (letters, digits, '_', '.', '-'; no '..')
        path = self.root / session_id
        if path.parent != self.root or session_id in (".", ".."):
            raise ValueError(f"bad session id {session_id!r}")
        return path

    def _chunk_path(self, session_id: str, index: int) -> Path:
        return self.session_dir(session_id) / f"{index:08d}.chunk"

    def open_session(self, session_id: str) -> None:
        directory = self.session_dir(session_id)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, mode=0o700)

    def write_chunk(self, session_id: str, index: int, data: bytes) -> None:
        final = self._chunk_path(session_id, index)
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, final)

    def iter_chunks(self, session_id: str, total_chunks: int) -> Iterator[bytes]:
        """The file's bytes in order, a block at a time."""
        for index in range(total_chunks):
            with open(self._chunk_path(session_id, index), "rb") as fh:
                while block := fh.read(READ_BLOCK):
                    yield block

    def assemble(self, session_id: str, total_chunks: int, dest: Path) -> tuple[int, str]:
        """Concatenate the chunks into ``dest`` -> (size, sha256); ``dest`` removed on error."""
        digest = hashlib.sha256()
        size = 0
        try:
            with open(dest, "wb") as out:
                for block in self.iter_chunks(session_id, total_chunks):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()

    def discard(self, session_id: str) -> None:
        shutil.rmtree(self.session_dir(session_id), ignore_errors=True)

    def sweep_all(self) -> int:
        """Remove every session directory (at startup nothing can resume). Returns the count."""
        if not self.root.exists():
            return 0
        count = 0
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            count += 1
        return count
