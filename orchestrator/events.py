"""The node's in-process pub/sub bus.

``publish`` may be called from the event loop or from a worker thread (sync database code runs
in threads); delivery always happens on the loop. Each subscriber has a bounded queue: a slow
subscriber loses its oldest events rather than holding up the node.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    payload: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        return {"type": self.type, "payload": self.payload}


class Subscription:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()


class EventBus:
    def __init__(self, *, queue_size: int = 1000) -> None:
        self._subs: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue_size = queue_size
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, type_: str, payload: dict[str, Any] | None = None) -> None:
        event = Event(type_, payload or {})
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.offer(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        sub = Subscription(self._queue_size)
        with self._lock:
            self._subs.add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._subs.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)


# -- every event the node publishes on the bus; the WebSocket forwards them as they are ----------
# Executions and jobs (orchestrator.execution_store): a state change, progress, a job's line.
EXECUTION_UPDATED = "EXECUTION_UPDATED"
JOB_UPDATED = "JOB_UPDATED"
JOB_LOG = "JOB_LOG"
# Services, workflows and the blacklist: something was created, changed or deleted.
SERVICE_UPDATED = "SERVICE_UPDATED"
WORKFLOW_UPDATED = "WORKFLOW_UPDATED"
BLACKLIST_UPDATED = "BLACKLIST_UPDATED"
# Peers: the directory changed; a peer's capabilities were fetched; our relay candidates or the
# relay we are registered with changed.
PEER_UPDATED = "PEER_UPDATED"
PEER_CAPABILITIES_UPDATED = "PEER_CAPABILITIES_UPDATED"
RELAY_CANDIDATES = "RELAY_CANDIDATES"
# A Docker build or pull: started, progress, done, failed.
DOCKER_OPERATION_START = "DOCKER_OPERATION_START"
DOCKER_OPERATION_PROGRESS = "DOCKER_OPERATION_PROGRESS"
DOCKER_OPERATION_COMPLETE = "DOCKER_OPERATION_COMPLETE"
DOCKER_OPERATION_ERROR = "DOCKER_OPERATION_ERROR"
