"""The wire form of the job protocol: messages, their bounds and their checks (no I/O).

Everything read from another peer is decoded here, and decoding is where a hostile peer is met:
a request is refused (``WireError``) past any of the ``MAX_*`` bounds; a result that is not one
is refused; an event frame that is not one this side knows, or does not hold what it should, is
ignored (``event_from_wire`` answers None), and a log line is cut to ``MAX_LOG_LINE``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from executors.base import ArtifactKind, ArtifactRef, JobOutcome, JobResult, utcnow
from network.bulk import valid_digest
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.peer_policy import BadTimeout
from orchestrator.states import RunState

JOB_RUN = "job_run"
JOB_CANCEL = "job_cancel"
# A job's key without running it (a dry run: the same request as job_run).
JOB_KEY = "job_key"
# A cached result: the receipt and outputs of a completed job of a key, from a provider.
JOB_RESULT = "job_result"

# Bounds of one job request from another peer: it is stored (its inputs' text values) and
# run, so nothing in it is unbounded.
MAX_JOB_ID = 200
MAX_INPUTS = 64
MAX_ENV = 64
MAX_LIST = 256  # entrypoint, cmd, args: items each
MAX_NAME = 256  # an env name, an input path
MAX_VALUE = 64 * 1024  # one env value, argument or input text
MAX_TEXT_TOTAL = 1024 * 1024  # every string of the request together, stdin_text included
# One log line of an event frame (the executors cut their lines at this size as well).
MAX_LOG_LINE = 64 * 1024
LOG_STREAMS = ("stdout", "stderr")

STATE = "state"
LOG = "log"


class WireError(ValueError):
    """A job request or result on the wire is malformed."""


class WireTimeout(WireError, BadTimeout):
    """A job request's timeout is not a finite, positive number (refused ``bad_timeout``)."""

    def __init__(self, message: str) -> None:
        BadTimeout.__init__(self, message)


# -- artifact references --------------------------------------------------------------------------
def ref_to_wire(ref: ArtifactRef, holder: str) -> dict[str, Any]:
    """``holder``: the peer that holds a local reference (peer_id "")."""
    return {"sha256": ref.sha256, "size": ref.size, "kind": str(ref.kind),
            "peer_id": ref.peer_id or holder}


def ref_from_wire(raw: Any) -> ArtifactRef:
    if not isinstance(raw, dict):
        raise WireError("artifact reference must be an object")
    sha, size, kind = raw.get("sha256"), raw.get("size"), raw.get("kind", "file")
    if not isinstance(sha, str) or len(sha) != 64 or not all(c in "0123456789abcdef"
                                                             for c in sha):
        raise WireError("artifact reference needs a sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise WireError("artifact reference needs a size")
    try:
        kind_ = ArtifactKind(kind)
    except ValueError:
        raise WireError(f"unknown artifact kind {kind!r}") from None
    return ArtifactRef(sha, size, kind_, str(raw.get("peer_id") or ""))


def refs_to_json(outputs: Mapping[str, ArtifactRef]) -> dict[str, Any]:
    """A job's outputs as the job row keeps them (``output_refs``)."""
    return {key: ref_to_wire(ref, "") for key, ref in outputs.items()}


def refs_from_json(raw: object, *, holder: str | None = None) -> dict[str, ArtifactRef]:
    """Outputs read back from a job row, or from a provider's answer (``holder``: the one peer
    that holds them all, whatever the answer says). WireError when they are not outputs."""
    if not isinstance(raw, dict) or len(raw) > 256:
        raise WireError("outputs must be an object of at most 256 references")
    refs = {str(k)[:300]: ref_from_wire(v) for k, v in raw.items()}
    if holder is not None:
        refs = {k: replace(v, peer_id=holder) for k, v in refs.items()}
    return refs



# -- job_run: the request -------------------------------------------------------------------------
def request_to_wire(request: JobRequest, holder: str) -> dict[str, Any]:
    """``holder``: the peer id that local references (peer_id "") are held by (this node)."""
    inputs = []
    for inp in request.inputs:
        if inp.data_service_id is not None:
            raise WireError("an encrypted DATA input cannot leave its peer")
        item = {"interface_id": inp.interface_id, "interface_type": inp.interface_type,
                "path": inp.path, "text": inp.text,
                "artifact": ref_to_wire(inp.artifact, holder) if inp.artifact else None}
        if inp.transient:
            item["transient"] = True
        inputs.append(item)
    return {"job_id": request.job_id, "service_id": request.service_id, "inputs": inputs,
            "env": dict(request.env), "args": list(request.args),
            "stdin_text": request.stdin_text,
            "entrypoint": list(request.entrypoint) if request.entrypoint is not None else None,
            "cmd": list(request.cmd) if request.cmd is not None else None,
            "timeout": request.timeout, "previous_receipts": list(request.previous_receipts)}


def _previous_receipts(value: Any) -> tuple[str, ...]:
    """The digests of the upstream receipts a request names (one per input at most)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_INPUTS:
        raise WireError(f"previous_receipts must be a list of at most {MAX_INPUTS} digests")
    digests = tuple(valid_digest(v) for v in value)
    if not all(digests):
        raise WireError('each of previous_receipts must be "sha256:<64 hex digits>"')
    return tuple(d for d in digests if d)


def _text(value: Any, name: str, limit: int = MAX_VALUE) -> str:
    if not isinstance(value, str):
        raise WireError(f"{name} must be a string")
    if len(value) > limit:
        raise WireError(f"{name} is longer than {limit} characters")
    return value


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WireError(f"{name} must be a list of strings")
    if len(value) > MAX_LIST:
        raise WireError(f"{name} holds more than {MAX_LIST} items")
    return tuple(_text(v, f"an item of {name}") for v in value)


def parse_timeout(value: Any) -> float:
    """A job's timeout in seconds: a finite, positive number, else BadTimeout (the node's bound
    is checked by ``orchestrator.peer_policy``)."""
    seconds = value
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer past float's range
            seconds = math.inf
    if not isinstance(seconds, float) or not math.isfinite(seconds) or seconds <= 0:
        raise WireTimeout("timeout must be a finite, positive number of seconds")
    return seconds


def _input_from_wire(item: Any) -> JobInput:
    if not isinstance(item, dict):
        raise WireError("each input must be an object")
    iface_id, kind = item.get("interface_id"), item.get("interface_type")
    if iface_id is not None and (not isinstance(iface_id, int) or isinstance(iface_id, bool)):
        raise WireError("interface_id must be an integer")
    if kind is not None:
        kind = _text(kind, "interface_type", 16)
    text = item.get("text")
    artifact = ref_from_wire(item["artifact"]) if item.get("artifact") else None
    return JobInput(interface_id=iface_id, interface_type=kind,
                    path=_text(item.get("path") or "", "an input's path", MAX_NAME),
                    artifact=artifact,
                    text=_text(text, "an input's text") if text is not None else None,
                    transient=item.get("transient") is True)


def request_from_wire(raw: Any, *, peer_id: str) -> JobRequest:
    """The request as the executing peer (``peer_id``) reads it; raises WireError (WireTimeout,
    a ``bad_timeout`` refusal, for a timeout that is not a finite, positive number)."""
    if not isinstance(raw, dict):
        raise WireError("a job request must be an object")
    job_id, service_id = raw.get("job_id"), raw.get("service_id")
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_JOB_ID \
            or not job_id.isprintable():
        raise WireError(f"job_id is required: printable, at most {MAX_JOB_ID} characters")
    if not isinstance(service_id, int) or isinstance(service_id, bool):
        raise WireError("service_id must be an integer")
    items = raw.get("inputs") or []
    if not isinstance(items, list):
        raise WireError("inputs must be a list")
    if len(items) > MAX_INPUTS:
        raise WireError(f"a job takes at most {MAX_INPUTS} inputs")
    inputs = [_input_from_wire(item) for item in items]
    env = raw.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in env.items()):
        raise WireError("env must map strings to strings")
    if len(env) > MAX_ENV:
        raise WireError(f"env holds more than {MAX_ENV} names")
    for k, v in env.items():
        _text(k, "an env name", MAX_NAME)
        _text(v, f"env {k[:64]}")
    stdin = raw.get("stdin_text")
    if stdin is not None:
        stdin = _text(stdin, "stdin_text", MAX_TEXT_TOTAL)
    timeout = parse_timeout(raw.get("timeout", 300.0))
    entry, cmd = raw.get("entrypoint"), raw.get("cmd")
    request = JobRequest(
        job_id=job_id, service_id=service_id, peer_id=peer_id, inputs=tuple(inputs),
        env=dict(env), args=_strings(raw.get("args") or [], "args"),
        stdin_text=stdin,
        entrypoint=_strings(entry, "entrypoint") if entry is not None else None,
        cmd=_strings(cmd, "cmd") if cmd is not None else None, timeout=timeout,
        previous_receipts=_previous_receipts(raw.get("previous_receipts")))
    total = (len(stdin or "") + sum(len(k) + len(v) for k, v in env.items())
             + sum(len(a) for a in (*request.args, *(request.entrypoint or ()),
                                    *(request.cmd or ())))
             + sum(len(i.text or "") + len(i.path) for i in inputs))
    if total > MAX_TEXT_TOTAL:
        raise WireError(f"the request's text is over {MAX_TEXT_TOTAL} characters in all")
    return request


# -- job_run: the answer --------------------------------------------------------------------------
def result_to_wire(result: JobResult, holder: str, *,
                   job_execution_id: int | None = None,
                   started: bool | None = None) -> dict[str, Any]:
    """``started``: whether the job got its place and ran (went RUNNING) on the executing
    peer; the answer carries the states no event frame told (see ``answer_progress``)."""
    wire: dict[str, Any] = {
        "job_id": result.job_id, "outcome": str(result.outcome), "exit_code": result.exit_code,
        "started_at": result.started_at.isoformat(), "ended_at": result.ended_at.isoformat(),
        "error": result.error,
        "outputs": {k: ref_to_wire(v, holder) for k, v in result.outputs.items()},
        "job_execution_id": job_execution_id, "job_key": result.job_key}
    if result.receipt is not None:
        wire["receipt"] = result.receipt
    if started is not None:
        wire["started"] = started
    return wire


def _row(value: Any) -> int | None:
    """A job_execution id from the wire: a non-negative integer, else None."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None
    return value


def answer_progress(raw: Any) -> tuple[bool, int | None]:
    """What an answer says of the job's progress beside its result: whether it went RUNNING
    (``started``, only a literal true counts) and its record on the executing peer
    (``job_execution_id``, None unless a non-negative integer). A peer that says so
    falsely tells no more than a state event frame could."""
    if not isinstance(raw, dict):
        return False, None
    return raw.get("started") is True, _row(raw.get("job_execution_id"))


def _time(value: Any) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return utcnow()


def result_from_wire(raw: Any, job_id: str) -> JobResult:
    """The executing peer's answer, for the job the requester knows as ``job_id``."""
    if not isinstance(raw, dict):
        raise WireError("a job result must be an object")
    try:
        outcome = JobOutcome(str(raw.get("outcome")))
    except ValueError:
        raise WireError(f"unknown job outcome {raw.get('outcome')!r}") from None
    outputs = raw.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise WireError("outputs must be an object")
    exit_code = raw.get("exit_code")
    error = raw.get("error")
    receipt = raw.get("receipt")
    return JobResult(job_id, outcome,
                     exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool)
                     else None,
                     _time(raw.get("started_at")), _time(raw.get("ended_at")),
                     {str(k): ref_from_wire(v) for k, v in outputs.items()},
                     error=str(error) if error else None,
                     # The executing peer's word only: kept when it has the shape of a key.
                     job_key=valid_digest(raw.get("job_key")) or "",
                     # Checked by the requester (``orchestrator.receipts.verify``) before it
                     # takes the outputs.
                     receipt=receipt if isinstance(receipt, dict) else None)


# -- job_run: event frames while the job runs -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class StateEvent:
    """The job's state on the executing peer; ``job_execution_id``: its record there."""

    status: RunState
    job_execution_id: int | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"event": STATE, "status": str(self.status),
                "job_execution_id": self.job_execution_id}


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One line the job wrote on ``stream`` (``stdout`` or ``stderr``)."""

    stream: str
    line: str

    def to_wire(self) -> dict[str, Any]:
        return {"event": LOG, "stream": self.stream, "line": self.line}


JobEvent = StateEvent | LogEvent


def event_from_wire(raw: Any) -> JobEvent | None:
    """The event of one frame, or None for a frame to ignore: not an object, an unknown event,
    a state that is not a RunState, a log line that is not text or of an unknown stream. A log
    line longer than ``MAX_LOG_LINE`` is cut there."""
    if not isinstance(raw, dict):
        return None
    kind = raw.get("event")
    if kind == STATE:
        status = raw.get("status")
        if not isinstance(status, str):
            return None
        try:
            state = RunState(status)
        except ValueError:
            return None
        return StateEvent(state, _row(raw.get("job_execution_id")))
    if kind == LOG:
        stream, line = raw.get("stream") or "stdout", raw.get("line")
        if stream not in LOG_STREAMS or not isinstance(line, str):
            return None
        return LogEvent(stream, line[:MAX_LOG_LINE])
    return None


# -- job_cancel -----------------------------------------------------------------------------------
def cancel_to_wire(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id}


def cancel_from_wire(raw: Any) -> str:
    """The job id a ``job_cancel`` names (as the requester knows it)."""
    return str(raw.get("job_id")) if isinstance(raw, dict) else ""


def cancelled_to_wire(cancelled: bool) -> dict[str, Any]:
    return {"cancelled": cancelled}


def cancelled_from_wire(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("cancelled") is True


# -- job_key: a dry run ---------------------------------------------------------------------------
def key_to_wire(job_key: str) -> dict[str, Any]:
    return {"job_key": job_key}


def key_from_wire(raw: Any) -> str:
    """The key a ``job_key`` answer or a ``job_result`` question holds, in the shape of one;
    WireError when it is not."""
    key = valid_digest(raw.get("job_key")) if isinstance(raw, dict) else None
    if key is None:
        raise WireError('the answer holds no job key ("sha256:<64 hex digits>")')
    return key


# -- job_result: a provider's cached result (asked with ``key_to_wire``) -----------------------
def cached_to_wire(receipt: dict[str, Any] | None, outputs: dict[str, ArtifactRef],
                   exit_code: int | None, holder: str) -> dict[str, Any]:
    """A provider's answer: the receipt and outputs of its result (receipt None: none held)."""
    if receipt is None:
        return {"receipt": None}
    return {"receipt": receipt, "exit_code": exit_code,
            "outputs": {k: ref_to_wire(v, holder) for k, v in outputs.items()}}
