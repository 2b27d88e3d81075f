"""A job's lines as task-run logs: ids, names, the cap and the closing count."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from flows.on_prefect.task_run_logs import LogShipper, TaskRunLog


def log_into(sent: list[dict[str, Any]], limit: int) -> TaskRunLog:
    return TaskRunLog(sent.append, flow_run_id="f-1", task_run_id="t-1", limit=limit)


def test_lines_carry_the_run_ids_and_their_stream() -> None:
    sent: list[dict[str, Any]] = []
    log = log_into(sent, 10)
    log.line("stdout", "hello")
    log.line("stderr", "oops")
    log.close()
    assert [(s["name"], s["message"], s["flow_run_id"], s["task_run_id"], s["level"])
            for s in sent] == [("stdout", "hello", "f-1", "t-1", 20),
                               ("stderr", "oops", "f-1", "t-1", 20)]
    assert all(dt.datetime.fromisoformat(s["timestamp"]).tzinfo is not None for s in sent)


def test_lines_past_the_limit_are_counted_once_at_the_end() -> None:
    sent: list[dict[str, Any]] = []
    log = log_into(sent, 3)
    for i in range(8):
        log.line("stdout", f"line {i}")
    log.close()
    log.close()  # nothing more to say
    assert [s["message"] for s in sent] == [
        "line 0", "line 1", "line 2",
        "5 more lines after the first 3: the job's LOGS output has them all"]
    assert sent[-1]["name"] == "job"


def test_one_line_over() -> None:
    sent: list[dict[str, Any]] = []
    log = log_into(sent, 1)
    log.line("stdout", "a")
    log.line("stdout", "b")
    log.close()
    assert sent[-1]["message"] == ("1 more line after the first 1: the job's LOGS output has "
                                   "them all")


async def test_shipper_posts_what_gathered_in_one_request() -> None:
    posts: list[list[dict[str, Any]]] = []

    async def post(batch: list[dict[str, Any]]) -> None:
        posts.append(batch)

    shipper = LogShipper(post, interval=0.01, batch=3)
    log = TaskRunLog(shipper.add, flow_run_id="f", task_run_id="t", limit=100)
    for i in range(5):
        log.line("stdout", str(i))
    assert posts == []  # nothing on the caller's path
    for _ in range(200):  # bounded: 2 s
        if sum(map(len, posts)) == 5:
            break
        await asyncio.sleep(0.01)
    assert [[e["message"] for e in batch] for batch in posts] == [["0", "1", "2"], ["3", "4"]]


async def test_a_failed_post_is_logged_and_the_rest_still_goes(
        caplog: pytest.LogCaptureFixture) -> None:
    posts: list[list[str]] = []

    async def post(batch: list[dict[str, Any]]) -> None:
        if not posts:
            posts.append([])
            raise RuntimeError("server away")
        posts.append([e["message"] for e in batch])

    shipper = LogShipper(post, interval=60)
    log = TaskRunLog(shipper.add, flow_run_id="f", task_run_id="t", limit=100)
    log.line("stdout", "lost")
    await shipper.aclose()  # sends now, whatever the interval
    log.line("stdout", "kept")
    await shipper.aclose()
    assert posts == [[], ["kept"]]
    assert "could not send 1 job log lines to Prefect: server away" in caplog.text
