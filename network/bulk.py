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
writes, and renames only when size and hash match.

The TCP port is open to anyone, so the server serves at most ``max_connections`` at once (a
connection over that is closed at once, before TLS), and a connection has ``auth_timeout``
seconds in all to finish TLS and present its token.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from network.peer_errors import BulkError, PeerClosed, PeerTimeout, PeerUnreachable

log = logging.getLogger("remote_network.bulk")

BULK_GET = "bulk_get"
BULK_OFFER = "bulk_offer"
CHUNK = 1024 * 1024
TOKEN_BYTES = 32
TOKEN_TTL = 30.0
CONNECT_TIMEOUT = 5.0
MAX_CONNECTIONS = 32
AUTH_TIMEOUT = 5.0
# A granted transfer whose reader takes nothing for this long is dropped.
SEND_STALL_TIMEOUT = 30.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def valid_sha256(value: object) -> str | None:
    return value if isinstance(value, str) and _SHA256.match(value) else None


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
        if self.received + len(data) > self.size:
            raise BulkError(self.peer_id, f"sent more than the announced {self.size} bytes "
                            f"of {self.sha256}")
        self._hash.update(data)
        self._fh.write(data)
        self.received += len(data)

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


class BulkServer:
    """The TLS-over-TCP side that serves armed tokens. Threads with blocking sockets: the
    copy loop is then bounded by TLS and the disk, not by the event loop."""

    def __init__(self, *, cert_path: Path, key_path: Path,
                 max_connections: int = MAX_CONNECTIONS,
                 auth_timeout: float = AUTH_TIMEOUT) -> None:
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(str(cert_path), str(key_path))
        self._grants: dict[bytes, _Grant] = {}
        self._lock = threading.Lock()
        self.max_connections = max_connections
        self.auth_timeout = auth_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, host: str, port: int = 0) -> int:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="bulk-accept",
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(2)

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

    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                # Every slot busy: close at once rather than queue a stranger's connection.
                self.refused += 1
                with contextlib.suppress(OSError):
                    conn.close()
                continue
            try:
                threading.Thread(target=self._serve, args=(conn,), name="bulk-send",
                                 daemon=True).start()
            except RuntimeError:
                self._slots.release()
                conn.close()

    def _serve(self, raw: socket.socket) -> None:
        try:
            self._serve_one(raw)
        finally:
            self._slots.release()

    def _serve_one(self, raw: socket.socket) -> None:
        deadline = time.monotonic() + self.auth_timeout
        try:
            raw.settimeout(self.auth_timeout)
            with self._ctx.wrap_socket(raw, server_side=True) as tls:
                token = _recv_exact(tls, TOKEN_BYTES, deadline=deadline)
                grant = self._take(token) if token is not None else None
                if grant is None:
                    return
                tls.settimeout(SEND_STALL_TIMEOUT)
                with grant.path.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        tls.sendall(chunk)
                with contextlib.suppress(OSError, ssl.SSLError):
                    tls.unwrap()
        except (OSError, ssl.SSLError) as exc:
            log.debug("bulk send ended: %s", exc)
        finally:
            raw.close()


def _recv_exact(sock: socket.socket, n: int, *, deadline: float) -> bytes | None:
    """``n`` bytes, or None when the peer ends first; TimeoutError past ``deadline``."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no token in time")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def fetch_tls(address: tuple[str, int], token: str, sink: BlobSink, *,
              pin_sha256: bytes, deadline: float) -> int:
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
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True) or b""
            if hashlib.sha256(der).digest() != pin_sha256:
                raise BulkError(peer, "bulk channel certificate differs from the peer's QUIC "
                                "certificate")
            tls.sendall(bytes.fromhex(token))
            view = memoryview(bytearray(CHUNK))
            ended = False
            while sink.received < sink.size and not ended:
                tls.settimeout(min(left(), 30.0))
                # TLS hands out one record (16 KiB) per read: fill a whole chunk before hashing
                # and writing it, so those costs are paid per MiB, not per record.
                want, filled = min(CHUNK, sink.size - sink.received), 0
                while filled < want:
                    n = tls.recv_into(view[filled:want])
                    if n == 0:
                        ended = True
                        break
                    filled += n
                sink.write(view[:filled])
    except TimeoutError as exc:
        raise PeerTimeout(peer, f"bulk transfer of {sink.sha256} stalled") from exc
    except (OSError, ssl.SSLError) as exc:
        raise PeerClosed(peer, f"bulk channel failed: {exc}") from exc
    finally:
        raw.close()
    return sink.received
