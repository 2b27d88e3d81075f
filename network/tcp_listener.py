"""A TCP port that strangers may connect to, served by threads with blocking sockets.

The bulk channel (``network.bulk``) and a relay's splice port (``network.relay_splice``) are
both open to anyone, so both take connections the same way: at most ``max_connections`` at once,
each on a thread of its own, and a connection over the cap is closed at once, before it is read,
rather than queued. ``ThreadedListener`` is that loop; each server builds on it and says what
to do with a connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable


def recv_exact(sock: socket.socket, n: int, *, deadline: float) -> bytes | None:
    """``n`` bytes, or None when the peer ends first; TimeoutError past ``deadline`` (the
    monotonic clock): what a stranger's connection must send first, a token or a ticket."""
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{n} bytes did not come in time")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class ThreadedListener:
    """Accepts connections on a port and hands each to ``serve`` on its own thread."""

    def __init__(self, serve: Callable[[socket.socket], None], *, max_connections: int,
                 name: str) -> None:
        self._handler = serve
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.name = name
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
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
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

    def run(self, conn: socket.socket, serve: Callable[[socket.socket], None]) -> bool:
        """Serve ``conn`` (one this node opened, say) on a thread of its own, under the same
        cap; False, and ``conn`` closed, when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            with contextlib.suppress(OSError):
                conn.close()
            return False
        try:
            threading.Thread(target=self._run_one, args=(conn, serve), name=self.name,
                             daemon=True).start()
        except RuntimeError:
            self._slots.release()
            conn.close()
            return False
        return True

    def _run_one(self, conn: socket.socket, serve: Callable[[socket.socket], None]) -> None:
        try:
            serve(conn)
        finally:
            self._slots.release()

    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.run(conn, self._handler)
