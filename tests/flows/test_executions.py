"""The execution owner, the scheduler and the job step, without Prefect and without sockets.

A real database, registry, workflow store, plan compiler and artifact store; the flow engine is
``InlineEngine`` and the jobs go to a scripted dispatcher, so each test says exactly what every
job does and checks what the records say afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from executors.artifacts import ArtifactStore
from executors.base import ArtifactRef, JobOutcome, JobResult, LogSink, utcnow
from flows.dispatch import DispatchError
from flows.executions import Executions
from flows.job_step import JobStep
from orchestrator.db import Database
from orchestrator.errors import Conflict
from orchestrator.events import EventBus
from orchestrator.execution_store import ExecutionStore
from orchestrator.graph import Defaults
from orchestrator.job_request import JobRequest
from orchestrator.models import StandaloneDetails
from orchestrator.plan_compiler import PlanCompiler
from orchestrator.registry import ServiceRegistry
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import Interface
from orchestrator.workflows import WorkflowStore
from tests.support.inline_engine import InlineEngine

PEER = "a" * 40
Script = Callable[[JobRequest, LogSink | None], Awaitable[JobResult]]


class ScriptedDispatcher:
    """Runs each job by the script of its service; records requests and cancellations."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts
        self.scripts: dict[int, Script] = {}
        self.requests: list[JobRequest] = []
        self.cancelled: list[str] = []
        self.release = asyncio.Event()

    def output(self, request: JobRequest, text: str, code: int = 0) -> JobResult:
        ref = self.artifacts.put_bytes(text.encode())
        outcome = JobOutcome.COMPLETED if code == 0 else JobOutcome.FAILED
        return JobResult(request.job_id, outcome, code, utcnow(), utcnow(), {"STDOUT": ref})

    async def dispatch(self, request: JobRequest, *, on_log: LogSink | None = None) -> JobResult:
        self.requests.append(request)
        return await self.scripts[request.service_id](request, on_log)

    async def cancel(self, request: JobRequest) -> bool:
        self.cancelled.append(request.job_id)
        self.release.set()
        return True

    async def data_source(self, service_id: int) -> ArtifactRef:
        raise DispatchError("no DATA here")


class World:
    def __init__(self, tmp: Path) -> None:
        self.db = Database(f"sqlite:///{tmp / 'node.db'}")
        self.db.migrate()
        bus = EventBus()
        self.registry = ServiceRegistry(self.db, bus)
        self.workflows = WorkflowStore(self.db, bus, own_peer_id=PEER,
                                       services=self.registry)
        self.artifacts = ArtifactStore(tmp / "artifacts")
        self.store = ExecutionStore(self.db, bus, own_peer_id=PEER)
        self.jobs = ScriptedDispatcher(self.artifacts)
        self.engine = InlineEngine()
        compiler = PlanCompiler(self.workflows, self.registry, own_peer_id=PEER,
                                defaults=Defaults(), is_known_peer=lambda _peer: False)
        steps = JobStep(self.store, self.artifacts, dispatcher_for=lambda _node: self.jobs,
                        data_source=self.jobs, inline_limit=1024)
        self.owner = Executions(self.store, compiler, self.engine, steps)

    def service(self, name: str, script: Script) -> tuple[int, int, int]:
        """A STDIN → STDOUT service run by ``script``: (id, stdin id, stdout id)."""
        view = self.registry.create(name=name, service_type=ServiceType.STANDALONE,
                                    interfaces=[Interface(InterfaceType.STDIN),
                                                Interface(InterfaceType.STDOUT)],
                                    details=StandaloneDetails(executable_path="/bin/cat"))
        sid = int(view.service.id or 0)
        self.jobs.scripts[sid] = script
        stdin, stdout = (int(i.id or 0) for i in view.interfaces)
        return sid, stdin, stdout

    def chain(self, *services: tuple[int, int, int], retries: int = 0) -> tuple[int, list[int]]:
        wf = int(self.workflows.create("chain").id or 0)
        nodes = [int(self.workflows.add_node(wf, service_id=s[0],
                                             config={"retry_count": retries}).id or 0)
                 for s in services]
        for (a, b), (src, dst) in zip(pairwise(nodes), pairwise(services), strict=True):
            self.workflows.add_connection(wf, {"source_node_id": a, "source_interface_id": src[2],
                                               "target_node_id": b,
                                               "target_interface_id": dst[1]})
        return wf, nodes

    def hello_upper_chain(self) -> tuple[int, list[int]]:
        """A "hello" job (which logs a line) feeding one that upper-cases its input."""
        async def hello(request: JobRequest, on_log: LogSink | None) -> JobResult:
            if on_log is not None:
                on_log(request.job_id, "stdout", "saying hello")
            return self.jobs.output(request, "hello")

        async def upper(request: JobRequest, _: LogSink | None) -> JobResult:
            (inp,) = request.inputs
            assert inp.artifact is not None
            return self.jobs.output(request,
                                    self.artifacts.read_bytes(inp.artifact).decode().upper())

        return self.chain(self.service("hello", hello), self.service("upper", upper))

    async def run(self, wf: int) -> int:
        execution = self.owner.execute(wf)
        eid = int(execution.id or 0)
        await asyncio.wait_for(self.owner.wait(eid), 10)
        return eid


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.db.close()


async def test_a_chain_completes_and_each_job_reads_its_upstream_output(world: World) -> None:
    wf, nodes = world.hello_upper_chain()
    eid = await world.run(wf)

    row = world.store.execution(eid)
    assert (row.status, row.progress, row.prefect_flow_run_id) == ("COMPLETED", 100, "inline-1")
    assert world.engine.flow_names == [f"chain #{eid}"]
    jobs = world.store.jobs(eid)
    assert [jobs[n].status for n in nodes] == ["COMPLETED", "COMPLETED"]
    last = world.store.job_interfaces(int(jobs[nodes[1]].id or 0))
    assert [(i.direction, i.interface_type, i.value) for i in last] == [
        ("input", "STDIN", "hello"), ("output", "STDOUT", "HELLO")]
    # The first job's STDOUT is wired onward; the request says so.
    assert world.jobs.requests[0].wired_outputs == ("STDOUT",)
    assert world.jobs.requests[1].job_id == f"rn-e{eid}-j{jobs[nodes[1]].id}-a1"


async def test_a_failed_job_fails_the_execution_and_its_downstream_never_starts(
        world: World) -> None:
    async def broken(request: JobRequest, _: LogSink | None) -> JobResult:
        return world.jobs.output(request, "", code=3)

    async def never(request: JobRequest, _: LogSink | None) -> JobResult:
        raise AssertionError("a job downstream of a failure ran")

    wf, nodes = world.chain(world.service("broken", broken), world.service("never", never))
    eid = await world.run(wf)

    row = world.store.execution(eid)
    assert row.status == "FAILED"
    assert row.error == f"node {nodes[0]} (broken) failed: exit code 3"
    jobs = world.store.jobs(eid)
    assert (jobs[nodes[0]].status, jobs[nodes[0]].exit_code) == ("FAILED", 3)
    assert (jobs[nodes[1]].status, jobs[nodes[1]].error) == (
        "CANCELLED", f"not started: upstream node {nodes[0]} (broken) did not complete")
    assert len(world.jobs.requests) == 1


async def test_a_job_is_retried_and_its_record_keeps_the_last_attempt(world: World) -> None:
    tries: list[int] = []

    async def flaky(request: JobRequest, _: LogSink | None) -> JobResult:
        tries.append(1)
        return world.jobs.output(request, "ok", code=1 if len(tries) == 1 else 0)

    wf, nodes = world.chain(world.service("flaky", flaky), retries=1)
    eid = await world.run(wf)

    job = world.store.jobs(eid)[nodes[0]]
    assert (world.store.status(eid), job.status, job.attempt) == ("COMPLETED", "COMPLETED", 2)
    assert job.prefect_task_run_id == f"task-{nodes[0]}-2"
    assert [r.job_id.rsplit("-", 1)[1] for r in world.jobs.requests] == ["a1", "a2"]


async def test_cancel_stops_the_running_job_and_ends_everything_cancelled(
        world: World) -> None:
    async def slow(request: JobRequest, _: LogSink | None) -> JobResult:
        await world.jobs.release.wait()  # until cancelled
        return JobResult(request.job_id, JobOutcome.CANCELLED, None, utcnow(), utcnow())

    async def never(request: JobRequest, _: LogSink | None) -> JobResult:
        raise AssertionError("a job after a cancelled one ran")

    wf, nodes = world.chain(world.service("slow", slow), world.service("never", never),
                            retries=2)
    eid = int(world.owner.execute(wf).id or 0)
    for _ in range(200):
        if world.jobs.requests:
            break
        await asyncio.sleep(0.01)
    cancelled = await world.owner.cancel(eid)
    assert cancelled.status == "CANCELLED"
    await asyncio.wait_for(world.owner.wait(eid), 10)

    assert world.jobs.cancelled == [world.jobs.requests[0].job_id]
    jobs = world.store.jobs(eid)
    assert {jobs[n].status for n in nodes} == {"CANCELLED"}
    assert world.store.execution(eid).status == "CANCELLED"
    assert len(world.jobs.requests) == 1  # no retry once the execution has ended
    with pytest.raises(Conflict):
        await world.owner.cancel(eid)


async def test_a_dispatch_error_is_the_jobs_failure(world: World) -> None:
    async def unreachable(request: JobRequest, _: LogSink | None) -> JobResult:
        raise DispatchError("peer x: unreachable")

    wf, nodes = world.chain(world.service("far", unreachable))
    eid = await world.run(wf)
    job = world.store.jobs(eid)[nodes[0]]
    assert (job.status, job.error) == ("FAILED", "peer x: unreachable")
    assert world.store.execution(eid).error == f"node {nodes[0]} (far) failed: peer x: unreachable"


async def test_an_output_connected_to_the_requesting_node_is_delivered_under_its_name(
        world: World) -> None:
    wf, nodes = world.hello_upper_chain()
    # Both outputs go to the requesting node: the last one renamed, the first one as it is
    # (and onward to the second job as well).
    world.workflows.add_connection(wf, {"source_node_id": nodes[1], "target_node_id": None,
                                        "source_interface_type": "STDOUT",
                                        "destination_file_name": "shout.txt"})
    world.workflows.add_connection(wf, {"source_node_id": nodes[0], "target_node_id": None})
    eid = await world.run(wf)

    assert world.store.status(eid) == "COMPLETED"
    delivered = [(job.node_id, row.interface_type, row.delivered_as, row.value)
                 for job, row in world.store.delivered(eid)]
    assert sorted(delivered) == sorted([(nodes[0], "STDOUT", "stdout", "hello"),
                                        (nodes[1], "STDOUT", "shout.txt", "HELLO")])
    # The request says what is delivered, so a remote job's output comes back here.
    assert world.jobs.requests[0].delivered_outputs == ("STDOUT",)
    assert world.jobs.requests[0].wired_outputs == ("STDOUT",)


async def test_a_delivered_output_the_job_did_not_produce_fails_the_job(world: World) -> None:
    async def no_mount(request: JobRequest, _: LogSink | None) -> JobResult:
        return world.jobs.output(request, "only stdout")

    sid, _stdin, _stdout = world.service("plain", no_mount)
    wf = int(world.workflows.create("lonely").id or 0)
    n = int(world.workflows.add_node(wf, service_id=sid).id or 0)
    conn = world.workflows.add_connection(wf, {"source_node_id": n, "target_node_id": None,
                                               "source_interface_type": "STDERR"})
    eid = await world.run(wf)

    job = world.store.jobs(eid)[n]
    assert (world.store.status(eid), job.status) == ("FAILED", "FAILED")
    assert job.error == f"node {n} (plain) produced no STDERR output to deliver " \
                        f"(connection {conn.id})"
    assert world.store.delivered(eid) == []
