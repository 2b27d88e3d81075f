"""The job protocol without sockets: the wire form and each side's state of one job."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from executors.base import ArtifactKind, ArtifactRef, JobOutcome, JobResult
from flows.job_protocol import (
    MAX_ENV,
    MAX_INPUTS,
    MAX_JOB_ID,
    MAX_LIST,
    MAX_LOG_LINE,
    MAX_NAME,
    MAX_TEXT_TOTAL,
    MAX_VALUE,
    JobCall,
    LogEvent,
    Phase,
    ServedJob,
    SessionUsageError,
    StateEvent,
    WireError,
    WireTimeout,
    cancel_from_wire,
    cancel_to_wire,
    cancelled_from_wire,
    cancelled_to_wire,
    event_from_wire,
    input_records,
    parse_timeout,
    ref_from_wire,
    ref_to_wire,
    request_from_wire,
    request_to_wire,
    result_from_wire,
    result_to_wire,
)
from orchestrator.execution_store import InterfaceRecord
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.peer_policy import BadTimeout
from orchestrator.states import RunState

HOLDER = "a" * 40
EXECUTOR = "b" * 40
SHA = "ab" * 32
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def wire(**fields: Any) -> dict[str, Any]:
    return {"job_id": "j", "service_id": 1, **fields}


# -- wire: round trips ----------------------------------------------------------------------------
def test_a_request_round_trips() -> None:
    ref = ArtifactRef(SHA, 5, ArtifactKind.TAR)
    req = JobRequest(job_id="rn-e1-j1-a1", service_id=3, peer_id=EXECUTOR, env={"K": "v"},
                     args=("x", "y"), stdin_text="in",
                     inputs=(JobInput(7, None, artifact=ref),
                             JobInput(None, "ENV", "NAME", text="t"),
                             JobInput(8, None, artifact=ref, transient=True)),
                     entrypoint=("/bin/sh",), cmd=("-c", "cat"), timeout=12.5)
    back = request_from_wire(request_to_wire(req, HOLDER), peer_id=EXECUTOR)
    assert back.inputs[0].artifact == ArtifactRef(SHA, 5, ArtifactKind.TAR, HOLDER)
    assert back.inputs[1] == JobInput(None, "ENV", "NAME", text="t")
    assert back.inputs[2].transient and not back.inputs[0].transient
    assert (back.job_id, back.service_id, back.peer_id, back.env, back.args, back.stdin_text,
            back.entrypoint, back.cmd, back.timeout) == (
        "rn-e1-j1-a1", 3, EXECUTOR, {"K": "v"}, ("x", "y"), "in", ("/bin/sh",),
        ("-c", "cat"), 12.5)


def test_a_reference_keeps_its_holder_or_names_this_node() -> None:
    held = ArtifactRef(SHA, 1, ArtifactKind.FILE, "c" * 40)
    assert ref_from_wire(ref_to_wire(held, HOLDER)) == held
    assert ref_from_wire(ref_to_wire(ArtifactRef(SHA, 1), HOLDER)).peer_id == HOLDER


@pytest.mark.parametrize("raw", [
    "x", {"sha256": "zz", "size": 1}, {"sha256": SHA.upper(), "size": 1},
    {"sha256": SHA, "size": -1}, {"sha256": SHA, "size": True},
    {"sha256": SHA, "size": 1, "kind": "weird"},
])
def test_bad_references_are_refused(raw: Any) -> None:
    with pytest.raises(WireError):
        ref_from_wire(raw)


def test_a_result_round_trips() -> None:
    ref = ArtifactRef(SHA, 5, ArtifactKind.FILE)
    result = JobResult("rn-remote-4", JobOutcome.FAILED, 3, NOW, NOW,
                       {"STDOUT": ref, "#4": ref}, error="exit code 3")
    raw = result_to_wire(result, EXECUTOR, job_execution_id=4)
    assert raw["job_execution_id"] == 4
    got = result_from_wire(raw, "mine")
    assert got.job_id == "mine" and got.outcome is JobOutcome.FAILED and got.exit_code == 3
    assert got.started_at == NOW and got.error == "exit code 3"
    assert got.outputs["#4"] == ArtifactRef(SHA, 5, ArtifactKind.FILE, EXECUTOR)


@pytest.mark.parametrize("raw", [
    [], {"outcome": "DONE"}, {"outcome": "COMPLETED", "outputs": ["x"]},
    {"outcome": "COMPLETED", "outputs": {"STDOUT": {"sha256": "x"}}},
])
def test_bad_results_are_refused(raw: Any) -> None:
    with pytest.raises(WireError):
        result_from_wire(raw, "j")


def test_a_result_with_odd_fields_keeps_what_it_can() -> None:
    got = result_from_wire({"outcome": "COMPLETED", "exit_code": "0", "started_at": "soon"},
                           "j")
    assert got.exit_code is None and got.outputs == {} and got.error is None


def test_cancel_round_trips() -> None:
    assert cancel_from_wire(cancel_to_wire("j")) == "j"
    assert cancelled_from_wire(cancelled_to_wire(True)) is True
    assert cancelled_from_wire(cancelled_to_wire(False)) is False
    assert cancelled_from_wire({"cancelled": "yes"}) is False
    assert cancel_from_wire("junk") == ""


def test_an_encrypted_data_input_never_goes_on_the_wire() -> None:
    req = JobRequest("j", 1, EXECUTOR, inputs=(JobInput(None, "STDIN", artifact=ArtifactRef(
        SHA, 1), data_service_id=4),))
    with pytest.raises(WireError, match="encrypted DATA"):
        request_to_wire(req, HOLDER)


# -- wire: each bound of a request ----------------------------------------------------------------
@pytest.mark.parametrize(("raw", "message"), [
    ("not an object", "must be an object"),
    ({"service_id": 1}, "job_id is required"),
    (wire(job_id="j" * (MAX_JOB_ID + 1)), f"at most {MAX_JOB_ID} characters"),
    (wire(job_id="a\nb"), "printable"),
    (wire(service_id="1"), "service_id must be an integer"),
    (wire(service_id=True), "service_id must be an integer"),
    (wire(inputs={"a": 1}), "inputs must be a list"),
    (wire(inputs=[{"interface_type": "STDIN", "text": "x"}] * (MAX_INPUTS + 1)),
     f"at most {MAX_INPUTS} inputs"),
    (wire(inputs=["x"]), "each input must be an object"),
    (wire(inputs=[{"interface_id": True}]), "interface_id must be an integer"),
    (wire(inputs=[{"interface_type": "X" * 17}]), "interface_type is longer than 16"),
    (wire(inputs=[{"path": "p" * (MAX_NAME + 1)}]),
     f"an input's path is longer than {MAX_NAME}"),
    (wire(inputs=[{"text": "t" * (MAX_VALUE + 1)}]),
     f"an input's text is longer than {MAX_VALUE}"),
    (wire(env={"A": 1}), "env must map strings to strings"),
    (wire(env={f"K{i}": "v" for i in range(MAX_ENV + 1)}), f"more than {MAX_ENV} names"),
    (wire(env={"K" * (MAX_NAME + 1): "v"}), f"an env name is longer than {MAX_NAME}"),
    (wire(env={"K": "v" * (MAX_VALUE + 1)}), f"env K is longer than {MAX_VALUE}"),
    (wire(stdin_text="s" * (MAX_TEXT_TOTAL + 1)), f"stdin_text is longer than {MAX_TEXT_TOTAL}"),
    (wire(args=["a"] * (MAX_LIST + 1)), f"args holds more than {MAX_LIST} items"),
    (wire(args="a"), "args must be a list of strings"),
    (wire(cmd=["a" * (MAX_VALUE + 1)]), f"an item of cmd is longer than {MAX_VALUE}"),
    (wire(entrypoint=[1]), "entrypoint must be a list of strings"),
    (wire(args=["a" * 60000] * 20), f"over {MAX_TEXT_TOTAL} characters in all"),
])
def test_each_bound_of_a_request_is_refused_with_its_message(raw: Any, message: str) -> None:
    with pytest.raises(WireError, match=message):
        request_from_wire(raw, peer_id=EXECUTOR)


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True, "5", 10**400])
def test_a_timeout_is_finite_and_positive(timeout: Any) -> None:
    with pytest.raises(WireTimeout) as caught:
        request_from_wire(wire(timeout=timeout), peer_id=EXECUTOR)
    assert isinstance(caught.value, BadTimeout) and isinstance(caught.value, WireError)
    assert caught.value.code == "bad_timeout"


def test_parse_timeout_takes_numbers() -> None:
    assert parse_timeout(3) == 3.0 and parse_timeout(0.5) == 0.5


# -- wire: event frames ---------------------------------------------------------------------------
def test_events_round_trip() -> None:
    for event in (StateEvent(RunState.RUNNING, 7), StateEvent(RunState.CANCELLED),
                  LogEvent("stderr", "a line")):
        assert event_from_wire(event.to_wire()) == event


@pytest.mark.parametrize("raw", [
    None, "log", ["event", "log"], 7,
    {}, {"event": "progress", "percent": 50}, {"event": ["state"]},
    {"event": "state"}, {"event": "state", "status": "DONE"},
    {"event": "state", "status": 5}, {"event": "state", "status": ["RUNNING"]},
    {"event": "log", "stream": "stdout"}, {"event": "log", "stream": "stdout", "line": 5},
    {"event": "log", "stream": "x" * 1000, "line": "l"},
    {"event": "log", "stream": ["stdout"], "line": "l"},
])
def test_hostile_or_unknown_frames_are_ignored(raw: Any) -> None:
    assert event_from_wire(raw) is None


def test_an_oversized_log_line_is_cut() -> None:
    event = event_from_wire({"event": "log", "stream": "stdout", "line": "x" * (MAX_LOG_LINE * 3)})
    assert event == LogEvent("stdout", "x" * MAX_LOG_LINE)


def test_a_log_line_without_stream_is_stdout_and_a_bad_row_id_is_dropped() -> None:
    assert event_from_wire({"event": "log", "line": "l"}) == LogEvent("stdout", "l")
    for row in ("7", True, -1, 1.5):
        assert event_from_wire({"event": "state", "status": "RUNNING",
                                "job_execution_id": row}) == StateEvent(RunState.RUNNING)


# -- session: the requesting side -----------------------------------------------------------------
def call(misses: int = 2) -> JobCall:
    return JobCall(JobRequest("rn-e1-j1-a1", 3, EXECUTOR), misses=misses)


def state(status: str, row: int | None = 9) -> dict[str, Any]:
    return {"event": "state", "status": status, "job_execution_id": row}


def log(line: str) -> dict[str, Any]:
    return {"event": "log", "stream": "stdout", "line": line}


def answer(outcome: str = "COMPLETED") -> dict[str, Any]:
    return result_to_wire(JobResult("theirs", JobOutcome(outcome), 0, NOW, NOW,
                                    {"STDOUT": ArtifactRef(SHA, 1)}), EXECUTOR,
                          job_execution_id=9)


def test_a_call_goes_pending_running_terminal() -> None:
    job = call()
    assert job.state is RunState.PENDING and not job.ended
    assert job.receive_event(state("RUNNING")) == StateEvent(RunState.RUNNING, 9)
    assert job.receive_event(log("one")) == LogEvent("stdout", "one")
    assert job.receive_event(state("RUNNING")) == StateEvent(RunState.RUNNING, 9)
    assert job.receive_event(state("COMPLETED")) == StateEvent(RunState.COMPLETED, 9)
    assert job.ended and job.state is RunState.COMPLETED
    result = job.receive_answer(answer())
    assert result.job_id == "rn-e1-j1-a1" and result.outcome is JobOutcome.COMPLETED
    assert job.result is result


def test_a_state_that_does_not_follow_is_ignored() -> None:
    job = call()
    assert job.receive_event(state("PENDING")) is None
    assert job.receive_event(state("COMPLETED")) is None  # never RUNNING
    assert job.state is RunState.PENDING
    assert job.receive_event(state("CANCELLED")) == StateEvent(RunState.CANCELLED, 9)


def test_events_after_the_end_are_ignored() -> None:
    job = call()
    job.receive_event(state("RUNNING"))
    job.receive_event(state("FAILED"))
    assert job.receive_event(log("late")) is None
    assert job.receive_event(state("RUNNING")) is None
    assert job.state is RunState.FAILED

    answered = call()
    answered.receive_answer(answer())
    assert answered.receive_event(state("RUNNING")) is None
    assert answered.receive_event(log("late")) is None


def test_junk_frames_change_nothing() -> None:
    job = call()
    for raw in ("junk", {"event": "state", "status": "DONE"}, {"event": "other"}):
        assert job.receive_event(raw) is None
    assert job.state is RunState.PENDING


def test_a_bad_answer_fails_the_job_naming_the_peer() -> None:
    job = call()
    result = job.receive_answer({"outcome": "DONE"})
    assert result.outcome is JobOutcome.FAILED and result.exit_code is None
    assert result.error == f"peer {EXECUTOR}: bad job result: unknown job outcome 'DONE'"
    assert job.state is RunState.FAILED


def test_a_call_has_one_end() -> None:
    job = call()
    failed = job.fail("connection lost")
    assert failed.outcome is JobOutcome.FAILED and failed.error == "connection lost"
    assert failed.job_id == "rn-e1-j1-a1"
    with pytest.raises(SessionUsageError):
        job.receive_answer(answer())
    with pytest.raises(SessionUsageError):
        job.fail("again")


def test_liveness_gives_up_after_misses_in_a_row() -> None:
    job = call(misses=3)
    assert job.ping_missed() is None
    assert job.ping_missed() is None
    job.ping_answered()  # the peer is back: start counting again
    assert job.misses == 0
    assert job.ping_missed() is None
    assert job.ping_missed() is None
    assert job.ping_missed() == (f"peer {EXECUTOR}: stopped answering (3 pings in a row went "
                                 "unanswered)")


# -- session: the executing side ------------------------------------------------------------------
def served(**kw: Any) -> ServedJob:
    req = JobRequest("theirs", 3, EXECUTOR, timeout=30.0, **kw)
    return ServedJob(req, 12, holder=EXECUTOR)


def result(outcome: JobOutcome, exit_code: int | None, *, error: str | None = None,
           outputs: dict[str, ArtifactRef] | None = None) -> JobResult:
    return JobResult("rn-remote-12", outcome, exit_code, NOW, NOW, outputs or {}, error)


def test_a_served_job_runs_under_our_id_and_answers_under_theirs() -> None:
    job = served()
    assert job.request.job_id == "rn-remote-12" and job.phase is Phase.QUEUED
    assert job.start() == StateEvent(RunState.RUNNING, 12)
    assert job.phase is Phase.RUNNING
    out = ArtifactRef(SHA, 3)
    ending = job.finish(result(JobOutcome.COMPLETED, 0,
                               outputs={"STDOUT": out, "MOUNT:/out": out, "#5": out}))
    assert job.phase is Phase.FINISHED
    assert (ending.state, ending.error, ending.event) == (
        RunState.COMPLETED, None, StateEvent(RunState.COMPLETED, 12))
    assert ending.records == (
        InterfaceRecord("STDOUT", "output", artifact_hash=SHA, size=3),
        InterfaceRecord("MOUNT", "output", path="/out", artifact_hash=SHA, size=3))
    assert ending.answer["job_id"] == "theirs" and ending.answer["job_execution_id"] == 12
    assert ending.answer["outputs"]["#5"]["peer_id"] == EXECUTOR
    with pytest.raises(SessionUsageError):
        job.finish(result(JobOutcome.COMPLETED, 0))
    with pytest.raises(SessionUsageError):
        job.start()


def test_a_failure_records_its_error_or_exit_code() -> None:
    ending = served().finish(result(JobOutcome.FAILED, 2))
    assert (ending.state, ending.error) == (RunState.FAILED, "exit code 2")
    ending = served().finish(result(JobOutcome.FAILED, None, error="no such file"))
    assert (ending.state, ending.error) == (RunState.FAILED, "no such file")


def test_a_failure_without_exit_code_after_a_cancel_request_is_cancelled() -> None:
    job = served()
    job.start()
    job.request_cancel()
    ending = job.finish(result(JobOutcome.FAILED, None, error="killed"))
    assert ending.result.outcome is JobOutcome.CANCELLED
    assert ending.state is RunState.CANCELLED and ending.event.status is RunState.CANCELLED
    assert ending.answer["outcome"] == "CANCELLED"

    exited = served()
    exited.request_cancel()  # it exited on its own meanwhile: its failure stands
    assert exited.finish(result(JobOutcome.FAILED, 1)).state is RunState.FAILED
    uncancelled = served()
    assert uncancelled.finish(result(JobOutcome.FAILED, None)).state is RunState.FAILED


def test_a_cancelled_task_is_cancelled_only_when_the_requester_asked() -> None:
    job = served()
    assert job.task_cancelled(node_stopping=False) is None  # nobody asked: interrupted
    job.request_cancel()
    assert job.task_cancelled(node_stopping=True) is None  # the node stops: interrupted
    stopped = job.task_cancelled(node_stopping=False)
    assert stopped is not None and stopped.outcome is JobOutcome.CANCELLED
    assert stopped.error == "cancelled by the requester" and stopped.job_id == "rn-remote-12"
    assert job.finish(stopped).state is RunState.CANCELLED  # from the queue, never run

    lost = served()
    assert lost.interrupted() == (RunState.FAILED, "interrupted: this node is stopping")
    assert lost.phase is Phase.FINISHED


def test_a_served_failure_is_one_line() -> None:
    failed = served().failed("cannot\nfetch   input", NOW)
    assert failed.error == "cannot fetch input" and failed.outcome is JobOutcome.FAILED
    assert failed.exit_code is None and failed.outputs == {}


def test_input_records_name_no_transient_artifact() -> None:
    ref = ArtifactRef(SHA, 4)
    records = input_records([JobInput(7, "STDIN", artifact=ref),
                             JobInput(8, "MOUNT", "/in", artifact=ref, transient=True),
                             JobInput(None, "ENV", "NAME", text="v")])
    assert records == [
        InterfaceRecord("STDIN", "input", 7, "", None, SHA, 4),
        InterfaceRecord("MOUNT", "input", 8, "/in", None, "", 4),
        InterfaceRecord("ENV", "input", None, "NAME", "v", "", 0)]
