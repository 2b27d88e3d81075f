"""The executing side over the ``PeerTransport``: ``RemoteJobs``, the ``job_run`` and
``job_cancel`` handlers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from executors.base import ArtifactRef, JobOutcome, JobResult, utcnow
from flows.dispatch import DispatchError, LocalDispatcher, interface_info
from flows.job_protocol.session import Ending, ServedJob, input_records
from flows.job_protocol.wire import (
    JOB_CANCEL,
    JOB_KEY,
    JOB_RESULT,
    JOB_RUN,
    JobEvent,
    LogEvent,
    StateEvent,
    WireError,
    cached_to_wire,
    cancel_from_wire,
    cancelled_to_wire,
    key_from_wire,
    key_to_wire,
    refs_from_json,
    refs_to_json,
    request_from_wire,
)
from network.peer_errors import PeerClosed, PeerError, RequestRejected
from orchestrator.errors import NotFound
from orchestrator.execution_store import ExecutionStore
from orchestrator.job_request import JobRequest
from orchestrator.peer_policy import Admitted, JobGate, PeerPolicy, Refused, Terms
from orchestrator.receipts import digest as receipt_digest
from orchestrator.registry import ServiceRegistry, ServiceView
from orchestrator.states import RunState, ServiceStatus, ServiceType
from orchestrator.wiring import DATA_OUTPUT

log = logging.getLogger("remote_network.remote_jobs")

Fetch = Callable[[ArtifactRef], Awaitable[ArtifactRef]]

# A job that has run this long (seconds) has its RUNNING frame sent; one that ends sooner has it
# told by the answer (``started``), with no frame of its own, as is its terminal state.
RUNNING_HOLD = 0.05


@dataclass
class _Job:
    served: ServedJob
    terms: Terms
    task: asyncio.Task[JobResult] | None = None
    # Set when the job waits in the gate's queue; done when it may run.
    admitted: asyncio.Future[None] | None = None

    @property
    def request(self) -> JobRequest:
        return self.served.request


class _Events:
    """Event frames to the requester, in order, from sync callbacks (log lines) and async code.

    A state may be held (``hold``): sent once it has lasted ``delay`` seconds, or before any
    later event, and never when the job ends first (its answer tells it then)."""

    def __init__(self, incoming: Any, on_gone: Callable[[], None]) -> None:
        self._incoming = incoming
        self._on_gone = on_gone
        self._queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        self._pump: asyncio.Future[None] | None = None  # started with the first frame
        self._held: StateEvent | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def put(self, event: JobEvent) -> None:
        if self._closed:
            return  # the answer is on its way: nothing may follow it
        self._release()
        self._send(event)

    def hold(self, event: StateEvent, delay: float) -> None:
        if self._closed:
            return
        self._release()
        self._held = event
        self._timer = asyncio.get_running_loop().call_later(delay, self._release)

    def _release(self) -> None:
        """Send the held state now (nothing when none is held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, None
        if held is not None:
            self._send(held)

    def _send(self, event: JobEvent) -> None:
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._run())
        self._queue.put_nowait(event)

    async def _run(self) -> None:
        while (event := await self._queue.get()) is not None:
            try:
                await self._incoming.emit(event.to_wire())
            except PeerClosed:
                self._on_gone()
                return

    async def close(self) -> None:
        """Drop a state still held (the answer tells it), send what is queued (bounded), then
        stop."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = None
        if self._pump is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(10):
                await asyncio.shield(self._pump)
        self._pump.cancel()


class RemoteJobs:
    """Runs here the jobs other peers ask for (see ``flows.job_protocol``); their records go
    through ``store``."""

    def __init__(self, transport: Any, *, registry: ServiceRegistry, local: LocalDispatcher,
                 fetch: Fetch, store: ExecutionStore, is_blacklisted: Callable[[str], bool],
                 policy: PeerPolicy | None = None, gate: JobGate | None = None) -> None:
        self.transport = transport
        self.registry = registry
        self.local = local
        self.fetch = fetch
        self.store = store
        self.is_blacklisted = is_blacklisted
        self.policy = policy or local.policy
        self.gate = gate or default_gate()
        self._running: dict[tuple[str, str], _Job] = {}
        self._admissions: dict[object, asyncio.Future[None]] = {}

    @property
    def own_peer_id(self) -> str:
        return str(self.transport.peer_id)

    def register(self) -> None:
        self.transport.register(JOB_RUN, self._on_run)
        self.transport.register(JOB_CANCEL, self._on_cancel)
        self.transport.register(JOB_KEY, self._on_key)
        self.transport.register(JOB_RESULT, self._on_result)
        self.transport.on_disconnected.append(self._requester_gone)

    @property
    def running(self) -> int:
        return len(self._running)

    def inputs_in_use(self) -> set[str]:
        """Digests of the artifacts the other peers' jobs running here read."""
        return {inp.artifact.sha256 for job in list(self._running.values())
                for inp in job.request.inputs if inp.artifact is not None}

    # -- job_run -------------------------------------------------------------------------------
    def _service(self, service_id: int) -> ServiceView:
        # The registry's cached view (dropped at any change to a service): read, never changed.
        try:
            view = self.registry.snapshot(service_id)
        except NotFound:
            raise RequestRejected(f"service {service_id} does not exist on this node") from None
        svc = view.service
        if svc.status != ServiceStatus.ACTIVE:
            raise RequestRejected(f"service '{svc.name}' ({service_id}) is not ACTIVE "
                                  f"({svc.status})")
        if svc.service_type not in (ServiceType.DOCKER, ServiceType.STANDALONE,
                                    ServiceType.DATA):
            raise RequestRejected(f"service '{svc.name}' ({svc.service_type}) cannot run as a "
                                  "job")
        return view

    def _not_blacklisted(self, requester: str) -> None:
        if self.is_blacklisted(requester):
            raise RequestRejected(f"peer {requester} is blacklisted on this node; its job "
                                  "requests are refused")

    def _admit(self, incoming: Any) -> tuple[str, ServiceView, Admitted]:
        """The request of a ``job_run`` or ``job_key``, as the policy admits it for its peer;
        RequestRejected names the refusal."""
        requester = str(incoming.peer_id)
        self._not_blacklisted(requester)
        try:
            request = request_from_wire(incoming.data, peer_id=self.own_peer_id)
            view = self._service(request.service_id)
            return requester, view, self.policy.admit(view, requester, request)
        except Refused as exc:
            raise RequestRejected(str(exc)) from None
        except WireError as exc:
            raise RequestRejected(f"bad_request: bad job request: {exc}") from None

    async def _on_key(self, incoming: Any) -> dict[str, Any]:
        """The key the job would have here, for a peer that may run it; nothing runs."""
        _, _, admitted = self._admit(incoming)
        try:
            return key_to_wire(await self.local.job_key(admitted.request))
        except DispatchError as exc:
            raise RequestRejected(str(exc)) from None

    async def _on_result(self, incoming: Any) -> dict[str, Any]:
        """A result of this node's for the key asked (its receipt and outputs), when the
        asking peer may use the service that made it and every output is still here."""
        requester = str(incoming.peer_id)
        self._not_blacklisted(requester)
        try:
            job_key = key_from_wire(incoming.data)
        except WireError as exc:
            raise RequestRejected(f"bad_request: {exc}") from None
        artifacts = self.local.artifacts
        for row in self.store.completed_with_key(job_key):
            if row.peer_id != self.own_peer_id or row.output_refs is None:
                continue
            try:
                view = self.registry.snapshot(int(row.service_id or 0))
                outputs = refs_from_json(row.output_refs)
            except (NotFound, WireError):
                continue
            if not self.policy.may_use(view.service, requester) \
                    and row.requester_peer_id != requester:
                continue
            if all(artifacts.has(ref.sha256) for ref in outputs.values()):
                return cached_to_wire(row.receipt, outputs, row.exit_code, self.own_peer_id)
        return cached_to_wire(None, {}, None, self.own_peer_id)

    async def _on_run(self, incoming: Any) -> dict[str, Any]:
        requester, view, admitted = self._admit(incoming)
        request = admitted.request
        key = (requester, request.job_id)
        if key in self._running:
            raise RequestRejected(f"job {request.job_id} is already running on this node")
        ticket = object()
        try:
            runs_now = self.gate.enter(ticket, requester)
        except Refused as exc:
            raise RequestRejected(str(exc)) from None
        try:
            return await self._run(incoming, requester, view, admitted.request, admitted.terms,
                                   ticket, runs_now)
        finally:
            for started in self.gate.leave(ticket):
                waiting = self._admissions.pop(started, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(None)
            self._admissions.pop(ticket, None)

    async def _run(self, incoming: Any, requester: str, view: ServiceView,
                   request: JobRequest, terms: Terms, ticket: object,
                   runs_now: bool) -> dict[str, Any]:
        key = (requester, request.job_id)
        row_id = self.store.new_remote_job(request.service_id, requester)
        job = _Job(ServedJob(request, row_id, holder=self.own_peer_id), terms)
        if not runs_now:
            job.admitted = asyncio.get_running_loop().create_future()
            self._admissions[ticket] = job.admitted
        self._running[key] = job
        events = _Events(incoming, lambda: self._stop_soon(job, "the requester went away"))
        try:
            job.task = asyncio.ensure_future(self._start(view, job, events))
            try:
                result = await job.task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                stopped = job.served.task_cancelled(
                    node_stopping=current is not None and current.cancelling() > 0)
                if stopped is None:
                    state, error = job.served.interrupted()
                    self._close(row_id, state, error)
                    raise
                result = stopped
            ending = job.served.finish(result)
            self._record_end(row_id, ending)  # the answer tells the final state: no frame
        finally:
            self._running.pop(key, None)
            await events.close()
        return ending.answer

    async def _start(self, view: ServiceView, job: _Job, events: _Events) -> JobResult:
        """Wait for a place in the gate (when queued), then run the job."""
        if job.admitted is not None:
            await job.admitted
        event = job.served.start()
        with contextlib.suppress(NotFound):
            # The inputs are recorded with the start, in the same change.
            self.store.set_job(job.served.row_id, RunState.RUNNING, attempt=1,
                               records=input_records(job.request.inputs))
        events.hold(event, RUNNING_HOLD)
        return await self._work(view, job, events)

    async def _work(self, view: ServiceView, job: _Job, events: _Events) -> JobResult:
        served = job.served
        request = served.request
        started = utcnow()
        inputs = []
        for inp in request.inputs:
            ref = inp.artifact
            if ref is not None and ref.peer_id not in ("", self.own_peer_id):
                try:
                    inp = replace(inp, artifact=await self.fetch(ref))
                except PeerError as exc:
                    return served.failed(f"cannot fetch input {ref.sha256[:12]}: {exc}",
                                         started)
            elif ref is not None:
                inp = replace(inp, artifact=replace(ref, peer_id=""))
            inputs.append(inp)
        request = replace(request, inputs=tuple(inputs))
        if view.service.service_type == ServiceType.DATA:
            return await self._data_job(view, served, started)

        def on_log(_job_id: str, stream: str, line: str) -> None:
            events.put(LogEvent(stream, line))

        try:
            return await self.local.dispatch(request, on_log=on_log, terms=job.terms)
        except DispatchError as exc:
            return served.failed(str(exc), started)

    async def _data_job(self, view: ServiceView, served: ServedJob,
                        started: dt.datetime) -> JobResult:
        service_id = int(view.service.id or 0)
        try:
            encrypted = await self.local.data_source(service_id)
            plain = await self.local.decrypt_data(service_id, encrypted)
        except DispatchError as exc:
            return served.failed(str(exc), started)
        outputs = {DATA_OUTPUT: plain, "STDOUT": plain}
        outputs.update({f"#{i.id}": plain for i in interface_info(view)})
        return await self.local.seal(served.request, JobResult(
            served.request.job_id, JobOutcome.COMPLETED, 0, started, utcnow(), outputs))

    # -- job_cancel ----------------------------------------------------------------------------
    async def _on_cancel(self, incoming: Any) -> dict[str, Any]:
        job = self._running.get((str(incoming.peer_id), cancel_from_wire(incoming.data)))
        if job is None:
            return cancelled_to_wire(False)
        await self._stop(job)
        return cancelled_to_wire(True)

    async def _stop(self, job: _Job) -> None:
        job.served.request_cancel()
        if not await self.local.cancel(job.request) and job.task is not None:
            job.task.cancel()  # not in the executor yet (fetching inputs): stop that instead

    def _stop_soon(self, job: _Job, why: str) -> None:
        log.info("stopping remote job %s: %s", job.request.job_id, why)
        task = asyncio.ensure_future(self._stop(job))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _requester_gone(self, peer_id: str) -> None:
        for (requester, _), job in list(self._running.items()):
            if requester == peer_id:
                self._stop_soon(job, f"the connection to {peer_id} closed")

    # -- records -------------------------------------------------------------------------------
    def _close(self, row_id: int, state: RunState, error: str) -> None:
        with contextlib.suppress(Exception):
            self.store.set_job(row_id, state, error=error)

    def _record_end(self, row_id: int, ending: Ending) -> None:
        """The outputs and the final state, in one change."""
        try:
            self.store.set_job(row_id, ending.state, records=ending.records,
                               exit_code=ending.result.exit_code, error=ending.error,
                               job_key=ending.result.job_key, receipt=ending.result.receipt,
                               output_refs=refs_to_json(ending.result.outputs)
                               if ending.result.receipt is not None else None,
                               receipt_digest=receipt_digest(ending.result.receipt)
                               if ending.result.receipt is not None else "")
        except NotFound:
            pass
        except Exception:
            log.warning("cannot record the end of remote job %s", row_id, exc_info=True)


def default_gate() -> JobGate:
    """Two jobs of other peers per core, half of them for one peer, 32 waiting."""
    total = 2 * (os.cpu_count() or 1)
    return JobGate(total=total, per_peer=max(1, total // 2), queue=32)
