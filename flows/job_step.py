"""One job of an execution: record it RUNNING, build its request from the upstream outputs,
dispatch it, record its inputs and outputs and how it ended.

Plain code: the attempt (number, task-run id, where lines also go) comes from the flow engine, the
records go to the ``ExecutionStore``, the job to a ``JobDispatcher`` (``LocalDispatcher`` for a
job here with nothing to fetch, else ``RemoteDispatcher``, which runs this node's own jobs after
fetching their inputs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from executors.base import ArtifactRef, JobOutcome, JobResult, utcnow
from flows.dispatch import DispatchError, JobDispatcher
from flows.flow_engine import Attempt
from flows.job_protocol.wire import refs_to_json
from flows.placement import Placement, pick, placed_on
from flows.reuse import Found, Reuse
from flows.scheduling import JobCancelled, JobFailed, NodeOutputs
from orchestrator.execution_store import ExecutionStore, InterfaceRecord
from orchestrator.graph import Plan, PlanNode
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.models import JobExecution, JobExecutionInterface
from orchestrator.receipts import digest as receipt_digest
from orchestrator.states import InterfaceType, RunState
from orchestrator.wiring import (
    DATA_OUTPUT,
    TEXT_INPUTS,
    TEXT_OUTPUTS,
    normalize_mount,
    output_named,
    pick_output,
)

log = logging.getLogger("remote_network.flows")

# Text outputs this small are read on the loop: a thread hand-off costs more than the read.
SMALL_READ = 64 * 1024
# Small text outputs kept by artifact hash, for the records of the jobs they feed (at most
# this many, each at most SMALL_READ: 16 MiB).
TEXT_CACHE_SIZE = 256
TEXT_KINDS = TEXT_OUTPUTS | TEXT_INPUTS


class ArtifactReader(Protocol):
    def read_bytes(self, ref: ArtifactRef) -> bytes: ...


def keep_bounded(cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Store ``value`` in a cache of at most ``limit`` entries (the oldest goes first)."""
    if len(cache) >= limit:
        cache.pop(next(iter(cache)))
    cache[key] = value


def job_inputs(plan: Plan, node: PlanNode, upstream: dict[int, NodeOutputs]) -> list[JobInput]:
    """The job's inputs: for each wired input, the upstream output it names."""
    inputs = []
    for inp in node.inputs:
        outputs = upstream[inp.source_node_id].outputs
        ref = pick_output(outputs, inp.source_key)
        if ref is None and inp.source_interface_id is not None:
            ref = outputs.get(f"#{inp.source_interface_id}")
        if ref is None:
            raise JobFailed(f"upstream node {inp.source_node_id} produced no "
                            f"{inp.source_key} output")
        data_service = (plan.node(inp.source_node_id).service_id
                        if inp.source_key == DATA_OUTPUT else None)
        inputs.append(JobInput(
            interface_id=inp.target_interface_id, interface_type=inp.target_type,
            path=inp.target_path, artifact=ref, data_service_id=data_service))
    return inputs


def job_request(job_id: str, plan: Plan, node: PlanNode, inputs: list[JobInput],
                upstream: list[NodeOutputs]) -> JobRequest:
    """The request of the node's job, with these inputs, chained to its upstream receipts."""
    return JobRequest(
        job_id=job_id, service_id=node.service_id, peer_id=node.peer_id, inputs=tuple(inputs),
        env=dict(node.env), args=node.args, stdin_text=node.stdin,
        entrypoint=node.entrypoint, cmd=node.cmd, timeout=node.timeout,
        wired_outputs=tuple(sorted({i.source_key for n in plan.nodes for i in n.inputs
                                    if i.source_node_id == node.node_id})),
        delivered_outputs=tuple(sorted({d.source_key for d in node.deliveries})),
        previous_receipts=tuple(sorted({u.receipt for u in upstream if u.receipt})))


def delivered_names(node: PlanNode, outputs: dict[str, ArtifactRef]) -> dict[str, str]:
    """For each output of the job delivered to the requesting node: its key, and the file name
    it is delivered as. Raises JobFailed when a delivered output is missing."""
    names = {}
    for delivery in node.deliveries:
        key = output_named(outputs, delivery.source_key)
        if key is None:
            raise JobFailed(f"{node.label} produced no {delivery.source_key} output to deliver "
                            f"(connection {delivery.connection_id})")
        names[key] = delivery.file_name or default_file_name(key)
    return names


def default_file_name(key: str) -> str:
    """The name an output is delivered as when its connection names none: ``stdout``,
    ``stderr``, ``logs``, ``data``, or a MOUNT directory's last segment with ``.tar``."""
    kind, _, path = key.partition(":")
    if kind == InterfaceType.MOUNT:
        return (normalize_mount(path).rsplit("/", 1)[-1] or "mount") + ".tar"
    return kind.lower()


def failure_reason(node: PlanNode, result: JobResult) -> str:
    if result.outcome is JobOutcome.TIMED_OUT:
        return f"timed out after {node.timeout:g}s"
    reason = result.error or f"exit code {result.exit_code}"
    if result.exit_code not in (None, 0) and "exit code" not in reason:
        reason = f"exit code {result.exit_code}: {reason}"
    return reason


def same_inputs(recorded: list[JobExecutionInterface], inputs: list[JobInput]) -> bool:
    """Whether a recorded job read the same inputs (by artifact hash) as ``inputs``."""
    old = sorted(r.artifact_hash for r in recorded if r.direction == "input")
    new = sorted(i.artifact.sha256 if i.artifact is not None and not i.transient else ""
                 for i in inputs)
    return old == new


class JobStep:
    """``reuse``: where a resumed execution's completed jobs and cached results are taken
    from (none: every job runs); ``placement``: where nodes placed by content digest find
    their peer (none: they fail, saying so)."""

    def __init__(self, store: ExecutionStore, artifacts: ArtifactReader, *,
                 dispatcher_for: Callable[[PlanNode], JobDispatcher],
                 data_source: JobDispatcher, inline_limit: int,
                 reuse: Reuse | None = None, placement: Placement | None = None) -> None:
        self.store = store
        self.artifacts = artifacts
        self.dispatcher_for = dispatcher_for
        self.data_source = data_source
        self.inline_limit = inline_limit
        self.reuse = reuse
        self.placement = placement
        self._active: dict[int, dict[int, tuple[JobDispatcher, JobRequest]]] = {}
        self._texts: dict[str, str] = {}
        # A resumed execution: the completed jobs of the one it carries on from, by node.
        self._resumed: dict[int, dict[int, JobExecution]] = {}

    def carry_on(self, execution_id: int, jobs: dict[int, JobExecution]) -> None:
        """``execution_id`` resumes an execution whose completed ``jobs`` (by node) it may
        take instead of running them."""
        self._resumed[execution_id] = jobs

    def inputs_in_use(self) -> set[str]:
        """Digests of the artifacts the jobs running now read."""
        return {inp.artifact.sha256 for jobs in list(self._active.values())
                for _, request in list(jobs.values()) for inp in request.inputs
                if inp.artifact is not None}

    async def cancel(self, execution_id: int) -> None:
        """Stop the execution's running jobs (their records are the store's business)."""
        for dispatcher, request in list(self._active.get(execution_id, {}).values()):
            await dispatcher.cancel(request)

    def forget(self, execution_id: int) -> None:
        self._active.pop(execution_id, None)
        self._resumed.pop(execution_id, None)

    async def run(self, execution_id: int, plan: Plan, node: PlanNode, job_id: int,
                  upstream: list[NodeOutputs], attempt: Attempt,
                  ended: Callable[[], bool]) -> NodeOutputs:
        """Run one attempt. Raises JobCancelled when the execution ended (before or while it
        ran), JobFailed when it did not complete (recorded FAILED after the last attempt, still
        RUNNING with the reason before a retry)."""
        if ended():
            raise JobCancelled("execution cancelled before the job started")
        job = self.store.set_job(job_id, RunState.RUNNING, attempt=attempt.number, error=None,
                                 prefect_task_run_id=attempt.task_run_id)
        inputs = job_inputs(plan, node, {u.node_id: u for u in upstream})
        not_placed = ""
        if node.placed:
            try:
                node = await self._place(node, attempt.number, job_id)
            except DispatchError as exc:
                not_placed = str(exc)
        request = job_request(f"rn-e{execution_id}-j{job_id}-a{attempt.number}", plan, node,
                              inputs, upstream)
        dispatcher = self.dispatcher_for(node)
        found = None if not_placed else await self._reusable(execution_id, node, request,
                                                             inputs, dispatcher)
        if found is not None:
            return await self._take(job_id, node, request, inputs, found)
        self._active.setdefault(execution_id, {})[job_id] = (dispatcher, request)
        also = attempt.log

        def on_log(_job: str, stream: str, line: str) -> None:
            self.store.publish_log(job, stream, line)
            if also is not None:
                also(stream, line)

        try:
            if not_placed:
                raise DispatchError(not_placed)
            result = await dispatcher.dispatch(request, on_log=on_log)
        except DispatchError as exc:
            now = utcnow()
            result = JobResult(request.job_id, JobOutcome.FAILED, None, now, now, error=str(exc))
        finally:
            self._active.get(execution_id, {}).pop(job_id, None)
            if attempt.close_log is not None:
                attempt.close_log()

        if result.outcome is JobOutcome.COMPLETED:
            try:
                delivered = delivered_names(node, dict(result.outputs))
            except JobFailed as exc:
                self.store.set_job(job_id, RunState.FAILED, exit_code=result.exit_code,
                                   error=str(exc), job_key=result.job_key,
                                   records=await self._records(node, inputs, result))
                raise
            sealed = receipt_digest(result.receipt) if result.receipt is not None else ""
            self.store.set_job(job_id, RunState.COMPLETED, exit_code=result.exit_code,
                               job_key=result.job_key, receipt=result.receipt,
                               receipt_digest=sealed, output_refs=refs_to_json(result.outputs),
                               records=await self._records(node, inputs, result, delivered))
            return NodeOutputs(node.node_id, dict(result.outputs), receipt=sealed)
        if result.outcome is JobOutcome.CANCELLED or ended():
            self.store.close_job(job_id, RunState.CANCELLED, "cancelled")
            raise JobCancelled("job cancelled")
        reason = failure_reason(node, result)
        if attempt.number > node.retry_count:
            self.store.set_job(job_id, RunState.FAILED, exit_code=result.exit_code,
                               error=reason, job_key=result.job_key,
                               records=await self._records(node, inputs, result))
        else:
            self.store.set_job(job_id, RunState.RUNNING, exit_code=result.exit_code,
                               error=f"attempt {attempt.number} failed ({reason}); retrying")
        raise JobFailed(reason)

    async def _place(self, node: PlanNode, attempt: int, job_id: int) -> PlanNode:
        """The node on the peer this attempt goes to (``flows.placement``), recorded on the
        job; DispatchError when no peer offers its service."""
        if self.placement is None:
            raise DispatchError(f"{node.label} is placed by content digest: only a node with "
                                "its peer transport can place it")
        candidates = await self.placement.candidates(node)
        if not candidates:
            among = (f"of the {len(node.placement)} placed" if node.placement
                     else "known to this node")
            raise DispatchError(f"no peer {among} offers service {node.content_digest} to "
                                "this node")
        chosen = pick(candidates, attempt)
        self.store.set_job(job_id, RunState.RUNNING, peer_id=chosen.peer_id,
                           service_id=chosen.service_id)
        return placed_on(node, chosen)

    async def _reusable(self, execution_id: int, node: PlanNode, request: JobRequest,
                        inputs: list[JobInput], dispatcher: JobDispatcher) -> Found | None:
        """A result to take instead of running: the earlier execution's job when this one
        resumes it and the inputs are the same, else (a ``cache`` node) a result of the same
        job key."""
        if self.reuse is None:
            return None
        earlier = self._resumed.get(execution_id, {}).get(node.node_id)
        if earlier is not None and same_inputs(
                self.store.job_interfaces(int(earlier.id or 0)), inputs):
            found = await self.reuse.from_job(earlier)
            if found is not None:
                return found
        if not node.cache:
            return None
        try:
            key = await dispatcher.job_key(request)
        except DispatchError as exc:
            log.info("%s: no job key, so no cached result (%s)", node.label, exc)
            return None
        return await self.reuse.lookup(key, node.accepted_signers)

    async def _take(self, job_id: int, node: PlanNode, request: JobRequest,
                    inputs: list[JobInput], found: Found) -> NodeOutputs:
        now = utcnow()
        result = JobResult(request.job_id, JobOutcome.COMPLETED, found.exit_code, now, now,
                           outputs=found.outputs, job_key=found.job_key, receipt=found.receipt)
        delivered = delivered_names(node, found.outputs)
        digest = found.verified.digest
        self.store.set_job(job_id, RunState.COMPLETED, exit_code=found.exit_code,
                           job_key=found.job_key, receipt=found.receipt, receipt_digest=digest,
                           cached_from=digest, output_refs=refs_to_json(found.outputs),
                           error=None,
                           records=await self._records(node, inputs, result, delivered))
        return NodeOutputs(node.node_id, dict(found.outputs), receipt=digest,
                           reused_from=f"reused {found.source} (receipt {digest[:19]})")

    async def run_data(self, node: PlanNode, job_id: int) -> NodeOutputs:
        """A DATA node of this node: its encrypted file, as the output that feeds its users."""
        self.store.set_job(job_id, RunState.RUNNING, attempt=1)
        try:
            ref = await self.data_source.data_source(node.service_id)
        except DispatchError as exc:
            self.store.set_job(job_id, RunState.FAILED, error=str(exc))
            raise JobFailed(str(exc)) from None
        delivered = delivered_names(node, {DATA_OUTPUT: ref})
        self.store.set_job(job_id, RunState.COMPLETED, exit_code=0, records=[InterfaceRecord(
            DATA_OUTPUT, "output", path="", artifact_hash=ref.sha256, size=ref.size,
            delivered_as=delivered.get(DATA_OUTPUT))])
        return NodeOutputs(node.node_id, {DATA_OUTPUT: ref})

    async def _records(self, node: PlanNode, inputs: list[JobInput], result: JobResult,
                       delivered: dict[str, str] | None = None) -> list[InterfaceRecord]:
        """The job's inputs and outputs as they are recorded (text values inline)."""
        by_key = {o.key: o for o in node.outputs}
        records = []
        for inp in inputs:
            ref = inp.artifact
            records.append(InterfaceRecord(
                inp.interface_type or "", "input", interface_id=inp.interface_id,
                path=inp.path, value=await self._text(ref, inp.interface_type),
                artifact_hash=ref.sha256 if ref else "", size=ref.size if ref else 0))
        for key, ref in result.outputs.items():
            if key.startswith("#"):
                continue
            kind, _, path = key.partition(":")
            out = by_key.get(key)
            records.append(InterfaceRecord(
                kind, "output", interface_id=out.interface_id if out else None, path=path,
                value=await self._text(ref, kind), artifact_hash=ref.sha256, size=ref.size,
                delivered_as=(delivered or {}).get(key)))
        return records

    async def _text(self, ref: ArtifactRef | None, kind: str | None) -> str | None:
        """A small text value, inline in its record (None: too big, not text, elsewhere)."""
        if ref is None or kind not in TEXT_KINDS or ref.size > self.inline_limit or ref.peer_id:
            return None
        if ref.size == 0:
            return ""
        cached = self._texts.get(ref.sha256)
        if cached is not None:
            return cached
        try:
            if ref.size <= SMALL_READ:
                data = self.artifacts.read_bytes(ref)
            else:
                data = await asyncio.to_thread(self.artifacts.read_bytes, ref)
        except Exception:
            return None
        text = data.decode(errors="replace")
        if ref.size <= SMALL_READ:
            # Artifacts never change: a job's input is its upstream's output, read just before.
            keep_bounded(self._texts, ref.sha256, text, TEXT_CACHE_SIZE)
        return text
