"""Jobs on other peers: the ``RemoteDispatcher`` (sibling of ``LocalDispatcher``) and the wire form
of a job request and its result.

One job is one ``job_run`` request over QUIC to the peer that owns the service. Its inputs travel
as artifact references (sha256, size, kind, and the peer that holds the bytes); the executing peer
fetches what it lacks from that peer, by hash, and checks the hash. While the job runs it streams
``event`` frames (``{"event": "state", ...}``, ``{"event": "log", "stream", "line"}``); the answer
is the JobResult, whose outputs are references held by the executing peer. Outputs wired onward
(``JobRequest.wired_outputs``) stay there, for the downstream peer to fetch directly; every other
output is a result of the workflow and is fetched into this node's store.

DATA sources: the encrypted file of a DATA service never leaves its owner. When this node's DATA
service feeds a job on another peer, this node decrypts it into a plain artifact (only for a job of
a workflow that wires it there, to a peer that is not blacklisted, since a blacklisted peer cannot
connect) and offers that by hash. A DATA service of another peer used as a workflow node is run
there as a job: its owner decrypts it for a requester its access admits (DATA services are
``private`` by default) and answers with the plain artifact as ``DATA``/``STDOUT`` (see
``orchestrator.remote_jobs``).

What the executing peer runs is its owner's decision (``orchestrator.peer_policy``): this side
sends inputs by the remote service's interface ids, and a request is bounded in size and count
(``MAX_*`` below) and its timeout finite and positive.

While a job runs, the peer is pinged every ``liveness_interval`` seconds; ``liveness_misses``
pings in a row unanswered within ``liveness_timeout`` fail the job with an error naming the peer
(a peer killed mid-job is noticed in seconds, not at the job's timeout) and drop the connection,
so a retry dials afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from executors.base import ArtifactKind, ArtifactRef, JobOutcome, JobResult, LogSink, utcnow
from flows.dispatch import DispatchError, JobInput, JobRequest, LocalDispatcher
from network.peer_errors import BulkError, PeerError
from orchestrator.peer_policy import BadTimeout

log = logging.getLogger("remote_network.remote_jobs")

JOB_RUN = "job_run"
JOB_CANCEL = "job_cancel"
# Beyond the job's own timeout, time for the executing peer to fetch inputs and answer.
FETCH_GRACE = 120.0


class WireError(ValueError):
    """A job request or result on the wire is malformed."""


class WireTimeout(WireError, BadTimeout):
    """A job request's timeout is not a finite, positive number (refused ``bad_timeout``)."""

    def __init__(self, message: str) -> None:
        BadTimeout.__init__(self, message)


# -- wire form ------------------------------------------------------------------------------------
def ref_to_wire(ref: ArtifactRef, holder: str) -> dict[str, Any]:
    return {"sha256": ref.sha256, "size": ref.size, "kind": str(ref.kind),
            "peer_id": ref.peer_id or holder}


def ref_from_wire(raw: Any) -> ArtifactRef:
    if not isinstance(raw, dict):
        raise WireError("artifact reference must be an object")
    sha, size, kind = raw.get("sha256"), raw.get("size"), raw.get("kind", "file")
    if not isinstance(sha, str) or len(sha) != 64 or not all(c in "0123456789abcdef"
                                                             for c in sha):
        raise WireError("artifact reference needs a sha256")
    if not isinstance(size, int) or size < 0:
        raise WireError("artifact reference needs a size")
    try:
        kind_ = ArtifactKind(kind)
    except ValueError:
        raise WireError(f"unknown artifact kind {kind!r}") from None
    return ArtifactRef(sha, size, kind_, str(raw.get("peer_id") or ""))


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
            "timeout": request.timeout}


# Bounds of one job request from another peer: it is stored (its inputs' text values) and
# run, so nothing in it is unbounded.
MAX_JOB_ID = 200
MAX_INPUTS = 64
MAX_ENV = 64
MAX_LIST = 256  # entrypoint, cmd, args: items each
MAX_NAME = 256  # an env name, an input path
MAX_VALUE = 64 * 1024  # one env value, argument or input text
MAX_TEXT_TOTAL = 1024 * 1024  # every string of the request together, stdin_text included


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


def request_from_wire(raw: dict[str, Any], *, peer_id: str) -> JobRequest:
    """The request as the executing peer (``peer_id``) reads it; raises WireError (WireTimeout,
    a ``bad_timeout`` refusal, for a timeout that is not a finite, positive number)."""
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
        cmd=_strings(cmd, "cmd") if cmd is not None else None, timeout=timeout)
    total = (len(stdin or "") + sum(len(k) + len(v) for k, v in env.items())
             + sum(len(a) for a in (*request.args, *(request.entrypoint or ()),
                                    *(request.cmd or ())))
             + sum(len(i.text or "") + len(i.path) for i in inputs))
    if total > MAX_TEXT_TOTAL:
        raise WireError(f"the request's text is over {MAX_TEXT_TOTAL} characters in all")
    return request


def result_to_wire(result: JobResult, holder: str, *,
                   job_execution_id: int | None = None) -> dict[str, Any]:
    return {"job_id": result.job_id, "outcome": str(result.outcome),
            "exit_code": result.exit_code, "started_at": result.started_at.isoformat(),
            "ended_at": result.ended_at.isoformat(), "error": result.error,
            "outputs": {k: ref_to_wire(v, holder) for k, v in result.outputs.items()},
            "job_execution_id": job_execution_id}


def _time(value: Any) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return utcnow()


def result_from_wire(raw: dict[str, Any], job_id: str) -> JobResult:
    try:
        outcome = JobOutcome(str(raw.get("outcome")))
    except ValueError:
        raise WireError(f"unknown job outcome {raw.get('outcome')!r}") from None
    outputs = raw.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise WireError("outputs must be an object")
    exit_code = raw.get("exit_code")
    error = raw.get("error")
    return JobResult(job_id, outcome, exit_code if isinstance(exit_code, int) else None,
                     _time(raw.get("started_at")), _time(raw.get("ended_at")),
                     {str(k): ref_from_wire(v) for k, v in outputs.items()},
                     error=str(error) if error else None)


# -- the requesting side ------------------------------------------------------------------------
@dataclass
class _Running:
    request: JobRequest
    task: asyncio.Task[dict[str, Any]] | None = None


class RemoteDispatcher:
    """Sends jobs of other peers' services to those peers over the ``PeerTransport``.

    A request for this node's own service goes to ``local`` after the inputs held by other peers
    have been fetched here, so one dispatcher serves every node of a workflow.
    """

    def __init__(self, transport: Any, local: LocalDispatcher, artifacts: Any, *,
                 liveness_interval: float = 2.0, liveness_timeout: float = 4.0,
                 liveness_misses: int = 2,
                 fetch_grace: float = FETCH_GRACE,
                 on_state: Callable[[JobRequest, dict[str, Any]], None] | None = None) -> None:
        self.transport = transport
        self.local = local
        self.artifacts = artifacts
        self.liveness_interval = liveness_interval
        self.liveness_timeout = liveness_timeout
        self.liveness_misses = liveness_misses
        self.fetch_grace = fetch_grace
        self.on_state = on_state
        self._fetching: dict[str, asyncio.Future[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def own_peer_id(self) -> str:
        return str(self.transport.peer_id)

    def _is_local(self, peer_id: str) -> bool:
        return peer_id in ("", self.own_peer_id)

    # -- artifacts ---------------------------------------------------------------------------
    async def fetch(self, ref: ArtifactRef) -> ArtifactRef:
        """The artifact in this node's store (fetched from its holder, hash-checked, when it is
        not here); returns the local reference."""
        local = replace(ref, peer_id="")
        if self._is_local(ref.peer_id) or self.artifacts.keep(ref.sha256):
            return local  # here already: now for good, even if it was in use for a while
        pending = self._fetching.get(ref.sha256)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(ref))
            self._fetching[ref.sha256] = pending
            pending.add_done_callback(lambda _f: self._fetching.pop(ref.sha256, None))
        await asyncio.shield(pending)
        return local

    async def _fetch(self, ref: ArtifactRef) -> None:
        dest = self.artifacts.path(ref.sha256)
        try:
            await self.transport.fetch_bulk(ref.peer_id, ref.sha256, dest)
        except BulkError as exc:
            # The TLS/TCP channel pins the certificate this end saw on the QUIC connection,
            # which on a connection the holder dialled is our own: fall back to a QUIC stream
            # (hash-checked as well).
            log.info("bulk fetch of %s failed (%s); retrying over QUIC", ref.sha256[:12], exc)
            await self.transport.fetch_bulk(ref.peer_id, ref.sha256, dest, prefer_tcp=False)

    async def _localize(self, request: JobRequest) -> JobRequest:
        inputs = []
        for inp in request.inputs:
            ref = inp.artifact
            if ref is not None and not self._is_local(ref.peer_id):
                try:
                    inp = replace(inp, artifact=await self.fetch(ref))
                except PeerError as exc:
                    raise DispatchError(f"cannot fetch input {ref.sha256[:12]}: {exc}") from None
            inputs.append(inp)
        return replace(request, inputs=tuple(inputs))

    async def _outbound(self, request: JobRequest, clear: list[str]) -> JobRequest:
        """This node's encrypted DATA inputs, decrypted for the remote job (see the module
        docstring), their digests added to ``clear`` for release once it has ended; every
        other input goes as it is."""
        inputs = []
        for inp in request.inputs:
            if inp.data_service_id is not None and inp.artifact is not None:
                plain = await self.local.decrypt_data(inp.data_service_id, inp.artifact,
                                                      ephemeral=True)
                clear.append(plain.sha256)
                inp = replace(inp, artifact=plain, data_service_id=None, transient=True)
            inputs.append(inp)
        return replace(request, inputs=tuple(inputs))

    # -- JobDispatcher --------------------------------------------------------------------------
    async def data_source(self, service_id: int) -> ArtifactRef:
        return await self.local.data_source(service_id)

    async def dispatch(self, request: JobRequest, *,
                       on_log: LogSink | None = None) -> JobResult:
        if self._is_local(request.peer_id):
            return await self.local.dispatch(await self._localize(request), on_log=on_log)
        clear: list[str] = []  # this node's DATA, decrypted for the job: kept until it ends
        try:
            return await self._dispatch_remote(request, clear, on_log)
        finally:
            for digest in clear:
                self.artifacts.release(digest)

    async def _dispatch_remote(self, request: JobRequest, clear: list[str],
                               on_log: LogSink | None) -> JobResult:
        peer = request.peer_id
        started = utcnow()
        try:
            wire = request_to_wire(await self._outbound(request, clear), self.own_peer_id)
        except WireError as exc:
            raise DispatchError(str(exc)) from None

        async def on_event(data: dict[str, Any]) -> None:
            if data.get("event") == "log" and on_log is not None:
                on_log(request.job_id, str(data.get("stream") or "stdout"),
                       str(data.get("line") or ""))
            elif data.get("event") == "state" and self.on_state is not None:
                self.on_state(request, data)

        call = asyncio.ensure_future(self.transport.request(
            peer, JOB_RUN, wire, timeout=request.timeout + self.fetch_grace, on_event=on_event))
        watchdog = asyncio.ensure_future(self._watch(peer, call))
        try:
            try:
                raw = await call
            finally:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
        except asyncio.CancelledError:
            if call.cancelled() and watchdog.done() and not watchdog.cancelled() \
                    and watchdog.result():
                return _failed(request, started, watchdog.result())
            self._in_background(self.cancel(request))
            raise
        except PeerError as exc:
            return _failed(request, started, str(exc))
        try:
            result = result_from_wire(raw, request.job_id)
        except WireError as exc:
            return _failed(request, started, f"peer {peer}: bad job result: {exc}")
        return await self._bring_back(request, result)

    async def _watch(self, peer: str, call: asyncio.Future[Any]) -> str:
        """Pings ``peer`` while ``call`` runs; cancels it (and answers why) when the peer stops
        answering."""
        misses = 0
        while not call.done():
            await asyncio.sleep(self.liveness_interval)
            try:
                await self.transport.ping(peer, timeout=self.liveness_timeout)
                misses = 0
            except PeerError:
                misses += 1
            if misses >= self.liveness_misses and not call.done():
                reason = (f"peer {peer}: stopped answering ({misses} pings in a row went "
                          f"unanswered)")
                log.warning("%s; failing its job", reason)
                self.transport.disconnect(peer, "stopped answering")
                call.cancel()
                return reason
        return ""

    async def _bring_back(self, request: JobRequest, result: JobResult) -> JobResult:
        """Fetch here the outputs that are results of the workflow (not wired onward)."""
        wired = set(request.wired_outputs)
        outputs = dict(result.outputs)
        real = {k: v for k, v in outputs.items() if not k.startswith("#")}
        kept = {k for k in real if k in wired}
        for alias in wired:
            if alias.startswith("#") and alias in outputs:
                # A wired alias keeps the output it names there, when that is unambiguous.
                same = [k for k, v in real.items() if v.sha256 == outputs[alias].sha256]
                if len(same) == 1:
                    kept.add(same[0])
        try:
            for key, ref in real.items():
                if key not in kept:
                    outputs[key] = await self.fetch(ref)
        except PeerError as exc:
            failed = JobOutcome.FAILED if result.outcome is JobOutcome.COMPLETED \
                else result.outcome
            return replace(result, outcome=failed, error=f"cannot fetch the outputs: {exc}")
        fetched = {v.sha256: v for k, v in outputs.items() if k in real and k not in kept}
        for key, ref in outputs.items():
            if key.startswith("#") and key not in wired and ref.sha256 in fetched:
                outputs[key] = fetched[ref.sha256]
        return replace(result, outputs=outputs)

    async def cancel(self, request: JobRequest) -> bool:
        if self._is_local(request.peer_id):
            return await self.local.cancel(request)
        try:
            answer = await self.transport.request(request.peer_id, JOB_CANCEL,
                                                  {"job_id": request.job_id}, timeout=10.0)
        except PeerError as exc:
            log.info("cannot cancel job %s on %s: %s", request.job_id, request.peer_id, exc)
            return False
        return bool(answer.get("cancelled"))

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _failed(request: JobRequest, started: dt.datetime, error: str) -> JobResult:
    return JobResult(request.job_id, JobOutcome.FAILED, None, started, utcnow(), error=error)
