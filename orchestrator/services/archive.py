"""Safe extraction of uploaded archives (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz, .zip).

Every member is checked before anything is written: absolute names, ``..`` components, links
whose target leaves the destination, hard links to outside names, devices and FIFOs are all
refused, as is an archive whose members add up to more than ``max_bytes``. Regular files keep
their permission bits (without setuid/setgid/sticky), so an uploaded script stays executable.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
DEFAULT_MAX_BYTES = 4 * 1024**3
_COPY_BLOCK = 1024 * 1024


class ArchiveError(Exception):
    """The archive is unreadable or unsafe; the message names the offending member."""


@dataclass(frozen=True, slots=True)
class _Member:
    name: str  # normalised, relative, '/'-separated
    kind: str  # "dir" | "file" | "symlink" | "hardlink"
    mode: int
    size: int
    link: str = ""


def is_archive(file_name: str) -> bool:
    return file_name.lower().endswith(ARCHIVE_SUFFIXES)


def _clean_name(raw: str) -> str:
    """The member's normalised relative name, or ArchiveError when it could escape."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member '{raw}' has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member '{raw}' contains '..'")
    if "\x00" in name:
        raise ArchiveError("archive member name contains a NUL byte")
    return "/".join(parts)


def _link_stays_inside(member: str, target: str) -> bool:
    if target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member), target))
    return resolved != ".." and not resolved.startswith("../") and not resolved.startswith("/")


def _check(members: list[_Member], max_bytes: int) -> None:
    total = 0
    links: set[str] = set()
    for m in members:
        total += m.size
        if total > max_bytes:
            raise ArchiveError(f"archive expands to more than {max_bytes} bytes")
        if m.kind == "symlink":
            if not _link_stays_inside(m.name, m.link):
                raise ArchiveError(f"archive member '{m.name}' links outside the archive "
                                   f"('{m.link}')")
            links.add(m.name)
        elif m.kind == "hardlink":
            _clean_name(m.link)
    # A member below a symlinked directory would be written through the link.
    for m in members:
        parent = m.name
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if parent in links:
                raise ArchiveError(f"archive member '{m.name}' lies under the symlink '{parent}'")


def _tar_members(tf: tarfile.TarFile) -> list[_Member]:
    out = []
    for info in tf.getmembers():
        name = _clean_name(info.name)
        if info.isdir():
            kind = "dir"
        elif info.isreg():
            kind = "file"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        else:
            raise ArchiveError(f"archive member '{info.name}' is a device, FIFO or other special "
                               "file")
        if not name and kind != "dir":
            raise ArchiveError(f"archive member '{info.name}' has an empty name")
        link = _clean_name(info.linkname) if kind == "hardlink" else info.linkname
        out.append(_Member(name, kind, info.mode, info.size if kind == "file" else 0, link))
    return out


def _zip_members(zf: zipfile.ZipFile) -> list[_Member]:
    out = []
    for info in zf.infolist():
        name = _clean_name(info.filename)
        mode = (info.external_attr >> 16) & 0xFFFF
        ftype = stat.S_IFMT(mode)
        if info.is_dir():
            kind = "dir"
        elif ftype == stat.S_IFLNK:
            kind = "symlink"
        elif ftype in (0, stat.S_IFREG):
            kind = "file"
        else:
            raise ArchiveError(f"archive member '{info.filename}' is a device, FIFO or other "
                               "special file")
        link = zf.read(info).decode("utf-8", "replace") if kind == "symlink" else ""
        if not name and kind != "dir":
            raise ArchiveError(f"archive member '{info.filename}' has an empty name")
        out.append(_Member(name, kind, stat.S_IMODE(mode) or 0o644,
                           info.file_size if kind == "file" else 0, link))
    return out


def _file_mode(mode: int) -> int:
    return (stat.S_IMODE(mode) & 0o777) | 0o600


def extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str], *,
            max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Extract a tar (any compression) or zip archive into ``dest`` (created, must be empty).

    Returns the names of the regular files written. On any error ``dest`` is removed again.
    """
    src, root = Path(archive), Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ArchiveError(f"destination {root} is not empty")
    try:
        if zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as zf:
                members = _zip_members(zf)
                _check(members, max_bytes)
                zinfo = {_clean_name(i.filename): i for i in zf.infolist() if not i.is_dir()}
                return _write(members, root, lambda name: zf.open(zinfo[name]))
        try:
            with tarfile.open(src, "r:*") as tf:
                members = _tar_members(tf)
                _check(members, max_bytes)
                tinfo = {_clean_name(i.name): i for i in tf.getmembers()}
                return _write(members, root, lambda name: tf.extractfile(tinfo[name]))
        except tarfile.TarError as exc:
            raise ArchiveError(f"not a readable tar or zip archive: {exc}") from None
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _write(members: list[_Member], root: Path,
           opener: Callable[[str], IO[bytes] | None]) -> list[str]:
    written: list[str] = []
    seen: dict[str, str] = {}
    for m in members:
        if not m.name:
            continue
        target = root / m.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if m.kind == "dir":
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise ArchiveError(f"archive member '{m.name}' conflicts with another member")
            target.mkdir(exist_ok=True)
            continue
        if target.is_symlink() or target.is_dir():
            raise ArchiveError(f"archive member '{m.name}' conflicts with another member")
        target.unlink(missing_ok=True)
        if m.kind == "symlink":
            os.symlink(m.link, target)
        elif m.kind == "hardlink":
            if seen.get(m.link) != "file":
                raise ArchiveError(f"archive member '{m.name}' links to '{m.link}', which is not "
                                   "an earlier regular file")
            source = root / m.link
            parts = m.link.split("/")
            if any((root.joinpath(*parts[:i])).is_symlink() for i in range(1, len(parts) + 1)):
                raise ArchiveError(f"archive member '{m.name}' links through a symlink")
            shutil.copy2(source, target, follow_symlinks=False)
            written.append(m.name)
        else:
            handle = opener(m.name)
            if handle is None:
                raise ArchiveError(f"archive member '{m.name}' cannot be read")
            with handle, open(target, "wb") as out:
                shutil.copyfileobj(handle, out, _COPY_BLOCK)
            os.chmod(target, _file_mode(m.mode))
            written.append(m.name)
        seen[m.name] = m.kind
    # A link may stay inside by its name yet leave through another link (``a -> .`` then
    # ``x -> a/../..``): every link is resolved once all are in place.
    top = os.path.realpath(root)
    for name, kind in seen.items():
        if kind == "symlink":
            real = os.path.realpath(root / name)
            if real != top and not real.startswith(top.rstrip("/") + "/"):
                raise ArchiveError(f"archive member '{name}' links outside the archive "
                                   "through another link")
    return written
