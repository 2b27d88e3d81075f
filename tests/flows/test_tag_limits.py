"""flows.tag_limits: which tag limits Prefect is asked for, inside and outside an execution."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from flows.tag_limits import install, only_existing, use_tag_limits


def recorder() -> tuple[list[list[str]], Any]:
    asked: list[list[str]] = []

    @contextlib.asynccontextmanager
    async def acquire(names: list[str], *_: Any, **__: Any) -> AsyncIterator[None]:
        asked.append(list(names))
        yield

    return asked, acquire


def test_asks_only_for_existing_limits_inside_an_execution() -> None:
    asked, acquire = recorder()
    wrapped = only_existing(acquire)

    async def in_execution() -> None:
        use_tag_limits(frozenset({"tag:peer:abc"}))
        async with wrapped(["tag:peer:abc", "tag:service-type:STANDALONE"], occupy=1):
            pass
        use_tag_limits(frozenset())
        async with wrapped(["tag:peer:abc"], occupy=1):
            pass

    async def outside() -> None:
        async with wrapped(["tag:peer:abc", "tag:x"], occupy=1):
            pass

    asyncio.run(in_execution())
    asyncio.run(outside())
    assert asked == [["tag:peer:abc"], [], ["tag:peer:abc", "tag:x"]]


def test_unreadable_limits_leave_prefect_asking_for_every_tag() -> None:
    asked, acquire = recorder()
    wrapped = only_existing(acquire)

    async def run() -> None:
        use_tag_limits(None)
        async with wrapped(["tag:a", "tag:b"]):
            pass

    asyncio.run(run())
    assert asked == [["tag:a", "tag:b"]]


def test_installed_once_in_prefects_task_engine() -> None:
    import prefect.task_engine as engine

    assert install()
    first = engine._aconcurrency
    assert install()
    assert engine._aconcurrency is first and getattr(first, "_rn_existing_only", False)
