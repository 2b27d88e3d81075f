"""A job's output lines as its task run's logs in Prefect, so the Prefect UI shows them.

The node keeps Prefect's own logging off its API. A job's lines are sent on their own: each one
named after the stream it came on, gathered by ``LogShipper`` and posted in one request a second
(from the event loop, through the node's Prefect client). At most ``limit`` lines of a job are
sent; its last log then says how many more there were: the job's LOGS output holds them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("remote_network.flows")

INFO = logging.INFO
# Seconds between two requests; logs at most in one request.
SHIP_INTERVAL = 1.0
SHIP_BATCH = 2000

LogSink = Callable[[dict[str, Any]], None]
Post = Callable[[list[dict[str, Any]]], Awaitable[Any]]


class LogShipper:
    """Gathers logs and posts them, a batch at a time, at most once per ``interval``."""

    def __init__(self, post: Post, *, interval: float = SHIP_INTERVAL,
                 batch: int = SHIP_BATCH) -> None:
        self._post = post
        self._interval = interval
        self._batch = batch
        self._pending: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    def add(self, entry: dict[str, Any]) -> None:
        self._pending.append(entry)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._ship_after_interval())

    async def _ship_after_interval(self) -> None:
        while self._pending:
            await asyncio.sleep(self._interval)
            await self._ship()

    async def _ship(self) -> None:
        batch, self._pending = self._pending[:self._batch], self._pending[self._batch:]
        try:
            await self._post(batch)
        except Exception as exc:  # logs are a view: a lost batch must not touch the jobs
            log.warning("could not send %d job log lines to Prefect: %s", len(batch), exc)

    async def aclose(self) -> None:
        """Send what is pending now."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        while self._pending:
            await self._ship()


class TaskRunLog:
    """The logs of one task run (one attempt of a job)."""

    def __init__(self, sink: LogSink, *, flow_run_id: str, task_run_id: str,
                 limit: int) -> None:
        self._sink = sink
        self._ids = {"flow_run_id": flow_run_id, "task_run_id": task_run_id}
        self._limit = limit
        self.sent = 0
        self.dropped = 0

    def line(self, stream: str, text: str) -> None:
        if self.sent >= self._limit:
            self.dropped += 1
            return
        self.sent += 1
        self._send(stream, text)

    def close(self) -> None:
        """Say how many lines were left out, if any."""
        if self.dropped:
            self._send("job", f"{self.dropped} more line{'s' if self.dropped != 1 else ''} "
                       f"after the first {self.sent}: the job's LOGS output has them all")
            self.dropped = 0

    def _send(self, name: str, message: str) -> None:
        self._sink({"name": name, "level": INFO, "message": message,
                    "timestamp": dt.datetime.now(dt.UTC).isoformat(), **self._ids})
