"""Token buckets per client address, with a bounded table; the clock is passed in.

A bucket holds up to ``burst`` tokens and gains ``per_second`` a second; each request takes one.
IPv6 clients are counted by their /64 (one host is usually given a whole /64); IPv4 clients by
their address. The table keeps the ``max_clients`` most recently seen: when full, the bucket of
the client seen longest ago is dropped (it would be nearly full again by then anyway).
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    burst: float
    per_second: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        """Take one token if there is one (after refilling for the time since the last call)."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.per_second)
        self.updated = max(self.updated, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token."""
        if self.tokens >= 1.0 or self.per_second <= 0:
            return 0.0
        return (1.0 - self.tokens) / self.per_second


def client_key(host: str | None) -> str:
    """What a client is counted by: its IPv4 address or its IPv6 /64."""
    if not host:
        return "local"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """``allow(client, now)``: True while the client's bucket has a token."""

    def __init__(self, *, burst: int, per_second: float, max_clients: int = 10_000) -> None:
        if burst < 1 or per_second < 0 or max_clients < 1:
            raise ValueError("burst and max_clients must be at least 1, per_second not negative")
        self.burst = burst
        self.per_second = per_second
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str, now: float) -> bool:
        return self.check(client, now) == 0.0

    def check(self, client: str, now: float) -> float:
        """0.0 when the request may go ahead (a token is taken), else seconds to wait."""
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                while len(self._buckets) >= self.max_clients:
                    self._buckets.popitem(last=False)
                bucket = TokenBucket(self.burst, self.per_second, float(self.burst), now)
                self._buckets[client] = bucket
            else:
                self._buckets.move_to_end(client)
            if bucket.take(now):
                return 0.0
            return max(bucket.retry_after(), 1e-3)
