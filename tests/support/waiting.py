"""Bounded waits for tests: poll until a condition holds, or fail saying what did not happen."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.node_process import ApiClient


def wait_until(condition: Callable[[], bool], limit: float, what: str,
               interval: float = 0.2) -> None:
    """Poll ``condition`` every ``interval`` seconds; AssertionError after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {limit}s")
        time.sleep(interval)


def wait_for_peers(client: ApiClient, expected: set[str], *, limit: float = 60.0) -> None:
    """Until ``GET /api/peers`` lists every peer of ``expected``."""
    seen: set[str] = set()

    def listed() -> bool:
        nonlocal seen
        seen = {p["peer_id"] for p in client.get("/api/peers").json()["peers"]}
        return expected <= seen

    try:
        wait_until(listed, limit, "peers listed", interval=0.3)
    except AssertionError:
        raise AssertionError(f"peers {expected - seen} not listed within {limit}s") from None
