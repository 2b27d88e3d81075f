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
# Stored files up to this size are hashed each time they are used (a damaged one is refused);
# larger ones have their size checked (and their hash by ``read_bytes``, which reads them whole).
HASHED_ON_USE = 64 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_names = itertools.count()
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """An artifact could not be stored or read."""


class ArtifactMissing(ArtifactError):
    pass


class UnsafeArchive(ArtifactError):
    """A tar member would land outside its destination or is a device."""


class OutputTooLarge(ArtifactError):
    """An output holds more than its limit allows."""


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
            self._file.flush()
            os.fsync(self._file.fileno())
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

    def put_dir(self, path: Path | str, *, max_bytes: int | None = None,
                within: Path | str | None = None) -> ArtifactRef:
        """Store a directory tree as a deterministic tar (kind TAR).

        Nothing is followed out of the tree: ``path`` itself must not be a symlink (nor, with
        ``within``, resolve outside that directory), links inside are stored as links, and a file
        also linked from outside the tree (a hard link) is refused. ``max_bytes`` bounds the
        bytes of the files stored (ArtifactError past it, nothing stored).
        """
        root = Path(path)
        if root.is_symlink() or not root.is_dir():
            raise ArtifactError(f"not a directory: {root}")
        if within is not None:
            real, top = os.path.realpath(root), os.path.realpath(within)
            if real != top and not real.startswith(top.rstrip("/") + "/"):
                raise ArtifactError(f"{root} leads outside its job directory")
        with self.writer(ArtifactKind.TAR) as w:
            write_deterministic_tar(root, w, max_bytes=max_bytes)
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
            _fsync_dir(dest.parent)
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
            os.fsync(fd)
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
            path = self.path(digest)
            try:
                if _looks_damaged(path, digest):
                    path.unlink()
                    return False
                os.utime(path)
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
            self._existing(sha256)
        except ArtifactError:
            return False
        return True

    def _existing(self, ref: ArtifactRef | str, *, hash_small: bool = True) -> Path:
        """The stored file of ``ref``, checked: a file whose size is not the ref's, or (small
        ones, unless the caller hashes what it reads) whose bytes do not hash to its name, is
        removed and refused."""
        sha = ref if isinstance(ref, str) else ref.sha256
        p = self.path(sha)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {sha} is not in the store") from None
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactMissing(f"artifact {sha} is not in the store")
        damaged = ((isinstance(ref, ArtifactRef) and st.st_size != ref.size)
                   or (_looks_damaged(p, sha, st.st_size) if hash_small
                       else st.st_size == 0 and sha != EMPTY_SHA256))
        if damaged:
            with self._lock, contextlib.suppress(FileNotFoundError):
                p.unlink()
            raise ArtifactError(f"artifact {sha} is damaged (size {st.st_size}) and was removed")
        return p

    def open(self, ref: ArtifactRef | str) -> BinaryIO:
        return self._existing(ref).open("rb")

    def read_bytes(self, ref: ArtifactRef | str) -> bytes:
        # Read once and hashed here, whatever the size.
        data = self._existing(ref, hash_small=False).read_bytes()
        sha = ref if isinstance(ref, str) else ref.sha256
        if hashlib.sha256(data).hexdigest() != sha:
            with self._lock, contextlib.suppress(FileNotFoundError):
                self.path(sha).unlink()
            raise ArtifactError(f"artifact {sha} is damaged (wrong hash) and was removed")
        return data

    def checked_path(self, ref: ArtifactRef | str) -> Path:
        """``path``, for a stored artifact checked as ``open`` checks it."""
        return self._existing(ref)

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _looks_damaged(path: Path, digest: str, size: int | None = None) -> bool:
    """Whether a stored file cannot hold the bytes its name says: empty though they are not, or
    (small files, cheap to read) not hashing to its name. False when it is missing."""
    try:
        if size is None:
            size = path.stat().st_size
        if size == 0:
            return digest != EMPTY_SHA256
        if size > HASHED_ON_USE:
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() != digest
    except FileNotFoundError:
        return False


def write_deterministic_tar(root: Path, out: IO[bytes], *, max_bytes: int | None = None) -> None:
    """Write ``root``'s tree as a tar whose bytes depend only on names, modes and contents.

    Symlinks are kept as links (never followed); sockets, fifos and devices are skipped. A file
    with more links than the tree holds (a hard link to a file outside) is refused, as are files
    adding up to more than ``max_bytes``.
    """
    inside: dict[tuple[int, int], int] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                inside[key] = inside.get(key, 0) + 1
    total = 0
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
                    if st.st_nlink > inside.get((st.st_dev, st.st_ino), 1):
                        raise ArtifactError(f"output file {arc!r} is a hard link to a file "
                                            "outside the output")
                    total += st.st_size
                    if max_bytes is not None and total > max_bytes:
                        raise OutputTooLarge(f"output limit of {max_bytes} bytes exceeded")
                    info = _tarinfo(arc, st, tarfile.REGTYPE)
                    info.size = st.st_size
                    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as f:
                        tar.addfile(info, f)
            # os.walk lists symlinks to directories among dirnames but does not descend them.


def _check_name(member: tarfile.TarInfo) -> PurePosixPath:
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise UnsafeArchive(f"archive member {name!r} has an absolute path")
    if "\0" in name:
        raise UnsafeArchive("archive member name holds a NUL byte")
    rel = PurePosixPath(*[p for p in PurePosixPath(name).parts if p != "."])
    if ".." in rel.parts:
        raise UnsafeArchive(f"archive member {name!r} contains '..'")
    if member.ischr() or member.isblk() or member.isfifo() or not (
            member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"archive member {name!r} is a device, fifo or special file")
    return rel


def _real_dir(dest: Path, rel: PurePosixPath, *, create: bool) -> Path:
    """``dest/rel`` as a real directory: every component a directory, none a symlink (made
    when missing and ``create``). So nothing is ever written through a link."""
    here = dest
    for part in rel.parts:
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            if not create:
                raise
            here.mkdir(mode=0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeArchive(f"archive path {rel.as_posix()!r} passes through a symlink")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeArchive(f"archive path {rel.as_posix()!r} passes through a file")
    return here


def _data_mode(mode: int, *, is_dir: bool) -> int:
    """Permission bits as tarfile's "data" filter keeps them: no setuid/setgid/sticky, no write
    for group and others, always readable and writable (and, for a dir, searchable) by owner."""
    mode = stat.S_IMODE(mode) & 0o755
    return mode | (0o700 if is_dir else 0o600)


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _check_link(m: tarfile.TarInfo, rel: PurePosixPath, top: str,
                earlier: set[PurePosixPath]) -> None:
    """A link member's target, checked by its name (before anything is written)."""
    link = m.linkname
    if m.issym():
        if link.startswith("/"):
            raise UnsafeArchive(f"archive link {m.name!r} points to an absolute path {link!r}")
        lexical = os.path.normpath(os.path.join(top, *rel.parent.parts, link))
        if not _inside(lexical, top):
            raise UnsafeArchive(f"archive link {m.name!r} points outside the destination "
                                f"({link!r})")
    elif m.islnk():
        if link.startswith("/") or ".." in PurePosixPath(link).parts:
            raise UnsafeArchive(f"archive hard link {m.name!r} points outside the destination "
                                f"({link!r})")
        if _check_name(tarfile.TarInfo(link)) not in earlier:
            raise UnsafeArchive(f"archive member {m.name!r} links to {link!r}, which is not an "
                                "earlier file of the archive")


def safe_extract(fileobj: IO[bytes], dest: Path) -> None:
    """Extract a tar stream into ``dest``, member by member, never following a link.

    Refused (UnsafeArchive), with nothing of the archive left in ``dest``: absolute names,
    ``..``, devices and fifos; a member under a symlink (an earlier member) or replacing
    another; a symlink whose target leaves ``dest``, by its name or, once every member is in
    place, through the other links (a chain resolved through a later link); a hard link to
    anything but an earlier regular file of the archive (it is copied).
    """
    dest.mkdir(parents=True, exist_ok=True)
    top = os.path.realpath(dest)
    before = set(os.listdir(dest))
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            members = tar.getmembers()
            named: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
            regular: set[PurePosixPath] = set()
            for m in members:
                rel = _check_name(m)
                _check_link(m, rel, top, regular)
                if m.isreg():
                    regular.add(rel)
                named.append((m, rel))
            try:
                _extract_members(tar, named, dest, top)
            except BaseException:
                for name in set(os.listdir(dest)) - before:
                    _remove_entry(dest / name)
                raise
    except tarfile.TarError as exc:
        raise ArtifactError(f"not a valid tar archive: {exc}") from exc


def _remove_entry(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _extract_members(tar: tarfile.TarFile, named: list[tuple[tarfile.TarInfo, PurePosixPath]],
                     dest: Path, top: str) -> None:
    links: list[Path] = []
    for m, rel in named:
        if not rel.parts:
            continue
        parent = _real_dir(dest, rel.parent, create=True)
        target = parent / rel.name
        if m.isdir():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise UnsafeArchive(f"archive member {m.name!r} replaces another")
            target.mkdir(mode=0o755, exist_ok=True)
            os.chmod(target, _data_mode(m.mode, is_dir=True))
            continue
        if os.path.lexists(target):
            raise UnsafeArchive(f"archive member {m.name!r} replaces another")
        if m.issym():
            os.symlink(m.linkname, target)
            links.append(target)
        elif m.islnk():
            src = _check_name(tarfile.TarInfo(m.linkname))
            try:
                from_dir = _real_dir(dest, src.parent, create=False)
            except FileNotFoundError:
                raise UnsafeArchive(f"archive member {m.name!r} links to a missing file") from None
            _copy_nofollow(from_dir / src.name, target)
        else:
            data = tar.extractfile(m)
            mode = _data_mode(m.mode, is_dir=False)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                if data is not None:
                    shutil.copyfileobj(data, out, CHUNK)
            os.chmod(target, mode)
    for link in links:
        if not _inside(os.path.realpath(link), top):
            raise UnsafeArchive(f"archive link {link.relative_to(dest).as_posix()!r} resolves "
                                "outside the destination")


def _copy_nofollow(src: Path, dst: Path) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         stat.S_IMODE(mode))
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(f, out, CHUNK)


@contextlib.contextmanager
def temp_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temp dir under ``parent`` removed on exit, whatever the job left in it."""
    parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
