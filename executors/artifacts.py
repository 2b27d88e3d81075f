"""The content-addressed artifact store: job outputs and inputs, named by the sha256 of their bytes.

Layout: ``<root>/<aa>/<sha256>`` for each artifact, ``<root>/tmp/`` for writes in progress. A
write lands in a temp file in the same filesystem and is renamed into place, so a reader never sees
a partial artifact and two writers of the same bytes agree. Directories are stored as
deterministic uncompressed tars (sorted entries, zero times and owners), so the same tree always
hashes the same.

An artifact's modification time is when it was last written or written again (the same bytes
stored anew): the retention sweep removes unreferenced artifacts only when that is old, and
stores and removals take one lock, so bytes stored again are never removed under the writer.

Bytes stored *ephemerally* (a DATA service's clear bytes, for the job that reads them) are
counted per user and removed when the last one ``release``s them, unless the same bytes were
stored for good meanwhile (a job's output equal to them): then they stay, as any output does.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from executors.base import ArtifactKind, ArtifactRef

CHUNK = 1 << 20
# A write is held in memory up to this size, and goes to a temp file only past it: most job
# outputs are small, and a temp file costs more than the job's own process for them.
SPILL = 64 * 1024
_names = itertools.count()
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """An artifact could not be stored or read."""


class ArtifactMissing(ArtifactError):
    pass


class UnsafeArchive(ArtifactError):
    """A tar member would land outside its destination or is a device."""


class ArtifactWriter:
    """A streamed write into the store: ``write()`` chunks, then ``commit()`` for the ref.

    The first ``SPILL`` bytes are held in memory; a temp file is opened only past them. So an
    output already stored costs no file operation, and another small one a single write.
    """

    def __init__(self, store: ArtifactStore, kind: ArtifactKind = ArtifactKind.FILE, *,
                 ephemeral: bool = False) -> None:
        self._store = store
        self._kind = kind
        self._ephemeral = ephemeral
        self._tmp: Path | None = None
        self._file: BinaryIO | None = None
        self._held = bytearray()  # what is written, while it is small
        self._hash = hashlib.sha256()
        self._size = 0
        self.ref: ArtifactRef | None = None

    def _open(self) -> BinaryIO:
        fd, name = tempfile.mkstemp(dir=self._store.tmp_dir, prefix="w-")
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")
        return self._file

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        if self._file is not None:
            self._file.write(data)
        elif len(self._held) + len(data) <= SPILL:
            self._held += data
        else:
            self._open().write(self._held)
            self._held = bytearray()
            self._file.write(data)  # type: ignore[union-attr]
        self._hash.update(data)
        self._size += len(data)
        return len(data)

    def commit(self) -> ArtifactRef:
        if self.ref is not None:
            return self.ref
        digest = self._hash.hexdigest()
        if self._file is None:
            if not self._store._keep(digest, ephemeral=self._ephemeral):  # not stored yet
                self._store._install_bytes(bytes(self._held), digest, ephemeral=self._ephemeral)
            self._held = bytearray()
        else:
            self._file.close()
            assert self._tmp is not None
            self._store._install(self._tmp, digest, ephemeral=self._ephemeral)
        self.ref = ArtifactRef(sha256=digest, size=self._size, kind=self._kind)
        return self.ref

    def abort(self) -> None:
        self._held = bytearray()
        if self.ref is None and self._file is not None and self._tmp is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = None

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # between storing an artifact and removing it
        self._ephemeral: dict[str, int] = {}  # digest -> users, of bytes stored for a while

    # -- writing -----------------------------------------------------------------------------
    def writer(self, kind: ArtifactKind = ArtifactKind.FILE, *,
               ephemeral: bool = False) -> ArtifactWriter:
        return ArtifactWriter(self, kind, ephemeral=ephemeral)

    def put_bytes(self, data: bytes, kind: ArtifactKind = ArtifactKind.FILE) -> ArtifactRef:
        with self.writer(kind) as w:
            w.write(data)
        assert w.ref is not None
        return w.ref

    def put_file(self, path: Path | str, *, ephemeral: bool = False) -> ArtifactRef:
        """Store a file's bytes, hashed while copied (never read whole into memory);
        ``ephemeral``: until ``release``d (see the module docstring)."""
        with open(path, "rb") as src, self.writer(ephemeral=ephemeral) as w:
            while chunk := src.read(CHUNK):
                w.write(chunk)
        assert w.ref is not None
        return w.ref

    def put_dir(self, path: Path | str) -> ArtifactRef:
        """Store a directory tree as a deterministic tar (kind TAR)."""
        root = Path(path)
        if not root.is_dir():
            raise ArtifactError(f"not a directory: {root}")
        with self.writer(ArtifactKind.TAR) as w:
            write_deterministic_tar(root, w)
        assert w.ref is not None
        return w.ref

    def _install(self, tmp: Path, digest: str, *, ephemeral: bool = False) -> None:
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._keep(digest, ephemeral=ephemeral, locked=True):
                tmp.unlink(missing_ok=True)
                return
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
            if ephemeral:
                self._ephemeral[digest] = 1

    def _install_bytes(self, data: bytes, digest: str, *, ephemeral: bool = False) -> None:
        """Store small bytes whose digest is known: one temp file, written in one call."""
        tmp = self.tmp_dir / f"b-{os.getpid()}-{next(_names)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:  # left by an earlier process of the same pid
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="b-")
            tmp = Path(name)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        self._install(tmp, digest, ephemeral=ephemeral)

    def _keep(self, digest: str, *, ephemeral: bool = False, locked: bool = False) -> bool:
        """Mark a stored artifact as written now (for good, or by one more ephemeral user);
        False when it is not stored."""
        with contextlib.nullcontext() if locked else self._lock:
            try:
                os.utime(self.path(digest))
            except FileNotFoundError:
                return False
            if not ephemeral:
                self._ephemeral.pop(digest, None)
            elif digest in self._ephemeral:
                self._ephemeral[digest] += 1
            return True

    def keep(self, digest: str) -> bool:
        """Mark a stored artifact as stored for good, and written now (a peer's copy of the same
        bytes, brought here as an output); False when it is not stored, or ``digest`` is not
        one."""
        if not _SHA256.match(digest):
            return False
        return self._keep(digest)

    def release(self, digest: str) -> None:
        """One user of ephemerally stored bytes is done with them; after the last, they go
        (unless stored for good meanwhile)."""
        with self._lock:
            users = self._ephemeral.get(digest)
            if users is None:
                return
            if users > 1:
                self._ephemeral[digest] = users - 1
                return
            del self._ephemeral[digest]
            with contextlib.suppress(FileNotFoundError):
                self.path(digest).unlink()

    @property
    def ephemeral(self) -> set[str]:
        """Digests of the bytes stored ephemerally that are still in use."""
        with self._lock:
            return set(self._ephemeral)

    def remove_if_older(self, digest: str, older_than: float) -> int | None:
        """Remove an artifact last written before ``older_than`` (a time.time()); its size, or
        None when it is newer or gone. Callers make sure nothing refers to it."""
        path = self.path(digest)
        with self._lock:
            try:
                st = path.stat()
                if st.st_mtime >= older_than:
                    return None
                path.unlink()
            except FileNotFoundError:
                return None
        return st.st_size

    # -- reading -----------------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ArtifactError(f"not a sha256 digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        try:
            return self.path(sha256).is_file()
        except ArtifactError:
            return False

    def _existing(self, ref: ArtifactRef | str) -> Path:
        sha = ref if isinstance(ref, str) else ref.sha256
        p = self.path(sha)
        if not p.is_file():
            raise ArtifactMissing(f"artifact {sha} is not in the store")
        return p

    def open(self, ref: ArtifactRef | str) -> BinaryIO:
        return self._existing(ref).open("rb")

    def read_bytes(self, ref: ArtifactRef | str) -> bytes:
        return self._existing(ref).read_bytes()

    def verify(self, ref: ArtifactRef | str) -> bool:
        """Whether the stored bytes still hash to their name."""
        sha = ref if isinstance(ref, str) else ref.sha256
        h = hashlib.sha256()
        with self.open(sha) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest() == sha

    def copy_to(self, ref: ArtifactRef | str, dest: Path) -> Path:
        """Copy an artifact's bytes to ``dest`` (a fresh, writable file)."""
        with self.open(ref) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        return dest

    def extract_tar(self, ref: ArtifactRef | str, dest: Path) -> None:
        """Unpack a TAR artifact into ``dest``, refusing any member that could escape it."""
        with self.open(ref) as f:
            safe_extract(f, Path(dest))

    def materialize(self, ref: ArtifactRef, dest: Path) -> None:
        """Place an artifact at ``dest``: a TAR is unpacked into the directory, a FILE copied."""
        if ref.kind == ArtifactKind.TAR:
            dest.mkdir(parents=True, exist_ok=True)
            self.extract_tar(ref, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.copy_to(ref, dest)


# -- tar helpers -----------------------------------------------------------------------------
def _tarinfo(name: str, st: os.stat_result, type_: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_deterministic_tar(root: Path, out: IO[bytes]) -> None:
    """Write ``root``'s tree as a tar whose bytes depend only on names, modes and contents.

    Symlinks are kept as links; sockets, fifos and devices are skipped.
    """
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(root)
            entries = sorted([*((d, True) for d in dirnames), *((f, False) for f in filenames)])
            for name, _is_dir in entries:
                full = Path(dirpath) / name
                arc = (rel_dir / name).as_posix()
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    info = _tarinfo(arc, st, tarfile.SYMTYPE)
                    info.linkname = os.readlink(full)
                    tar.addfile(info)
                elif stat.S_ISDIR(st.st_mode):
                    tar.addfile(_tarinfo(arc, st, tarfile.DIRTYPE))
                elif stat.S_ISREG(st.st_mode):
                    info = _tarinfo(arc, st, tarfile.REGTYPE)
                    info.size = st.st_size
                    with full.open("rb") as f:
                        tar.addfile(info, f)
            # os.walk lists symlinks to directories among dirnames but does not descend them.


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    if ".." in parts:
        raise UnsafeArchive(f"archive member {name!r} contains '..'")
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeArchive(f"archive member {name!r} is a device or fifo")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/"):
            raise UnsafeArchive(f"archive link {name!r} points to an absolute path {target!r}")
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        resolved = os.path.normpath((base / target).as_posix())
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchive(f"archive link {name!r} points outside the destination")


def safe_extract(fileobj: IO[bytes], dest: Path) -> None:
    """Extract a tar stream into ``dest``: no absolute paths, no ``..``, no links escaping ``dest``
    (checked on the real, resolved paths as well), no devices. Raises UnsafeArchive."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m)
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeArchive(f"unsafe archive member: {exc}") from exc
    except tarfile.TarError as exc:
        raise ArtifactError(f"not a valid tar archive: {exc}") from exc


@contextlib.contextmanager
def temp_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temp dir under ``parent`` removed on exit, whatever the job left in it."""
    parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
