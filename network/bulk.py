"""Bulk bytes between peers: content-addressed blobs, always checked against their sha256.

Two paths, both asked for over the authenticated QUIC connection:

- **TLS over TCP** (the fast path). The requester sends ``bulk_offer {sha256}``; the holder
  answers ``{port, token, size}``, having armed a one-time token bound to that peer and blob.
  The requester opens TLS to the holder's address on that port, pins the certificate to the one
  the QUIC connection showed, sends the token, and reads ``size`` raw bytes. aioquic moves
  17-31 MB/s on loopback; this path moves what TCP and the hash allow.
- **A QUIC stream** (the fallback, e.g. where only the QUIC path exists). The requester sends
  ``bulk_get {sha256}``; the holder answers with a ``bulk`` header frame ``{sha256, size}``
  followed by the raw bytes on the same stream, then closes it.

Either way the receiver writes to a temporary file beside the destination, hashes while it
writes, and renames only when size and hash match. On the TLS channel (``receive_blob``) one
thread reads and decrypts while two others hash and write the buffers already read (a few
reused ones, ``RECV_BUFFERS`` x ``RECV_CHUNK``), so the three costs overlap rather than add;
the sender (``send_file``) reads the file into one reused buffer. ``fetch_tls`` may send a
``preamble`` on the TCP connection before TLS starts (a relay's ticket, ``network.relay_splice``).

The TCP port is open to anyone, so the server serves at most ``max_connections`` at once (a
connection over that is closed at once, before TLS), and a connection has ``auth_timeout``
seconds in all to finish TLS and present its token.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from network import relay_splice
from network.peer_errors import BulkError, PeerClosed, PeerTimeout, PeerUnreachable
from network.tcp_listener import ThreadedListener, recv_exact

log = logging.getLogger("remote_network.bulk")

BULK_GET = "bulk_get"
BULK_OFFER = "bulk_offer"
CHUNK = 1024 * 1024
# The TLS channel's copy buffers: the sender reads the file in SEND_CHUNK pieces; the receiver
# fills RECV_BUFFERS buffers of RECV_CHUNK in turn (one decrypting, the others being hashed and
# written), so a transfer holds a few MiB whatever the blob's size.
SEND_CHUNK = 1024 * 1024
RECV_CHUNK = 1024 * 1024
RECV_BUFFERS = 4
# The most one write() to the temporary file takes (see BlobSink._write).
WRITE_SLICE = 256 * 1024
# The longest a single read of the TLS channel may wait for bytes.
RECV_STALL_TIMEOUT = 30.0
TOKEN_BYTES = 32
TOKEN_TTL = 30.0
CONNECT_TIMEOUT = 5.0
MAX_CONNECTIONS = 32
AUTH_TIMEOUT = 5.0
# A granted transfer whose reader takes nothing for this long is dropped.
SEND_STALL_TIMEOUT = 30.0
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


def valid_sha256(value: object) -> str | None:
    return value if isinstance(value, str) and _SHA256.match(value) else None


def valid_digest(value: object) -> str | None:
    """A content digest as the node writes one (``sha256:<64 hex>``: a service's content,
    a job key), or None: what a stranger sends as one is kept only in this shape."""
    if isinstance(value, str) and value.startswith("sha256:") and valid_sha256(value[7:]):
        return value
    return None


class BlobSink:
    """Receives one blob into ``dest``: temp file, running hash, rename on a verified finish."""

    def __init__(self, dest: Path, sha256: str, size: int, *, peer_id: str) -> None:
        self.dest, self.sha256, self.size, self.peer_id = dest, sha256, size, peer_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        self._fh = self.tmp.open("wb")
        self._hash = hashlib.sha256()
        self.received = 0

    def write(self, data: bytes | memoryview) -> None:
        self._check_room(len(data))
        self._hash.update(data)
        self._write(data)

    # The two halves of ``write``, for a caller that runs them on two threads: each must be
    # given the same pieces in the same order, and ``finish`` called once both are done.
    def update_hash(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def write_file(self, data: bytes | memoryview) -> None:
        self._check_room(len(data))
        self._write(data)

    def _write(self, data: bytes | memoryview) -> None:
        # In pieces of WRITE_SLICE: the page cache allocates folios as large as one write, and
        # large ones can cost ten times as much to find (seen on a VM: 2 MiB writes at a tenth
        # of the speed of 256 KiB ones).
        view = memoryview(data)
        for at in range(0, len(view), WRITE_SLICE):
            self._fh.write(view[at:at + WRITE_SLICE])
        self.received += len(view)

    def _check_room(self, n: int) -> None:
        if self.received + n > self.size:
            raise BulkError(self.peer_id, f"sent more than the announced {self.size} bytes "
                            f"of {self.sha256}")

    def finish(self) -> int:
        self._fh.close()
        if self.received != self.size:
            self.abort()
            raise BulkError(self.peer_id, f"transfer of {self.sha256} ended after "
                            f"{self.received} of {self.size} bytes")
        digest = self._hash.hexdigest()
        if digest != self.sha256:
            self.abort()
            raise BulkError(self.peer_id, f"hash mismatch for {self.sha256}: received bytes "
                            f"hash to {digest}")
        os.replace(self.tmp, self.dest)
        return self.received

    def abort(self) -> None:
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


@dataclass(frozen=True, slots=True)
class _Grant:
    peer_id: str
    sha256: str
    path: Path
    expires: float


class BulkServer(ThreadedListener):
    """The TLS-over-TCP side that serves armed tokens. Threads with blocking sockets: the
    copy loop is then bounded by TLS and the disk, not by the event loop."""

    def __init__(self, *, cert_path: Path, key_path: Path,
                 max_connections: int = MAX_CONNECTIONS,
                 auth_timeout: float = AUTH_TIMEOUT) -> None:
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(str(cert_path), str(key_path))
        self._grants: dict[bytes, _Grant] = {}
        self._lock = threading.Lock()
        self.auth_timeout = auth_timeout
        super().__init__(self._serve_one, max_connections=max_connections, name="bulk-send")

    def grant(self, peer_id: str, sha256: str, path: Path, *, now: float | None = None) -> str:
        """Arm a one-time token letting ``peer_id`` read ``path`` (blob ``sha256``)."""
        now = time.monotonic() if now is None else now
        token = secrets.token_bytes(TOKEN_BYTES)
        with self._lock:
            self._grants = {k: g for k, g in self._grants.items() if g.expires > now}
            self._grants[token] = _Grant(peer_id, sha256, path, now + TOKEN_TTL)
        return token.hex()

    def revoke_peer(self, peer_id: str) -> None:
        with self._lock:
            self._grants = {k: g for k, g in self._grants.items() if g.peer_id != peer_id}

    def _take(self, token: bytes) -> _Grant | None:
        with self._lock:
            grant = self._grants.pop(token, None)
        if grant is None or grant.expires < time.monotonic():
            return None
        return grant

    def revoke_token(self, token: str) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._grants.pop(bytes.fromhex(token), None)

    def serve_dialled(self, address: tuple[str, int], ticket: bytes) -> None:
        """Blocking until connected: dial a relay's splice port (``network.relay_splice``),
        present ``ticket``, then serve one granted token there as the TLS server, on a thread
        of its own under the same cap as the connections to our port."""
        raw = relay_splice.dial(address, ticket, timeout=CONNECT_TIMEOUT)
        # The requester meets this end at the relay after our answer reaches it: allow for that.
        wait = relay_splice.PAIR_TIMEOUT + self.auth_timeout
        if not self.run(raw, lambda conn: self._serve_one(conn, auth_timeout=wait)):
            raise BulkError("", "every bulk slot is busy")

    def _serve_one(self, raw: socket.socket, *, auth_timeout: float | None = None) -> None:
        auth_timeout = self.auth_timeout if auth_timeout is None else auth_timeout
        deadline = time.monotonic() + auth_timeout
        try:
            raw.settimeout(auth_timeout)
            with self._ctx.wrap_socket(raw, server_side=True) as tls:
                token = recv_exact(tls, TOKEN_BYTES, deadline=deadline)
                grant = self._take(token) if token is not None else None
                if grant is None:
                    return
                tls.settimeout(SEND_STALL_TIMEOUT)
                send_file(tls, grant.path)
                with contextlib.suppress(OSError, ssl.SSLError):
                    tls.unwrap()
        except (OSError, ssl.SSLError) as exc:
            log.debug("bulk send ended: %s", exc)
        finally:
            raw.close()


def send_file(tls: ssl.SSLSocket, path: Path) -> None:
    """Writes the whole file at ``path`` on an established TLS socket (blocking).

    One reused buffer: the file is read into it (no new bytes object per piece) and handed to
    TLS as a view, so memory stays at ``SEND_CHUNK`` however large the file."""
    buf = bytearray(SEND_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := fh.readinto(buf):
            tls.sendall(view[:n])


def receive_blob(tls: ssl.SSLSocket, sink: BlobSink, left: Callable[[], float]) -> None:
    """Reads ``sink.size`` bytes from an established TLS socket into ``sink`` (blocking);
    ``left()`` returns the seconds left before the deadline (raising PeerTimeout when none).

    Stops early when the peer ends the stream (``sink.finish()`` then reports the short
    transfer). A blob larger than one buffer is hashed and written on two other threads
    (``_SinkWriter``) while this one reads the next buffer; they have ended, and their error
    (if any) is raised here, before this returns. Nothing is assumed of ``tls`` beyond a
    connected ``ssl.SSLSocket``: its timeout is set here for each buffer, as the old loop did."""
    want = sink.size - sink.received
    if want <= 0:
        return
    if want <= RECV_CHUNK:
        view = memoryview(bytearray(want))
        sink.write(view[:_fill(tls, view, left)])
        return
    writer = _SinkWriter(sink)
    try:
        while want > 0:
            buf = writer.free_buffer(left)
            ask = min(RECV_CHUNK, want)
            n = _fill(tls, buf[:ask], left)
            writer.put(buf, n)
            if n < ask:
                break  # the peer ended early
            want -= n
        writer.drain(left)
    except BaseException:
        writer.stop(discard=True)
        raise
    writer.stop()


def _fill(tls: ssl.SSLSocket, view: memoryview, left: Callable[[], float]) -> int:
    """Fills ``view`` from ``tls``; fewer bytes only when the peer ends first.

    TLS hands out one record (16 KiB) per read: a whole buffer is filled before it is hashed
    and written, so those costs are paid per buffer, not per record."""
    filled, want = 0, len(view)
    tls.settimeout(min(left(), RECV_STALL_TIMEOUT))
    while filled < want:
        n = tls.recv_into(view[filled:])
        if n == 0:
            break
        filled += n
    return filled


class _SinkWriter:
    """Two threads that take the filled buffers in order: one hashes them, the other writes
    them to the sink's file.

    ``RECV_BUFFERS`` buffers go round: the reader takes a free one, fills it and ``put``s it;
    it is free again once both threads are done with it. ``hashlib``, file writes and TLS
    reads of large buffers release the GIL, so decrypting, hashing and writing run at once
    (a write stalled on the page cache no longer holds up the hash, nor the hash the write)."""

    def __init__(self, sink: BlobSink) -> None:
        self._free: queue.Queue[memoryview] = queue.Queue()
        for _ in range(RECV_BUFFERS):
            self._free.put(memoryview(bytearray(RECV_CHUNK)))
        self._users: dict[int, int] = {}  # id(buffer) -> threads still to take it
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._discard = False
        self._stages: list[queue.Queue[tuple[memoryview, int] | None]] = []
        self._threads: list[threading.Thread] = []
        for name, work in (("hash", sink.update_hash), ("write", sink.write_file)):
            todo: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
            thread = threading.Thread(target=self._run, args=(todo, work),
                                      name=f"bulk-sink-{name}", daemon=True)
            self._stages.append(todo)
            self._threads.append(thread)
            thread.start()

    def _run(self, todo: queue.Queue[tuple[memoryview, int] | None],
             work: Callable[[memoryview], None]) -> None:
        while (item := todo.get()) is not None:
            buf, n = item
            try:
                if self._error is None and not self._discard:
                    work(buf[:n])
            except BaseException as exc:  # handed to the reader, raised there
                with self._lock:
                    self._error = self._error or exc
            with self._lock:
                self._users[id(buf)] -= 1
                free = self._users[id(buf)] == 0
            if free:
                self._free.put(buf)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def free_buffer(self, left: Callable[[], float]) -> memoryview:
        """A buffer to fill: waits (within the deadline) for the threads to hand one back."""
        while True:
            self._check()
            try:
                buf = self._free.get(timeout=min(left(), 1.0))
            except queue.Empty:
                continue
            self._check()
            return buf

    def put(self, buf: memoryview, n: int) -> None:
        """Hands the first ``n`` bytes of ``buf`` to both threads."""
        with self._lock:
            self._users[id(buf)] = len(self._stages)
        for todo in self._stages:
            todo.put((buf, n))

    def drain(self, left: Callable[[], float]) -> None:
        """Waits until every buffer put has been hashed and written; raises their error."""
        for _ in range(RECV_BUFFERS):
            self.free_buffer(left)
        self._check()

    def stop(self, *, discard: bool = False) -> None:
        """Ends the threads and waits for them, so that nothing touches the sink after this
        returns (a caller may then abort it); with ``discard`` (the transfer failed) buffers
        not yet taken are dropped rather than hashed and written, so at most the piece under
        way is waited for."""
        self._discard = self._discard or discard
        for todo in self._stages:
            todo.put(None)
        for thread in self._threads:
            thread.join()


def fetch_tls(address: tuple[str, int], token: str, sink: BlobSink, *,
              pin_sha256: bytes, deadline: float, preamble: bytes = b"") -> int:
    """Blocking: read the granted blob over TLS into ``sink``; returns its size."""
    peer = sink.peer_id
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # pinned below to the certificate the QUIC session saw

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerTimeout(peer, f"bulk transfer of {sink.sha256} timed out")
        return remaining

    try:
        # A firewalled port must not eat the whole deadline: the QUIC fallback needs some.
        raw = socket.create_connection(address, timeout=min(left(), CONNECT_TIMEOUT))
    except OSError as exc:
        raise PeerUnreachable(peer, f"bulk channel {address[0]}:{address[1]} refused: "
                              f"{exc.strerror or exc}") from exc
    try:
        if preamble:
            raw.sendall(preamble)
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True) or b""
            if hashlib.sha256(der).digest() != pin_sha256:
                raise BulkError(peer, "bulk channel certificate differs from the peer's QUIC "
                                "certificate")
            tls.sendall(bytes.fromhex(token))
            receive_blob(tls, sink, left)
    except TimeoutError as exc:
        raise PeerTimeout(peer, f"bulk transfer of {sink.sha256} stalled") from exc
    except (OSError, ssl.SSLError) as exc:
        raise PeerClosed(peer, f"bulk channel failed: {exc}") from exc
    finally:
        raw.close()
    return sink.received
