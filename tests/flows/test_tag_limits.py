"""flows.on_prefect.tag_limits: which tag limits Prefect is asked for, inside and outside an
execution."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from flows.on_prefect.tag_limits import (
    TagLimits,
    install,
    only_existing,
    read_tag_limits,
    use_tag_limits,
)


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


class Limit:
    def __init__(self, name: str) -> None:
        self.name = name


class Server:
    """Answers ``read_global_concurrency_limits`` as Prefect's client does; counts the calls."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls = 0
        self.fail = False

    async def read_global_concurrency_limits(self, limit: int, offset: int) -> list[Limit]:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("server down")
        return [Limit(n) for n in self.names[offset:offset + limit]]


def test_executions_starting_together_share_one_reading() -> None:
    server = Server(["tag:peer:abc", "not-a-tag-limit"])
    limits = TagLimits(max_age=60)

    async def run() -> list[frozenset[str] | None]:
        return list(await asyncio.gather(*(limits.current(server) for _ in range(10))))

    assert asyncio.run(run()) == [frozenset({"tag:peer:abc"})] * 10
    assert server.calls == 1


def test_reading_is_renewed_and_failures_are_not_kept() -> None:
    server = Server(["tag:a"])
    limits = TagLimits(max_age=0)

    async def run() -> None:
        assert await limits.current(server) == frozenset({"tag:a"})
        server.names = ["tag:a", "tag:b"]
        assert await limits.current(server) == frozenset({"tag:a", "tag:b"})
        server.fail = True
        assert await limits.current(server) is None

    asyncio.run(run())
    assert server.calls == 3


def test_all_pages_are_read() -> None:
    server = Server([f"tag:t{i}" for i in range(450)])
    names = asyncio.run(read_tag_limits(server))
    assert names is not None and len(names) == 450 and server.calls == 3
