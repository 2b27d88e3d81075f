"""Background tasks of the node's parts (loops started with the node, stopped with it)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has ended, whatever it ends with."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
