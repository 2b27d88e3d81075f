from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from orchestrator.services.archive import ArchiveError, extract, is_archive


def _tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes, int]],
         mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                name, data, perm = entry
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), perm
                tf.addfile(info, io.BytesIO(data))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_tar_gz_extracts_with_modes(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "a.tar.gz", [("app/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
                                       ("app/data/x.txt", b"x", 0o644),
                                       _link("app/link", "data/x.txt")], "w:gz")
    dest = tmp_path / "out"
    files = extract(arc, dest)
    assert sorted(files) == ["app/data/x.txt", "app/run.sh"]
    assert (dest / "app/run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.access(dest / "app/run.sh", os.X_OK)
    assert not os.access(dest / "app/data/x.txt", os.X_OK)
    assert (dest / "app/link").read_bytes() == b"x"


def test_zip_extracts_with_modes(tmp_path: Path) -> None:
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        info = zipfile.ZipInfo("bin/tool")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(info, b"#!/bin/sh\n")
        zf.writestr("readme.txt", b"hello")
    files = extract(arc, tmp_path / "out")
    assert sorted(files) == ["bin/tool", "readme.txt"]
    assert os.access(tmp_path / "out/bin/tool", os.X_OK)
    assert (tmp_path / "out/readme.txt").read_text() == "hello"


@pytest.mark.parametrize("entry, message", [
    (("../evil", b"x", 0o644), "contains '..'"),
    (("a/../../evil", b"x", 0o644), "contains '..'"),
    (("/etc/evil", b"x", 0o644), "absolute path"),
    (_link("ln", "/etc/passwd"), "links outside"),
    (_link("a/ln", "../../outside"), "links outside"),
    (_link("hl", "../outside", tarfile.LNKTYPE), "contains '..'"),
    (_link("dev", "", tarfile.CHRTYPE), "device"),
    (_link("fifo", "", tarfile.FIFOTYPE), "device"),
])
def test_evil_tar_members_rejected_and_nothing_written(tmp_path: Path, entry: object,
                                                       message: str) -> None:
    arc = _tar(tmp_path / "evil.tar", [("good.txt", b"fine", 0o644), entry])  # type: ignore[list-item]
    dest = tmp_path / "sub" / "out"
    with pytest.raises(ArchiveError, match=message):
        extract(arc, dest)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar", "sub"]
    assert list((tmp_path / "sub").iterdir()) == []


def test_member_under_symlinked_dir_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    # 'd' points inside, but a later member written through it must not be allowed either way.
    arc = _tar(tmp_path / "a.tar", [_link("d", "."), ("d/x", b"x", 0o644)])
    with pytest.raises(ArchiveError, match="under the symlink"):
        extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evil_zip_rejected(tmp_path: Path) -> None:
    for name in ("../z", "/abs"):
        arc = tmp_path / "e.zip"
        with zipfile.ZipFile(arc, "w") as zf:
            zf.writestr(name, b"x")
        with pytest.raises(ArchiveError):
            extract(arc, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    arc = tmp_path / "l.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        info = zipfile.ZipInfo("ln")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"../../etc")
    with pytest.raises(ArchiveError, match="links outside"):
        extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_size_limit_and_garbage(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "big.tar", [("a", b"x" * 1000, 0o644), ("b", b"y" * 1000, 0o644)])
    with pytest.raises(ArchiveError, match="more than 1500 bytes"):
        extract(arc, tmp_path / "out", max_bytes=1500)
    assert not (tmp_path / "out").exists()
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not an archive at all")
    with pytest.raises(ArchiveError, match="not a readable"):
        extract(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_setuid_bits_dropped(tmp_path: Path) -> None:
    arc = _tar(tmp_path / "a.tar", [("s", b"x", 0o4755)])
    extract(arc, tmp_path / "out")
    mode = (tmp_path / "out/s").stat().st_mode
    assert not mode & stat.S_ISUID
    assert mode & 0o100


def test_is_archive() -> None:
    assert is_archive("x.tar.gz") and is_archive("X.ZIP") and is_archive("a.tgz")
    assert not is_archive("run.sh") and not is_archive("tar")
