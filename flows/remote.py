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
there as a job: its owner decrypts it for a requester it does not blacklist and answers with the
plain artifact as ``DATA``/``STDOUT`` (see ``orchestrator.remote_jobs``).

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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from executors.base import ArtifactKind, ArtifactRef, JobOutcome, JobResult, LogSink, utcnow
from flows.dispatch import DispatchError, JobInput, JobRequest, LocalDispatcher
from network.peer_errors import BulkError, PeerError

log = logging.getLogger("remote_network.remote_jobs")

JOB_RUN = "job_run"
JOB_CANCEL = "job_cancel"
# Beyond the job's own timeout, time for the executing peer to fetch inputs and answer.
FETCH_GRACE = 120.0


class WireError(ValueError):
    """A job request or result on the wire is malformed."""


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


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WireError(f"{name} must be a list of strings")
    return tuple(value)


def request_from_wire(raw: dict[str, Any], *, peer_id: str) -> JobRequest:
    """The request as the executing peer (``peer_id``) reads it; raises WireError."""
    job_id, service_id = raw.get("job_id"), raw.get("service_id")
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        raise WireError("job_id is required")
    if not isinstance(service_id, int) or isinstance(service_id, bool):
        raise WireError("service_id must be an integer")
    inputs = []
    for item in raw.get("inputs") or []:
        if not isinstance(item, dict):
            raise WireError("each input must be an object")
        iface_id, kind = item.get("interface_id"), item.get("interface_type")
        if iface_id is not None and not isinstance(iface_id, int):
            raise WireError("interface_id must be an integer")
        if kind is not None and not isinstance(kind, str):
            raise WireError("interface_type must be a string")
        text = item.get("text")
        artifact = ref_from_wire(item["artifact"]) if item.get("artifact") else None
        inputs.append(JobInput(interface_id=iface_id, interface_type=kind,
                               path=str(item.get("path") or ""), artifact=artifact,
                               text=text if isinstance(text, str) else None,
                               transient=item.get("transient") is True))
    env = raw.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in env.items()):
        raise WireError("env must map strings to strings")
    stdin = raw.get("stdin_text")
    timeout = raw.get("timeout", 300.0)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise WireError("timeout must be a positive number")
    entry, cmd = raw.get("entrypoint"), raw.get("cmd")
    return JobRequest(
        job_id=job_id, service_id=service_id, peer_id=peer_id, inputs=tuple(inputs),
        env=dict(env), args=_strings(raw.get("args") or [], "args"),
        stdin_text=stdin if isinstance(stdin, str) else None,
        entrypoint=_strings(entry, "entrypoint") if entry is not None else None,
        cmd=_strings(cmd, "cmd") if cmd is not None else None, timeout=float(timeout))


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
