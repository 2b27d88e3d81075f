"""The blocking copy loops of the TLS bulk channel: ``send_file`` and ``receive_blob`` on a real
TLS connection, and ``fetch_tls`` against a ``BulkServer``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from network import bulk
from network.certs import ensure_self_signed
from network.peer_errors import BulkError, PeerTimeout

KIB = 1024


@pytest.fixture
def small_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buffers small enough that a blob of a few hundred KiB goes through the threads."""
    monkeypatch.setattr(bulk, "RECV_CHUNK", 64 * KIB)
    monkeypatch.setattr(bulk, "SEND_CHUNK", 48 * KIB)
    monkeypatch.setattr(bulk, "WRITE_SLICE", 24 * KIB)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_self_signed(tmp_path / "tls", common_name="bulk-test")


def sink_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bulk-sink")]


def deadline_in(seconds: float) -> Callable[[], float]:
    deadline = time.monotonic() + seconds

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTimeout("peer", "out of time")
        return remaining

    return left


@contextmanager
def tls_pair(cert: tuple[Path, Path],
             serve: Callable[[ssl.SSLSocket], None]) -> Iterator[ssl.SSLSocket]:
    """A connected client TLS socket; ``serve`` runs on the server end in a thread."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    a, b = socket.socketpair()

    def run() -> None:
        # The server's end may fail when a test makes the client give up; the client's end
        # is what the tests check.
        with contextlib.suppress(OSError, ssl.SSLError), \
                server_ctx.wrap_socket(b, server_side=True) as tls:
            tls.settimeout(10)
            serve(tls)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        with client_ctx.wrap_socket(a) as tls:
            tls.settimeout(10)
            yield tls
    finally:
        a.close()
        thread.join(10)
        b.close()
    assert not thread.is_alive()


def blob(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 5 * KIB, 64 * KIB, 64 * KIB + 1, 350 * KIB + 7])
def test_send_file_and_receive_blob_move_the_whole_blob(
        tmp_path: Path, cert: tuple[Path, Path], small_buffers: None, size: int) -> None:
    src = tmp_path / "src.bin"
    sha = blob(src, size)
    sink = bulk.BlobSink(tmp_path / "out" / "dest.bin", sha, size, peer_id="peer")
    with tls_pair(cert, lambda tls: bulk.send_file(tls, src)) as tls:
        bulk.receive_blob(tls, sink, deadline_in(10))
    assert sink.finish() == size
    assert (tmp_path / "out" / "dest.bin").read_bytes() == src.read_bytes()
    assert not sink_threads()


def test_a_peer_that_ends_early_is_a_short_transfer(
        tmp_path: Path, cert: tuple[Path, Path], small_buffers: None) -> None:
    src = tmp_path / "src.bin"
    sha = blob(src, 300 * KIB)
    part = tmp_path / "part.bin"
    part.write_bytes(src.read_bytes()[:200 * KIB + 3])

    def serve(tls: ssl.SSLSocket) -> None:
        bulk.send_file(tls, part)
        tls.unwrap()

    sink = bulk.BlobSink(tmp_path / "dest.bin", sha, 300 * KIB, peer_id="peer")
    with tls_pair(cert, serve) as tls:
        bulk.receive_blob(tls, sink, deadline_in(10))
    assert sink.received == 200 * KIB + 3
    with pytest.raises(BulkError, match="ended after"):
        sink.finish()
    assert not (tmp_path / "dest.bin").exists()
    assert not list(tmp_path.glob(".dest.bin.*.part"))
    assert not sink_threads()


def test_corrupted_bytes_fail_the_hash_and_leave_no_file(
        tmp_path: Path, cert: tuple[Path, Path], small_buffers: None) -> None:
    src = tmp_path / "src.bin"
    blob(src, 200 * KIB)
    sink = bulk.BlobSink(tmp_path / "dest.bin", "0" * 64, 200 * KIB, peer_id="peer")
    with tls_pair(cert, lambda tls: bulk.send_file(tls, src)) as tls:
        bulk.receive_blob(tls, sink, deadline_in(10))
    with pytest.raises(BulkError, match="hash mismatch"):
        sink.finish()
    assert not (tmp_path / "dest.bin").exists()


def test_a_failing_write_is_raised_and_the_threads_end(
        tmp_path: Path, cert: tuple[Path, Path], small_buffers: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    sha = blob(src, 400 * KIB)
    sink = bulk.BlobSink(tmp_path / "dest.bin", sha, 400 * KIB, peer_id="peer")
    calls = 0
    write_file = sink.write_file

    def failing(data: memoryview) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        write_file(data)

    monkeypatch.setattr(sink, "write_file", failing)
    with tls_pair(cert, lambda tls: bulk.send_file(tls, src)) as tls, \
            pytest.raises(OSError, match="No space"):
        bulk.receive_blob(tls, sink, deadline_in(10))
    assert not sink_threads()
    sink.abort()
    assert not list(tmp_path.glob(".dest.bin.*.part"))


def test_a_stalled_sender_times_out(
        tmp_path: Path, cert: tuple[Path, Path], small_buffers: None) -> None:
    src = tmp_path / "src.bin"
    sha = blob(src, 100 * KIB)
    release = threading.Event()

    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(src.read_bytes()[:80 * KIB])
        release.wait(10)

    sink = bulk.BlobSink(tmp_path / "dest.bin", sha, 300 * KIB, peer_id="peer")
    started = time.monotonic()
    with tls_pair(cert, serve) as tls:
        try:
            with pytest.raises((TimeoutError, PeerTimeout)):
                bulk.receive_blob(tls, sink, deadline_in(0.5))
        finally:
            release.set()
    assert time.monotonic() - started < 5
    assert not sink_threads()
    sink.abort()


def test_the_sink_refuses_more_than_announced(tmp_path: Path) -> None:
    sink = bulk.BlobSink(tmp_path / "dest.bin", "0" * 64, 10, peer_id="peer")
    sink.write_file(b"x" * 6)
    with pytest.raises(BulkError, match="more than the announced"):
        sink.write_file(b"x" * 5)
    with pytest.raises(BulkError, match="more than the announced"):
        sink.write(b"x" * 5)
    sink.abort()


def test_fetch_tls_from_a_bulk_server_is_pinned_and_one_time(
        tmp_path: Path, cert: tuple[Path, Path], small_buffers: None) -> None:
    src = tmp_path / "src.bin"
    size = 500 * KIB + 11
    sha = blob(src, size)
    server = bulk.BulkServer(cert_path=cert[0], key_path=cert[1])
    port = server.start("127.0.0.1")
    pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert[0].read_text())).digest()
    try:
        token = server.grant("peer", sha, src)
        sink = bulk.BlobSink(tmp_path / "dest.bin", sha, size, peer_id="peer")
        assert bulk.fetch_tls(("127.0.0.1", port), token, sink, pin_sha256=pin,
                              deadline=time.monotonic() + 10) == size
        assert sink.finish() == size
        assert (tmp_path / "dest.bin").read_bytes() == src.read_bytes()

        again = bulk.BlobSink(tmp_path / "again.bin", sha, size, peer_id="peer")
        bulk.fetch_tls(("127.0.0.1", port), token, again, pin_sha256=pin,
                       deadline=time.monotonic() + 10)
        assert again.received == 0  # a used token gets nothing
        again.abort()

        other = bulk.BlobSink(tmp_path / "other.bin", sha, size, peer_id="peer")
        with pytest.raises(BulkError, match="certificate differs"):
            bulk.fetch_tls(("127.0.0.1", port), server.grant("peer", sha, src), other,
                           pin_sha256=b"\0" * 32, deadline=time.monotonic() + 10)
        other.abort()
    finally:
        server.stop()
    assert not sink_threads()
