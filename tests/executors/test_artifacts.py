"""The artifact store: content addressing, atomic writes, deterministic tars, safe unpacking."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from executors.artifacts import (
    SPILL,
    ArtifactError,
    ArtifactMissing,
    ArtifactStore,
    UnsafeArchive,
)
from executors.base import ArtifactKind


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def test_put_bytes_is_content_addressed(store: ArtifactStore) -> None:
    data = b"hello artifacts\n"
    ref = store.put_bytes(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == len(data) and ref.kind == ArtifactKind.FILE
    assert store.has(ref.sha256)
    assert store.read_bytes(ref) == data
    assert store.path(ref.sha256) == store.root / ref.sha256[:2] / ref.sha256
    # Same bytes, same artifact; nothing left in the temp area.
    assert store.put_bytes(data) == ref
    assert list(store.tmp_dir.iterdir()) == []
    assert store.verify(ref)


def test_put_file_streams_large_file(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    src.write_bytes(data)
    ref = store.put_file(src)
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    with store.open(ref) as f:
        assert f.read() == data


def test_missing_and_bad_digests(store: ArtifactStore) -> None:
    assert not store.has("0" * 64)
    assert not store.has("../../etc/passwd")
    with pytest.raises(ArtifactMissing):
        store.read_bytes("0" * 64)
    with pytest.raises(ArtifactError):
        store.path("../../etc/passwd")


def test_aborted_write_leaves_nothing(store: ArtifactStore) -> None:
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("boom")
    assert list(store.tmp_dir.iterdir()) == []
    assert not store.has(hashlib.sha256(b"partial").hexdigest())


def _tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("A")
    (root / "sub" / "b.txt").write_text("BB")
    (root / "sub" / "deep" / "run.sh").write_text("#!/bin/sh\n")
    (root / "sub" / "deep" / "run.sh").chmod(0o755)
    (root / "link").symlink_to("sub/b.txt")


def test_put_dir_is_deterministic_and_roundtrips(store: ArtifactStore, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _tree(one)
    _tree(two)
    os.utime(two / "a.txt", (1, 1))
    ref1, ref2 = store.put_dir(one), store.put_dir(two)
    assert ref1.kind == ArtifactKind.TAR
    assert ref1 == ref2
    out = tmp_path / "out"
    store.extract_tar(ref1, out)
    assert (out / "a.txt").read_text() == "A"
    assert (out / "sub" / "b.txt").read_text() == "BB"
    assert os.access(out / "sub" / "deep" / "run.sh", os.X_OK)
    assert os.readlink(out / "link") == "sub/b.txt"
    (two / "a.txt").write_text("changed")
    assert store.put_dir(two) != ref1


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _member(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(_member("/etc/evil"), b"x")], "absolute path"),
        ([(_member("../evil"), b"x")], "'..'"),
        ([(_member("a/../../evil"), b"x")], "'..'"),
        ([(_member("ln", tarfile.SYMTYPE, "/etc/passwd"), None)], "absolute path"),
        ([(_member("d/ln", tarfile.SYMTYPE, "../../x"), None)], "outside"),
        ([(_member("hl", tarfile.LNKTYPE, "../x"), None)], "outside"),
        ([(_member("dev", tarfile.CHRTYPE), None)], "device"),
        ([(_member("fifo", tarfile.FIFOTYPE), None)], "device"),
    ],
)
def test_extract_rejects_unsafe_members(store: ArtifactStore, tmp_path: Path,
                                        members: list, message: str) -> None:
    ref = store.put_bytes(_tar(*members), kind=ArtifactKind.TAR)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive, match=message):
        store.extract_tar(ref, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_extract_rejects_escape_through_symlinked_dir(store: ArtifactStore, tmp_path: Path) -> None:
    # "p" -> "." makes "p/x" really "x", so "p/x/y" -> "../../z" really points at "../z".
    ref = store.put_bytes(_tar(
        (_member("x", tarfile.DIRTYPE), None),
        (_member("p", tarfile.SYMTYPE, "."), None),
        (_member("p/x/y", tarfile.SYMTYPE, "../../z"), None),
    ), kind=ArtifactKind.TAR)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchive):
        store.extract_tar(ref, dest)
    assert not (tmp_path / "z").exists()


def test_extract_rejects_garbage(store: ArtifactStore, tmp_path: Path) -> None:
    ref = store.put_bytes(b"not a tar at all" * 100, kind=ArtifactKind.TAR)
    with pytest.raises(ArtifactError, match="not a valid tar"):
        store.extract_tar(ref, tmp_path / "dest")


def test_ephemeral_bytes_go_with_their_last_user(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    clear = tmp_path / "clear"
    clear.write_bytes(b"clear bytes of a DATA service")
    first = store.put_file(clear, ephemeral=True)
    second = store.put_file(clear, ephemeral=True)  # a second job reading them at once
    assert first == second and store.ephemeral == {first.sha256}
    store.release(first.sha256)
    assert store.has(first.sha256)  # the second job still reads them
    store.release(first.sha256)
    assert not store.has(first.sha256) and store.ephemeral == set()
    store.release(first.sha256)  # once more: nothing to do


def test_ephemeral_bytes_stored_for_good_meanwhile_stay(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    clear = tmp_path / "clear"
    clear.write_bytes(b"a job printed its input")
    ref = store.put_file(clear, ephemeral=True)
    assert store.put_bytes(b"a job printed its input") == ref  # an output with the same bytes
    store.release(ref.sha256)
    assert store.has(ref.sha256) and store.ephemeral == set()


def test_bytes_already_stored_for_good_are_not_made_ephemeral(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    ref = store.put_bytes(b"an earlier output")
    clear = tmp_path / "clear"
    clear.write_bytes(b"an earlier output")
    assert store.put_file(clear, ephemeral=True) == ref
    store.release(ref.sha256)
    assert store.has(ref.sha256)


def test_keep_makes_ephemeral_bytes_stay(tmp_path: Path) -> None:
    """The same bytes brought back from a peer as an output: kept for good, not released."""
    store = ArtifactStore(tmp_path / "store")
    clear = tmp_path / "clear"
    clear.write_bytes(b"echoed back by a remote job")
    ref = store.put_file(clear, ephemeral=True)
    assert store.keep(ref.sha256)
    store.release(ref.sha256)
    assert store.has(ref.sha256)
    assert not store.keep("0" * 64)  # not stored
    assert not store.keep("../" + "0" * 61)  # not a digest


@pytest.mark.parametrize("pieces", [
    [b"small"],                                   # held in memory, then one write
    [b"a" * 40_000, b"b" * 40_000],               # past SPILL: to a temp file mid-way
    [b"c" * (SPILL + 1)],                         # past SPILL at once
])
def test_written_bytes_are_stored_whole_whether_held_or_spilled(
        store: ArtifactStore, pieces: list[bytes]) -> None:
    with store.writer() as w:
        for piece in pieces:
            w.write(piece)
    assert w.ref is not None
    assert store.read_bytes(w.ref) == b"".join(pieces)
    assert oct(store.path(w.ref.sha256).stat().st_mode & 0o777) == "0o444"
    assert list(store.tmp_dir.iterdir()) == []


def test_an_aborted_write_leaves_nothing(store: ArtifactStore) -> None:
    for pieces in ([b"held"], [b"d" * (SPILL + 10)]):
        w = store.writer()
        for piece in pieces:
            w.write(piece)
        w.abort()
        assert not store.has(hashlib.sha256(b"".join(pieces)).hexdigest())
    assert list(store.tmp_dir.iterdir()) == []


def _links_tar(links: list[tuple[str, str]], then: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, data in then:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("links", [
    [("a", "."), ("a/b", ".."), ("x", "a/b/../../etc")],
    [("x", "a/../.."), ("a", ".")],  # resolved through a later link
    [("a", "."), ("x", "a/..")],
])
def test_symlink_chains_never_lead_out(store: ArtifactStore, tmp_path: Path,
                                       links: list[tuple[str, str]]) -> None:
    dest = tmp_path / "box" / "dest"
    ref = store.put_bytes(_links_tar(links, [("x/marker", b"pwned")]), kind=ArtifactKind.TAR)
    with pytest.raises(UnsafeArchive):
        store.materialize(ref, dest)
    assert list(dest.iterdir()) == []  # nothing of the archive left
    assert [p for p in tmp_path.rglob("marker")] == []
    # The same chain without the write: refused once every link is in place.
    only = store.put_bytes(_links_tar(links, []), kind=ArtifactKind.TAR)
    with pytest.raises(UnsafeArchive):
        store.materialize(only, dest)
    assert list(dest.iterdir()) == []


def test_hard_link_to_outside_refused(store: ArtifactStore, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("h")
        info.type, info.linkname = tarfile.LNKTYPE, "etc/passwd"
        tar.addfile(info)
    ref = store.put_bytes(buf.getvalue(), kind=ArtifactKind.TAR)
    with pytest.raises(UnsafeArchive, match="earlier file"):
        store.extract_tar(ref, tmp_path / "d")


def test_put_dir_follows_no_link_out(store: ArtifactStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"top-secret")
    job = tmp_path / "job"
    (job / "out").mkdir(parents=True)
    (job / "out" / "ln").symlink_to(secret)
    os.link(secret, job / "out" / "hard")
    with pytest.raises(ArtifactError, match="hard link"):
        store.put_dir(job / "out", within=job)
    (job / "out" / "hard").unlink()
    ref = store.put_dir(job / "out", within=job)
    assert b"top-secret" not in store.read_bytes(ref)
    (job / "alias").symlink_to(tmp_path)
    with pytest.raises(ArtifactError):
        store.put_dir(job / "alias", within=job)  # the dir itself is a link
    with pytest.raises(ArtifactError, match="outside"):
        store.put_dir(tmp_path / "job" / "..", within=job)
    with pytest.raises(ArtifactError, match="output limit"):
        (job / "out" / "big").write_bytes(b"x" * 2000)
        store.put_dir(job / "out", max_bytes=1000, within=job)


def test_damaged_artifacts_are_refused_and_removed(store: ArtifactStore) -> None:
    small = store.put_bytes(b"hello world")
    big = store.put_bytes(b"y" * (1 << 20))
    for ref in (small, big):
        path = store.path(ref.sha256)
        path.chmod(0o644)
        path.write_bytes(b"")  # what a power loss can leave
    for ref in (small, big):
        with pytest.raises(ArtifactError, match="damaged"):
            store.read_bytes(ref)
        assert not store.path(ref.sha256).exists()
    truncated = store.put_bytes(b"z" * (1 << 20))
    path = store.path(truncated.sha256)
    path.chmod(0o644)
    path.write_bytes(b"z" * 1000)
    with pytest.raises(ArtifactError, match="damaged"):
        store.open(truncated)
    flipped = store.put_bytes(b"abc")
    store.path(flipped.sha256).chmod(0o644)
    store.path(flipped.sha256).write_bytes(b"abd")
    assert store.has(flipped.sha256) is False  # small: hashed on use
    assert store.keep(small.sha256) is False
    again = store.put_bytes(b"hello world")  # stored anew once found damaged
    assert store.read_bytes(again) == b"hello world"
