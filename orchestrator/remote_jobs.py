"""The executing side of remote jobs: the ``job_run`` and ``job_cancel`` message handlers.

``job_run`` (from a peer orchestrating a workflow) is refused, with a message that says why, when
the requester is blacklisted, the request is malformed, the service does not exist here or is
not ACTIVE, or ``orchestrator.peer_policy`` refuses it (``<code>: <why>``: access, command,
interfaces, env, timeout); past the cap on jobs at once (``JobGate``) it waits in the bounded
queue or is refused ``busy``. Otherwise the job gets a job_execution row of its own here
(``requester_peer_id`` = the requester, no workflow of ours), its inputs are fetched from
whichever peer holds them (by hash, checked), and it runs on this node's executor under a job
id of ours (``rn-remote-<row>``), with the limits and isolation the policy gives it; its state
changes and log lines go back as ``event`` frames while it runs, and the answer is the
JobResult with outputs held here (see ``flows.remote`` for the wire form).

A DATA service as a job: its file is decrypted here into a plain artifact, answered as ``DATA``
and ``STDOUT`` (and the ``#<interface id>`` aliases), only for a requester the service's access
admits (DATA services are ``private`` unless their owner says otherwise). The passphrase never
leaves this node.

``job_cancel`` (only from the peer that asked for the job) stops the container or process; a
requester whose connection goes away has its running jobs stopped as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from executors.base import ArtifactRef, JobOutcome, JobResult, one_line, utcnow
from flows.dispatch import DispatchError, JobRequest, LocalDispatcher, interface_info
from flows.remote import (
    JOB_CANCEL,
    JOB_RUN,
    WireError,
    request_from_wire,
    result_to_wire,
)
from network.peer_errors import PeerClosed, PeerError, RequestRejected
from orchestrator.db import Database
from orchestrator.engine import change_job_state
from orchestrator.errors import NotFound
from orchestrator.events import EventBus
from orchestrator.graph import DATA_OUTPUT
from orchestrator.models import JobExecution, JobExecutionInterface
from orchestrator.peer_policy import JobGate, PeerPolicy, Refused, Terms
from orchestrator.registry import ServiceRegistry, ServiceView
from orchestrator.states import RunState, ServiceStatus, ServiceType

log = logging.getLogger("remote_network.remote_jobs")

JOB_UPDATED = "JOB_UPDATED"
Fetch = Callable[[ArtifactRef], Awaitable[ArtifactRef]]


@dataclass
class _Job:
    request: JobRequest  # with our own job id
    row_id: int
    terms: Terms
    task: asyncio.Task[JobResult] | None = None
    cancel_requested: bool = False
    # Set when the job waits in the gate's queue; done when it may run.
    admitted: asyncio.Future[None] | None = None


class _Events:
    """Event frames to the requester, in order, from sync callbacks (log lines) and async code."""

    def __init__(self, incoming: Any, on_gone: Callable[[], None]) -> None:
        self._incoming = incoming
        self._on_gone = on_gone
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pump = asyncio.ensure_future(self._run())

    def put(self, data: dict[str, Any]) -> None:
        self._queue.put_nowait(data)

    async def _run(self) -> None:
        while (data := await self._queue.get()) is not None:
            try:
                await self._incoming.emit(data)
            except PeerClosed:
                self._on_gone()
                return

    async def close(self) -> None:
        """Send what is queued (bounded), then stop."""
        self._queue.put_nowait(None)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(10):
                await asyncio.shield(self._pump)
        self._pump.cancel()


class RemoteJobs:
    def __init__(self, transport: Any, *, registry: ServiceRegistry, local: LocalDispatcher,
                 fetch: Fetch, db: Database, is_blacklisted: Callable[[str], bool],
                 bus: EventBus | None = None, policy: PeerPolicy | None = None,
                 gate: JobGate | None = None) -> None:
        self.transport = transport
        self.registry = registry
        self.local = local
        self.fetch = fetch
        self.db = db
        self.is_blacklisted = is_blacklisted
        self.bus = bus
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
        try:
            view = self.registry.get(service_id)
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

    async def _on_run(self, incoming: Any) -> dict[str, Any]:
        requester = str(incoming.peer_id)
        if self.is_blacklisted(requester):
            raise RequestRejected(f"peer {requester} is blacklisted on this node; its job "
                                  "requests are refused")
        try:
            request = request_from_wire(incoming.data, peer_id=self.own_peer_id)
            view = self._service(request.service_id)
            admitted = self.policy.admit(view, requester, request)
        except Refused as exc:
            raise RequestRejected(str(exc)) from None
        except WireError as exc:
            raise RequestRejected(f"bad_request: bad job request: {exc}") from None
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
        row_id = self._new_row(request.service_id, requester)
        job = _Job(replace(request, job_id=f"rn-remote-{row_id}"), row_id, terms)
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
                if not job.cancel_requested or (current is not None and current.cancelling()):
                    self._close(row_id, RunState.FAILED, "interrupted: this node is stopping")
                    raise
                result = _failed(job.request, utcnow(), "cancelled by the requester",
                                 JobOutcome.CANCELLED)
            if job.cancel_requested and result.outcome is JobOutcome.FAILED \
                    and result.exit_code is None:
                result = replace(result, outcome=JobOutcome.CANCELLED)
            self._finish(job, result)
            events.put({"event": "state", "status": _state(result.outcome),
                        "job_execution_id": row_id})
        finally:
            self._running.pop(key, None)
            await events.close()
        # The requester knows the job by its own id.
        return result_to_wire(replace(result, job_id=request.job_id), self.own_peer_id,
                              job_execution_id=row_id)

    async def _start(self, view: ServiceView, job: _Job, events: _Events) -> JobResult:
        """Wait for a place in the gate (when queued), then run the job."""
        if job.admitted is not None:
            await job.admitted
        self._set(job.row_id, RunState.RUNNING, attempt=1)
        events.put({"event": "state", "status": RunState.RUNNING,
                    "job_execution_id": job.row_id})
        return await self._work(view, job, events)

    async def _work(self, view: ServiceView, job: _Job, events: _Events) -> JobResult:
        request, row_id = job.request, job.row_id
        started = utcnow()
        inputs = []
        for inp in request.inputs:
            ref = inp.artifact
            if ref is not None and ref.peer_id not in ("", self.own_peer_id):
                try:
                    inp = replace(inp, artifact=await self.fetch(ref))
                except PeerError as exc:
                    return _failed(request, started,
                                   f"cannot fetch input {ref.sha256[:12]}: {exc}")
            elif ref is not None:
                inp = replace(inp, artifact=replace(ref, peer_id=""))
            inputs.append(inp)
        request = replace(request, inputs=tuple(inputs))
        self._record_inputs(row_id, request)
        if view.service.service_type == ServiceType.DATA:
            return await self._data_job(view, request, started)

        def on_log(job_id: str, stream: str, line: str) -> None:
            events.put({"event": "log", "stream": stream, "line": line})

        try:
            return await self.local.dispatch(request, on_log=on_log, terms=job.terms)
        except DispatchError as exc:
            return _failed(request, started, str(exc))

    async def _data_job(self, view: ServiceView, request: JobRequest,
                        started: dt.datetime) -> JobResult:
        service_id = int(view.service.id or 0)
        try:
            encrypted = await self.local.data_source(service_id)
            plain = await self.local.decrypt_data(service_id, encrypted)
        except DispatchError as exc:
            return _failed(request, started, str(exc))
        outputs = {DATA_OUTPUT: plain, "STDOUT": plain}
        outputs.update({f"#{i.id}": plain for i in interface_info(view)})
        return JobResult(request.job_id, JobOutcome.COMPLETED, 0, started, utcnow(), outputs)

    # -- job_cancel ----------------------------------------------------------------------------
    async def _on_cancel(self, incoming: Any) -> dict[str, Any]:
        job = self._running.get((str(incoming.peer_id), str(incoming.data.get("job_id"))))
        if job is None:
            return {"cancelled": False}
        await self._stop(job)
        return {"cancelled": True}

    async def _stop(self, job: _Job) -> None:
        job.cancel_requested = True
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
    def _new_row(self, service_id: int, requester: str) -> int:
        with self.db.session() as s:
            row = JobExecution(service_id=service_id, peer_id=self.own_peer_id,
                               requester_peer_id=requester, status=RunState.PENDING)
            s.add(row)
            s.commit()
            s.refresh(row)
        self._publish(row)
        return int(row.id or 0)

    def _set(self, row_id: int, state: RunState, **fields: Any) -> None:
        try:
            row = change_job_state(self.db, row_id, state, **fields)
        except NotFound:
            return
        self._publish(row)

    def _close(self, row_id: int, state: RunState, error: str) -> None:
        with contextlib.suppress(Exception):
            self._set(row_id, state, error=error)

    def _finish(self, job: _Job, result: JobResult) -> None:
        with self.db.session() as s:
            for key, ref in result.outputs.items():
                if key.startswith("#"):
                    continue
                kind, _, path = key.partition(":")
                s.add(JobExecutionInterface(job_execution_id=job.row_id, interface_type=kind,
                                            direction="output", path=path,
                                            artifact_hash=ref.sha256, size=ref.size))
            s.commit()
        state = _state(result.outcome)
        error = None if state is RunState.COMPLETED else (
            result.error or f"exit code {result.exit_code}")
        with contextlib.suppress(Exception):
            self._set(job.row_id, state, exit_code=result.exit_code, error=error)

    def _record_inputs(self, row_id: int, request: JobRequest) -> None:
        with self.db.session() as s:
            for inp in request.inputs:
                ref = inp.artifact
                # The requester's DATA, in clear (transient): named by no record, the retention
                # sweep removes it once no running job reads it.
                named = ref is not None and not inp.transient
                s.add(JobExecutionInterface(
                    job_execution_id=row_id, interface_id=inp.interface_id,
                    interface_type=inp.interface_type or "", direction="input", path=inp.path,
                    value=inp.text, artifact_hash=ref.sha256 if ref and named else "",
                    size=ref.size if ref else 0))
            s.commit()

    def _publish(self, j: JobExecution) -> None:
        if self.bus is not None:
            self.bus.publish(JOB_UPDATED, {
                "job_id": j.id, "execution_id": None, "node_id": None, "workflow_id": None,
                "status": j.status, "attempt": j.attempt, "exit_code": j.exit_code,
                "error": j.error, "requester_peer_id": j.requester_peer_id})


def default_gate() -> JobGate:
    """Two jobs of other peers per core, half of them for one peer, 32 waiting."""
    total = 2 * (os.cpu_count() or 1)
    return JobGate(total=total, per_peer=max(1, total // 2), queue=32)


def _state(outcome: JobOutcome) -> RunState:
    if outcome is JobOutcome.COMPLETED:
        return RunState.COMPLETED
    if outcome is JobOutcome.CANCELLED:
        return RunState.CANCELLED
    return RunState.FAILED


def _failed(request: JobRequest, started: dt.datetime, error: str,
            outcome: JobOutcome = JobOutcome.FAILED) -> JobResult:
    return JobResult(request.job_id, outcome, None, started, utcnow(), {}, one_line(error))
