"""The requesting side over the ``PeerTransport``: ``RemoteDispatcher``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from executors.base import ArtifactRef, JobOutcome, JobResult, LogSink
from flows.dispatch import DispatchError, LocalDispatcher
from flows.job_protocol.session import JobCall
from flows.job_protocol.wire import (
    JOB_CANCEL,
    JOB_KEY,
    JOB_RESULT,
    JOB_RUN,
    LogEvent,
    StateEvent,
    WireError,
    cancel_to_wire,
    cancelled_from_wire,
    key_from_wire,
    key_to_wire,
    request_to_wire,
)
from network.peer_errors import BulkError, PeerError
from orchestrator.job_request import JobRequest
from orchestrator.receipts import ReceiptError, result_receipt
from orchestrator.wiring import output_named

log = logging.getLogger("remote_network.remote_jobs")

# Beyond the job's own timeout, time for the executing peer to fetch inputs and answer.
FETCH_GRACE = 120.0


class RemoteDispatcher:
    """Sends jobs of other peers' services to those peers over the ``PeerTransport``.

    A request for this node's own service goes to ``local`` after the inputs held by other peers
    have been fetched here, so one dispatcher serves every node of a workflow. ``on_state`` is
    told each state event of a remote job.
    """

    def __init__(self, transport: Any, local: LocalDispatcher, artifacts: Any, *,
                 liveness_interval: float = 2.0, liveness_timeout: float = 4.0,
                 liveness_misses: int = 2,
                 fetch_grace: float = FETCH_GRACE,
                 on_state: Callable[[JobRequest, StateEvent], None] | None = None) -> None:
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
        """This node's encrypted DATA inputs, decrypted for the remote job (see
        ``flows.job_protocol``), their digests added to ``clear`` for release once it has
        ended; every other input goes as it is."""
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

    async def job_key(self, request: JobRequest) -> str:
        """The job's key, from the peer that would run it (a dry run: ``job_key``). This
        node's DATA inputs go named by their clear digest, never decrypted for it."""
        if self._is_local(request.peer_id):
            return await self.local.job_key(request)
        inputs = []
        for inp in request.inputs:
            if inp.data_service_id is not None and inp.artifact is not None:
                view = self.local.registry.snapshot(inp.data_service_id)
                clear = view.data.file_hash if view.data is not None else ""
                inp = replace(inp, artifact=replace(inp.artifact, sha256=clear),
                              data_service_id=None, transient=True)
            inputs.append(inp)
        try:
            wire = request_to_wire(replace(request, inputs=tuple(inputs)), self.own_peer_id)
            return key_from_wire(await self.transport.request(request.peer_id, JOB_KEY, wire,
                                                              timeout=30.0))
        except (WireError, PeerError) as exc:
            raise DispatchError(f"peer {request.peer_id}: no job key: {exc}") from None

    async def cached_result(self, peer_id: str, job_key: str) -> dict[str, Any] | None:
        """A provider's receipt and outputs of ``job_key`` (checked by ``flows.reuse``)."""
        answer = await self.transport.request(peer_id, JOB_RESULT,
                                              key_to_wire(job_key), timeout=30.0)
        return answer if isinstance(answer, dict) else None

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
        job = JobCall(request, misses=self.liveness_misses)
        try:
            wire = request_to_wire(await self._outbound(request, clear), self.own_peer_id)
        except WireError as exc:
            raise DispatchError(str(exc)) from None

        def on_event(data: Any) -> None:
            event = job.receive_event(data)
            if isinstance(event, LogEvent) and on_log is not None:
                on_log(request.job_id, event.stream, event.line)
            elif isinstance(event, StateEvent) and self.on_state is not None:
                self.on_state(request, event)

        call = asyncio.ensure_future(self.transport.request(
            job.peer_id, JOB_RUN, wire, timeout=request.timeout + self.fetch_grace,
            on_event=on_event))
        # The watchdog starts after one liveness interval (a timer, not a task): a short job
        # ends without one.
        watchdog: list[asyncio.Task[str]] = []

        def watch() -> None:
            if not call.done():
                watchdog.append(asyncio.ensure_future(self._watch(job, call)))

        timer = asyncio.get_running_loop().call_later(self.liveness_interval, watch)
        try:
            try:
                raw = await call
            finally:
                timer.cancel()
                for task in watchdog:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        except asyncio.CancelledError:
            given_up = watchdog[0] if watchdog else None
            if call.cancelled() and given_up is not None and given_up.done() \
                    and not given_up.cancelled() and given_up.result():
                return job.fail(given_up.result())
            self._in_background(self.cancel(request))
            raise
        except PeerError as exc:
            return job.fail(str(exc))
        result = job.receive_answer(raw)
        if result.outcome is JobOutcome.COMPLETED:
            try:
                result_receipt(result, job.peer_id)
            except ReceiptError as exc:
                # Outputs no signature vouches for are not taken: the job fails, naming the peer.
                return replace(result, outcome=JobOutcome.FAILED, receipt=None,
                               error=f"peer {job.peer_id}: receipt refused: {exc}")
        if self.on_state is not None:
            for event in job.unseen:  # the states the answer told (no frame of their own)
                self.on_state(request, event)
        return await self._bring_back(request, result)

    async def _watch(self, job: JobCall, call: asyncio.Future[Any]) -> str:
        """Pings the job's peer while ``call`` runs, every ``liveness_interval`` from now;
        cancels it (and answers why) when the peer stops answering."""
        while not call.done():
            try:
                await self.transport.ping(job.peer_id, timeout=self.liveness_timeout)
            except PeerError:
                reason = job.ping_missed()
            else:
                job.ping_answered()
                reason = None
            if reason is not None and not call.done():
                log.warning("%s; failing its job", reason)
                self.transport.disconnect(job.peer_id, "stopped answering")
                call.cancel()
                return reason
            await asyncio.sleep(self.liveness_interval)
        return ""

    async def _bring_back(self, request: JobRequest, result: JobResult) -> JobResult:
        """Fetch here the outputs that are results of the workflow: those not wired onward,
        and those delivered to this node."""
        wired = set(request.wired_outputs)
        outputs = dict(result.outputs)
        real = {k: v for k, v in outputs.items() if not k.startswith("#")}

        def named(keys: Iterable[str]) -> set[str]:
            return {k for k in (output_named(outputs, key) for key in keys) if k is not None}

        kept = named(wired) - named(request.delivered_outputs)
        here: set[str] = set()  # digests fetched already (STDOUT, STDERR, LOGS often agree)
        try:
            for key, ref in real.items():
                if key not in kept:
                    if ref.sha256 not in here:
                        await self.fetch(ref)
                        here.add(ref.sha256)
                    outputs[key] = replace(ref, peer_id="")
        except PeerError as exc:
            failed = JobOutcome.FAILED if result.outcome is JobOutcome.COMPLETED \
                else result.outcome
            return replace(result, outcome=failed, error=f"cannot fetch the outputs: {exc}")
        fetched = {v.sha256: v for k, v in outputs.items() if k in real and k not in kept}
        for key, ref in outputs.items():
            if (key.startswith("#") and (key not in wired or key in request.delivered_outputs)
                    and ref.sha256 in fetched):
                outputs[key] = fetched[ref.sha256]
        return replace(result, outputs=outputs)

    async def cancel(self, request: JobRequest) -> bool:
        if self._is_local(request.peer_id):
            return await self.local.cancel(request)
        try:
            answer = await self.transport.request(request.peer_id, JOB_CANCEL,
                                                  cancel_to_wire(request.job_id), timeout=10.0)
        except PeerError as exc:
            log.info("cannot cancel job %s on %s: %s", request.job_id, request.peer_id, exc)
            return False
        return cancelled_from_wire(answer)

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
