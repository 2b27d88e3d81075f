"""Prefect's tag concurrency limits, asked for only where one exists.

Every job's task run carries the tags ``peer:<peer id>`` and ``service-type:<type>``, so that a
Prefect concurrency limit named ``tag:<tag>`` caps the work sent to one peer or of one kind. Prefect
asks its server for a slot of every tag's limit before each task run that has tags, whether such a
limit exists or not: a round trip on the path from one job to the next, for nothing in the common
case of no limits at all.

The node instead reads the names of the limits that exist when an execution starts (one request,
shared by the executions that start within the same second) and, inside that execution's flow
run, lets Prefect ask only for those. A limit applies to the executions that start from a second
after it was created. Outside an execution, and when the names could not be read, Prefect asks
for every tag as it always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger("remote_network.flows")

TAG_PREFIX = "tag:"
# Limits read per request; more than this many tag limits on one server is not expected.
PAGE = 200
# How long one reading of the limits serves executions that start after it (seconds).
MAX_AGE = 1.0

# The names of the tag limits that exist, as read when the current execution started.
_known: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "rn_tag_limits", default=None)


async def read_tag_limits(client: Any) -> frozenset[str] | None:
    """The names of the ``tag:`` concurrency limits on the Prefect server (None if unreadable)."""
    names: set[str] = set()
    try:
        for offset in range(0, 10 * PAGE, PAGE):
            page = await client.read_global_concurrency_limits(limit=PAGE, offset=offset)
            names.update(limit.name for limit in page if limit.name.startswith(TAG_PREFIX))
            if len(page) < PAGE:
                return frozenset(names)
    except Exception as exc:
        log.debug("cannot read Prefect's concurrency limits: %s", exc)
        return None
    return None  # more limits than read: let Prefect ask for every tag


class TagLimits:
    """The tag limits on the Prefect server, read at most once a second: executions started
    together share one request."""

    def __init__(self, max_age: float = MAX_AGE) -> None:
        self.max_age = max_age
        self._names: frozenset[str] | None = None
        self._read_at = -float("inf")
        self._reading: asyncio.Future[frozenset[str] | None] | None = None

    def prefetch(self, client: Any) -> None:
        """Start reading now, unless the last reading is recent or one is under way (an
        execution calls this before its flow run is set up, which takes longer)."""
        if time.monotonic() - self._read_at >= self.max_age and self._reading is None:
            self._reading = asyncio.ensure_future(self._read(client))

    async def current(self, client: Any) -> frozenset[str] | None:
        if time.monotonic() - self._read_at < self.max_age:
            return self._names
        self.prefetch(client)
        assert self._reading is not None
        return await asyncio.shield(self._reading)

    async def _read(self, client: Any) -> frozenset[str] | None:
        started = time.monotonic()
        try:
            names = await read_tag_limits(client)
        finally:
            self._reading = None
        if names is not None:
            self._names, self._read_at = names, started
        return names


def use_tag_limits(names: frozenset[str] | None) -> None:
    """Bind the limits read for this execution to the current context (its flow run's)."""
    _known.set(names)


def only_existing(acquire: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap Prefect's slot acquisition so it asks only for limits known to exist."""

    @contextlib.asynccontextmanager
    async def acquire_existing(names: Any, *args: Any, **kwargs: Any) -> AsyncIterator[None]:
        known = _known.get()
        if known is not None:
            listed = [names] if isinstance(names, str) else list(names or [])
            names = [n for n in listed if n in known]
        async with acquire(names, *args, **kwargs):
            yield

    acquire_existing._rn_existing_only = True  # type: ignore[attr-defined]
    return acquire_existing


def install() -> bool:
    """Put the wrapper in Prefect's task engine (once); False where that engine has no such
    hook (another Prefect version), which leaves Prefect's own behaviour."""
    import prefect.task_engine as engine

    acquire = getattr(engine, "_aconcurrency", None)
    if acquire is None:
        log.warning("Prefect's task engine has no _aconcurrency: every tagged task run asks "
                    "the server for tag concurrency slots")
        return False
    if not getattr(acquire, "_rn_existing_only", False):
        engine._aconcurrency = only_existing(acquire)
    return True
