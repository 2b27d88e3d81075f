"""Bounds on what a peer may make this node hold: receive windows and connection counts.

Plain bookkeeping, no I/O: ``ReceiveWindows`` decides the QUIC flow-control limits the node
advertises (they advance only as the node consumes what it received, so a peer that sends to a
stream nobody reads is stopped by QUIC itself), and ``ConnectionBook`` decides which incoming
connections the node admits (in total, not yet verified, and per peer id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True)
class TransportLimits:
    """Every cap the transport puts on its peers; the defaults suit a public node."""

    # Unread bytes the node lets a peer have in flight on one stream, and on one connection
    # (the QUIC receive windows; they move forward only as the node reads).
    stream_window: int = 2 * MIB
    connection_window: int = 4 * MIB
    # Bytes of requests not yet whole that the node holds while it reads them: per connection,
    # and over all connections.
    request_bytes_per_connection: int = 8 * MIB
    request_bytes_total: int = 128 * MIB
    # Streams a peer may have open towards the node at once, on one connection.
    max_incoming_streams: int = 64
    # Incoming connections: in total, still in the identity exchange, and per verified peer.
    max_connections: int = 256
    max_unverified: int = 64
    max_connections_per_peer: int = 4
    # Bytes the node queues for sending on one stream before it waits for the peer to read.
    send_buffer: int = 4 * MIB
    # How long a writer waits for a peer that does not read before giving the stream up.
    send_stall_timeout: float = 30.0
    # The TLS-over-TCP bulk channel: connections served at once, and the time a connection has
    # to finish TLS and present its token.
    bulk_max_connections: int = 32
    bulk_auth_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("stream_window", "connection_window", "request_bytes_per_connection",
                     "request_bytes_total", "max_incoming_streams",
                     "max_connections", "max_unverified", "max_connections_per_peer",
                     "send_buffer", "bulk_max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"transport limit {name} must be at least 1")
        for name in ("send_stall_timeout", "bulk_auth_timeout"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"transport limit {name} must be a positive finite number")


@dataclass
class ReceiveWindows:
    """Flow-control limits that advance with what the application consumed.

    A limit is raised to ``consumed + window`` once that grants at least half a window more
    than was last advertised (so updates are batched, and a reader that keeps up never stalls
    its sender: by the time half a window is unread, a raise is due).
    """

    stream_window: int
    connection_window: int
    consumed_total: int = 0
    _consumed: dict[int, int] = field(default_factory=dict)

    def open(self, stream_id: int) -> None:
        """Start counting what the application consumes of ``stream_id``."""
        self._consumed.setdefault(stream_id, 0)

    def consumed(self, stream_id: int, n: int) -> None:
        """``n`` bytes of ``stream_id`` were read (or discarded) by the application; a stream
        no longer counted (see ``forget``) still frees connection window."""
        if n <= 0:
            return
        if stream_id in self._consumed:
            self._consumed[stream_id] += n
        self.consumed_total += n

    @property
    def streams(self) -> int:
        return len(self._consumed)

    def forget(self, stream_id: int) -> None:
        self._consumed.pop(stream_id, None)

    def stream_limit(self, stream_id: int, current: int) -> int:
        """The limit to advertise for ``stream_id``, given the one advertised now."""
        return _advance(current, self._consumed.get(stream_id, 0), self.stream_window)

    def connection_limit(self, current: int) -> int:
        return _advance(current, self.consumed_total, self.connection_window)

    def due(self, stream_id: int, current_stream: int, current_connection: int) -> bool:
        """Whether a window update should be sent now."""
        return (self.stream_limit(stream_id, current_stream) != current_stream
                or self.connection_limit(current_connection) != current_connection)


def _advance(current: int, consumed: int, window: int) -> int:
    target = consumed + window
    return target if target - current >= window // 2 else current


class Budget:
    """Bytes that may be held at once; ``parent`` (if any) must have room as well."""

    def __init__(self, limit: int, *, parent: Budget | None = None) -> None:
        self.limit = limit
        self.held = 0
        self.parent = parent

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes if this budget and its parent allow it."""
        if self.held + n > self.limit:
            return False
        if self.parent is not None and not self.parent.take(n):
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        n = min(n, self.held)
        self.held -= n
        if self.parent is not None:
            self.parent.give(n)


class ConnectionRefused(Exception):
    """An incoming connection over one of the caps; the message says which."""


@dataclass
class ConnectionBook:
    """Incoming connections by state; ``key`` is any hashable handle of a connection."""

    limits: TransportLimits
    _unverified: set[object] = field(default_factory=set)
    _verified: dict[object, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._unverified) + len(self._verified)

    @property
    def unverified(self) -> int:
        return len(self._unverified)

    def of_peer(self, peer_id: str) -> int:
        return sum(1 for p in self._verified.values() if p == peer_id)

    def open(self, key: object) -> None:
        """A new incoming connection (before the identity exchange); raises ConnectionRefused."""
        if len(self) >= self.limits.max_connections:
            raise ConnectionRefused(f"node is at its limit of {self.limits.max_connections} "
                                    "incoming connections")
        if len(self._unverified) >= self.limits.max_unverified:
            raise ConnectionRefused(f"node is at its limit of {self.limits.max_unverified} "
                                    "connections in the identity exchange")
        self._unverified.add(key)

    def refusal(self, key: object, peer_id: str) -> str | None:
        """Why ``peer_id`` may not have this connection verified, or None."""
        others = sum(1 for k, p in self._verified.items() if p == peer_id and k is not key)
        if others >= self.limits.max_connections_per_peer:
            return (f"peer has {others} connections to this node, its limit is "
                    f"{self.limits.max_connections_per_peer}")
        return None

    def verified(self, key: object, peer_id: str) -> None:
        if key in self._unverified:
            self._unverified.discard(key)
            self._verified[key] = peer_id

    def close(self, key: object) -> None:
        self._unverified.discard(key)
        self._verified.pop(key, None)
