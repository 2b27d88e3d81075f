"""The states a job_run answer carries: a short job costs one round trip, its RUNNING and
terminal states told by the answer rather than frames of their own, and what a hostile peer can
do with that is no more than it could with the frames.

The wire and session parts run without sockets; the last tests run a job between two in-process
peers over QUIC and look at the frames themselves."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from executors.base import ArtifactRef, JobOutcome, JobResult
from flows.job_protocol import (
    JOB_RUN,
    RUNNING_HOLD,
    JobCall,
    ServedJob,
    StateEvent,
    answer_progress,
    request_to_wire,
    result_to_wire,
)
from network.transport import PeerTransport
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.models import StandaloneDetails
from orchestrator.states import InterfaceType, RunState, ServiceType
from orchestrator.wiring import Interface
from tests.support.job_peer import JobPeer
from tests.support.transports import Net, transports

# Async fixtures run on the session loop (pyproject); the async tests must share it.
on_session_loop = pytest.mark.asyncio(loop_scope="session")
EXECUTOR = "b" * 40
SHA = "ab" * 32
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def call() -> JobCall:
    return JobCall(JobRequest("rn-e1-j1-a1", 3, EXECUTOR), misses=2)


def answer(outcome: str = "COMPLETED", **extra: Any) -> dict[str, Any]:
    raw = result_to_wire(JobResult("theirs", JobOutcome(outcome), 0, NOW, NOW,
                                   {"STDOUT": ArtifactRef(SHA, 1)}), EXECUTOR,
                         job_execution_id=9)
    raw.update(extra)
    return raw


# -- wire ---------------------------------------------------------------------------------------
def test_the_answer_says_whether_the_job_started() -> None:
    result = JobResult("j", JobOutcome.COMPLETED, 0, NOW, NOW, {})
    assert "started" not in result_to_wire(result, EXECUTOR)  # as before, unless told
    assert result_to_wire(result, EXECUTOR, started=True)["started"] is True
    assert answer_progress(result_to_wire(result, EXECUTOR, job_execution_id=4,
                                          started=True)) == (True, 4)
    assert answer_progress(result_to_wire(result, EXECUTOR, started=False)) == (False, None)


@pytest.mark.parametrize("started", [1, "true", "yes", [True], {"x": True}, None, 0.0])
def test_only_a_literal_true_says_started(started: Any) -> None:
    assert answer_progress({"started": started, "job_execution_id": 3}) == (False, 3)


@pytest.mark.parametrize("row", [-1, True, False, "7", 7.0, [7], {"id": 7}, None])
def test_a_row_that_is_not_one_is_none(row: Any) -> None:
    assert answer_progress({"started": True, "job_execution_id": row}) == (True, None)


@pytest.mark.parametrize("raw", ["junk", None, 5, ["started"], b"x"])
def test_an_answer_that_is_not_an_object_tells_nothing(raw: Any) -> None:
    assert answer_progress(raw) == (False, None)


# -- session: the requesting side -----------------------------------------------------------------
def test_a_short_job_s_states_come_from_its_answer() -> None:
    job = call()
    result = job.receive_answer(answer(started=True))
    assert result.outcome is JobOutcome.COMPLETED
    assert job.unseen == (StateEvent(RunState.RUNNING, 9), StateEvent(RunState.COMPLETED, 9))
    assert job.state is RunState.COMPLETED


def test_states_told_by_frames_are_not_told_again() -> None:
    job = call()
    job.receive_event({"event": "state", "status": "RUNNING", "job_execution_id": 9})
    job.receive_answer(answer(started=True))
    assert job.unseen == (StateEvent(RunState.COMPLETED, 9),)

    older = call()  # a peer that still sends the terminal frame
    older.receive_event({"event": "state", "status": "RUNNING", "job_execution_id": 9})
    older.receive_event({"event": "state", "status": "COMPLETED", "job_execution_id": 9})
    older.receive_answer(answer())
    assert older.unseen == ()


def test_a_job_that_never_started_goes_from_pending_to_its_end() -> None:
    job = call()
    job.receive_answer(answer("CANCELLED", started=False))
    assert job.unseen == (StateEvent(RunState.CANCELLED, 9),)


def test_a_hostile_answer_cannot_tell_a_state_out_of_order() -> None:
    # COMPLETED without RUNNING does not follow PENDING: told to no one, as the frame would be.
    job = call()
    result = job.receive_answer(answer(started="yes"))
    assert result.outcome is JobOutcome.COMPLETED and job.unseen == ()
    # A bad answer fails the job and tells no state.
    bad = call()
    assert bad.receive_answer({"outcome": "DONE", "started": True}).outcome is JobOutcome.FAILED
    assert bad.unseen == ()


# -- session: the executing side ------------------------------------------------------------------
def test_a_served_job_s_answer_says_whether_it_started() -> None:
    ran = ServedJob(JobRequest("theirs", 3, EXECUTOR), 12, holder=EXECUTOR)
    ran.start()
    ending = ran.finish(JobResult("rn-remote-12", JobOutcome.COMPLETED, 0, NOW, NOW, {}))
    assert ending.answer["started"] is True and ending.answer["job_execution_id"] == 12

    queued = ServedJob(JobRequest("theirs", 3, EXECUTOR), 13, holder=EXECUTOR)
    queued.request_cancel()
    ending = queued.finish(queued.failed("stopped", NOW))
    assert ending.answer["started"] is False and ending.state is RunState.CANCELLED


# -- over QUIC ------------------------------------------------------------------------------------
class Peer(JobPeer):
    def __init__(self, root: Path, transport: PeerTransport) -> None:
        self.states: list[StateEvent] = []
        super().__init__(transport, root, dispatcher_options={
            "on_state": lambda _r, e: self.states.append(e)})

    def sh(self, script: str) -> int:
        view = self.registry.create(
            name="sh", service_type=ServiceType.STANDALONE,
            interfaces=[Interface(InterfaceType.STDIN), Interface(InterfaceType.STDOUT)],
            details=StandaloneDetails(service_id=0, executable_path="/bin/sh",
                                      arguments=["-c", script]))
        return int(view.service.id or 0)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer]]:
    net: Net
    async with transports(tmp_path) as net:
        made = []
        for name in ("a", "b"):
            peer = Peer(tmp_path / f"node-{name}", await net.add(name=name))
            await peer.executor.start()
            made.append(peer)
        try:
            yield made[0], made[1]
        finally:
            for peer in made:
                await peer.executor.shutdown(timeout=10)
                peer.db.close()


async def frames(a: Peer, b: Peer, service_id: int, job_id: str,
                 inputs: tuple[JobInput, ...] = ()) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The event frames and the answer of one job_run, as they come off the stream."""
    seen: list[dict[str, Any]] = []
    wire = request_to_wire(JobRequest(job_id, service_id, b.transport.peer_id, inputs,
                                      timeout=30.0), a.transport.peer_id)
    raw = await a.transport.request(b.transport.peer_id, JOB_RUN, wire, timeout=60,
                                    on_event=seen.append)
    return seen, raw


@on_session_loop
@pytest.mark.timeout(120)
async def test_a_short_job_is_one_request_and_one_answer(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    sid = b.sh("cat >/dev/null")
    data = a.store.put_bytes(b"in\n")
    inputs = (JobInput(None, "STDIN", artifact=data),)
    await frames(a, b, sid, "warm", inputs)  # B fetches the input the first time
    seen, raw = await frames(a, b, sid, "short", inputs)
    assert seen == []  # no state frame: the answer tells them
    assert raw["outcome"] == "COMPLETED" and raw["started"] is True
    row = raw["job_execution_id"]
    job = b.records.job(row)
    assert job.status == "COMPLETED" and job.attempt == 1
    # The inputs are recorded with the start, the outputs with the end, as before.
    assert [(r.direction, r.interface_type) for r in b.records.job_interfaces(row)] == [
        ("input", "STDIN"), ("output", "STDOUT"), ("output", "STDERR"), ("output", "LOGS")]

    # The requester still tells on_state both states, with B's record.
    result = await a.remote.dispatch(JobRequest("rn-e1-j1-a1", sid, b.transport.peer_id,
                                                inputs, timeout=30.0))
    assert result.outcome is JobOutcome.COMPLETED, result.error
    assert [(e.status, e.job_execution_id is not None) for e in a.states] == [
        (RunState.RUNNING, True), (RunState.COMPLETED, True)]


@on_session_loop
@pytest.mark.timeout(120)
async def test_a_longer_job_has_its_running_frame(pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    sid = b.sh(f"sleep {RUNNING_HOLD * 6}")
    seen, raw = await frames(a, b, sid, "long")
    assert [(f["event"], f["status"]) for f in seen] == [("state", "RUNNING")]
    assert seen[0]["job_execution_id"] == raw["job_execution_id"]
    assert raw["outcome"] == "COMPLETED"


@on_session_loop
@pytest.mark.timeout(120)
async def test_the_running_frame_goes_before_the_first_log_line(
        pair: tuple[Peer, Peer]) -> None:
    a, b = pair
    sid = b.sh("echo hello")
    seen, raw = await frames(a, b, sid, "chatty")
    assert [f["event"] for f in seen] == ["state", "log"]
    assert seen[0]["status"] == "RUNNING" and seen[1]["line"] == "hello"
    assert raw["outcome"] == "COMPLETED"


@on_session_loop
@pytest.mark.timeout(120)
async def test_a_hostile_executing_peer_tells_no_more_than_frames_could(
        pair: tuple[Peer, Peer]) -> None:
    a, b = pair

    async def liar(_req: Any) -> dict[str, Any]:
        # Says it started (it did not run anything), a row that is not one, and an outcome.
        return {"job_id": "x", "outcome": "FAILED", "started": True,
                "job_execution_id": -5, "outputs": {}, "error": "e" * 10}

    b.transport.register(JOB_RUN, liar)
    result = await a.remote.dispatch(JobRequest("rn-e1-j1-a1", 1, b.transport.peer_id,
                                                timeout=5.0))
    assert result.outcome is JobOutcome.FAILED and result.job_id == "rn-e1-j1-a1"
    assert a.states == [StateEvent(RunState.RUNNING, None), StateEvent(RunState.FAILED, None)]
