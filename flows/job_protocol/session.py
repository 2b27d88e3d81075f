"""One remote job on each side, as a state machine without I/O.

``JobCall`` is the requesting side: it reads the event frames and the answer of one ``job_run``
(the state goes PENDING -> RUNNING -> a terminal state; what comes after the end is ignored) and
counts unanswered liveness pings. The answer carries the states no frame told (``unseen``): the
terminal one always, RUNNING for a job that ended before its RUNNING frame was due.
``ServedJob`` is the executing side: the job waits in the gate (QUEUED), runs (RUNNING) and ends
(FINISHED), and says what to record and what to send at each step. The asyncio glue is
``requester.RemoteDispatcher`` and ``server.RemoteJobs``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from executors.base import ArtifactRef, JobOutcome, JobResult, one_line, utcnow
from flows.job_protocol.wire import (
    JobEvent,
    StateEvent,
    WireError,
    answer_progress,
    event_from_wire,
    result_from_wire,
    result_to_wire,
)
from orchestrator.execution_store import InterfaceRecord
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.states import TRANSITIONS, RunState

INTERRUPTED = "interrupted: this node is stopping"
CANCELLED_BY_REQUESTER = "cancelled by the requester"


class SessionUsageError(RuntimeError):
    """The caller drove a session out of order (a bug here, not the peer's fault)."""


def outcome_state(outcome: JobOutcome) -> RunState:
    if outcome is JobOutcome.COMPLETED:
        return RunState.COMPLETED
    if outcome is JobOutcome.CANCELLED:
        return RunState.CANCELLED
    return RunState.FAILED


# -- the requesting side --------------------------------------------------------------------------
class JobCall:
    """The requester's view of one job on another peer.

    ``misses``: liveness pings in a row that may go unanswered before the job is given up."""

    def __init__(self, request: JobRequest, *, misses: int) -> None:
        self.request = request
        self.misses_allowed = misses
        self.misses = 0
        self.state = RunState.PENDING
        self.result: JobResult | None = None
        self.started = utcnow()
        # The state changes the answer told and no event frame had: for ``on_state``.
        self.unseen: tuple[StateEvent, ...] = ()

    @property
    def peer_id(self) -> str:
        return self.request.peer_id

    @property
    def ended(self) -> bool:
        return self.result is not None or self.state.is_terminal

    def receive_event(self, raw: Any) -> JobEvent | None:
        """The event of one frame to pass on, or None: a frame to ignore (see
        ``wire.event_from_wire``), any after the end, a state that does not follow the last."""
        if self.ended:
            return None
        event = event_from_wire(raw)
        if isinstance(event, StateEvent):
            if event.status not in TRANSITIONS[self.state]:
                return None
            self.state = event.status
        return event

    def receive_answer(self, raw: Any) -> JobResult:
        """The job's result from the answer; a FAILED result naming the peer when it is not
        one."""
        self._answerable()
        try:
            result = result_from_wire(raw, self.request.job_id)
        except WireError as exc:
            return self.fail(f"peer {self.peer_id}: bad job result: {exc}")
        started, row = answer_progress(raw)
        unseen: list[StateEvent] = []
        state = self.state
        if started and state is RunState.PENDING:
            state = RunState.RUNNING
            unseen.append(StateEvent(state, row))
        final = outcome_state(result.outcome)
        if final in TRANSITIONS[state]:
            unseen.append(StateEvent(final, row))
        self.unseen = tuple(unseen)
        return self._end(result)

    def fail(self, error: str) -> JobResult:
        """The job ended without an answer (the peer failed the request, or was given up)."""
        self._answerable()
        return self._end(JobResult(self.request.job_id, JobOutcome.FAILED, None, self.started,
                                   utcnow(), error=error))

    def ping_answered(self) -> None:
        self.misses = 0

    def ping_missed(self) -> str | None:
        """One more ping went unanswered: the error to fail the job with once ``misses`` in a
        row did, else None."""
        self.misses += 1
        if self.misses < self.misses_allowed:
            return None
        return (f"peer {self.peer_id}: stopped answering ({self.misses} pings in a row went "
                "unanswered)")

    def _answerable(self) -> None:
        if self.result is not None:
            raise SessionUsageError("the job has its result already")

    def _end(self, result: JobResult) -> JobResult:
        self.result = result
        self.state = outcome_state(result.outcome)
        return result


# -- the executing side ---------------------------------------------------------------------------
class Phase(enum.Enum):
    QUEUED = "queued"      # in the gate: waiting for a place, or holding one, not started
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class Ending:
    """How a job served here ended: what to record, its last state (``event``, told by the
    answer rather than a frame of its own) and the answer."""

    result: JobResult  # under this node's job id
    state: RunState
    error: str | None
    records: tuple[InterfaceRecord, ...]
    event: StateEvent
    answer: dict[str, Any]


class ServedJob:
    """One job another peer asked this node to run, recorded here as row ``row_id``.

    ``request``: as the requester sent it; the job runs as ``self.request``, under this node's
    job id ``rn-remote-<row>``. ``holder``: this node's peer id (it holds the outputs)."""

    def __init__(self, request: JobRequest, row_id: int, *, holder: str) -> None:
        self.requester_job_id = request.job_id
        self.request = replace(request, job_id=f"rn-remote-{row_id}")
        self.row_id = row_id
        self.holder = holder
        self.phase = Phase.QUEUED
        self.cancel_requested = False

    def start(self) -> StateEvent:
        """The job has its place and starts: the event that says so (a frame once the job has
        run a while, else told by the answer)."""
        if self.phase is not Phase.QUEUED:
            raise SessionUsageError(f"the job is {self.phase.value}")
        self.phase = Phase.RUNNING
        return StateEvent(RunState.RUNNING, self.row_id)

    def request_cancel(self) -> None:
        self.cancel_requested = True

    def failed(self, error: str, started: dt.datetime,
               outcome: JobOutcome = JobOutcome.FAILED) -> JobResult:
        return JobResult(self.request.job_id, outcome, None, started, utcnow(), {},
                         one_line(error))

    def task_cancelled(self, *, node_stopping: bool) -> JobResult | None:
        """Its task was cancelled: the CANCELLED result when the requester asked for it, None
        when this node is stopping (the job is then ``interrupted``)."""
        if node_stopping or not self.cancel_requested:
            return None
        return self.failed(CANCELLED_BY_REQUESTER, utcnow(), JobOutcome.CANCELLED)

    def interrupted(self) -> tuple[RunState, str]:
        """The job ends with this node: the state and error to record."""
        self.phase = Phase.FINISHED
        return RunState.FAILED, INTERRUPTED

    def finish(self, result: JobResult) -> Ending:
        """The job has its result. A FAILED result with no exit code after a cancel request is
        CANCELLED (the job was stopped before it ran, or its process was killed)."""
        if self.phase is Phase.FINISHED:
            raise SessionUsageError("the job is finished")
        started = self.phase is Phase.RUNNING
        self.phase = Phase.FINISHED
        if self.cancel_requested and result.outcome is JobOutcome.FAILED \
                and result.exit_code is None:
            result = replace(result, outcome=JobOutcome.CANCELLED)
        state = outcome_state(result.outcome)
        error = None if state is RunState.COMPLETED else (
            result.error or f"exit code {result.exit_code}")
        # The requester knows the job by its own id.
        answer = result_to_wire(replace(result, job_id=self.requester_job_id), self.holder,
                                job_execution_id=self.row_id, started=started)
        return Ending(result, state, error, tuple(output_records(result.outputs)),
                      StateEvent(state, self.row_id), answer)


def input_records(inputs: Iterable[JobInput]) -> list[InterfaceRecord]:
    """The records of a job's inputs. The requester's DATA in clear (transient) is named by no
    record: the retention sweep removes it once no running job reads it."""
    records = []
    for inp in inputs:
        ref = inp.artifact
        named = ref is not None and not inp.transient
        records.append(InterfaceRecord(
            interface_type=inp.interface_type or "", direction="input",
            interface_id=inp.interface_id, path=inp.path, value=inp.text,
            artifact_hash=ref.sha256 if ref is not None and named else "",
            size=ref.size if ref is not None else 0))
    return records


def output_records(outputs: Mapping[str, ArtifactRef]) -> list[InterfaceRecord]:
    """The records of a job's outputs by key (``KIND`` or ``KIND:path``); the ``#<id>`` aliases
    name outputs recorded already."""
    records = []
    for key, ref in outputs.items():
        if key.startswith("#"):
            continue
        kind, _, path = key.partition(":")
        records.append(InterfaceRecord(interface_type=kind, direction="output", path=path,
                                       artifact_hash=ref.sha256, size=ref.size))
    return records
