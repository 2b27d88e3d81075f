"""flows.scheduling: plan nodes run as soon as their upstream nodes have finished; plain asyncio."""

from __future__ import annotations

import asyncio

import pytest

from flows.scheduling import JobCancelled, JobFailed, NodeOutputs, run_plan
from orchestrator.graph import Plan, PlanNode


def node(node_id: int, *upstream: int) -> PlanNode:
    return PlanNode(node_id=node_id, peer_id="p" * 40, local=True, service_id=node_id,
                    service_name=f"s{node_id}", service_type="STANDALONE", upstream=upstream,
                    inputs=(), outputs=(), timeout=10.0, retry_count=0)


def plan(*nodes: PlanNode) -> Plan:
    return Plan(1, "wf", nodes)


class Steps:
    def __init__(self, *, fail: set[int] = frozenset(), cancel: set[int] = frozenset(),
                 gate: dict[int, asyncio.Event] | None = None) -> None:
        self.fail, self.cancel, self.gate = fail, cancel, gate or {}
        self.started: list[int] = []
        self.finished: list[int] = []
        self.skipped: list[tuple[int, int]] = []
        self.incomplete: list[tuple[int, str]] = []
        self.is_ended = False

    def ended(self) -> bool:
        return self.is_ended

    async def run(self, n: PlanNode, upstream: list[NodeOutputs]) -> NodeOutputs:
        assert sorted(u.node_id for u in upstream) == sorted(n.upstream)
        self.started.append(n.node_id)
        if n.node_id in self.gate:
            await self.gate[n.node_id].wait()
        self.finished.append(n.node_id)
        if n.node_id in self.fail:
            raise JobFailed(f"node {n.node_id} broke")
        if n.node_id in self.cancel:
            raise JobCancelled("cancelled")
        return NodeOutputs(n.node_id)

    def not_started(self, n: PlanNode, upstream: PlanNode) -> None:
        self.skipped.append((n.node_id, upstream.node_id))

    def did_not_complete(self, n: PlanNode, error: BaseException) -> None:
        self.incomplete.append((n.node_id, type(error).__name__))


async def test_a_diamond_runs_in_dependency_order_and_completes() -> None:
    steps = Steps()
    assert await run_plan(plan(node(1), node(2, 1), node(3, 1), node(4, 2, 3)), steps)
    assert steps.started[0] == 1 and steps.started[-1] == 4
    assert sorted(steps.started) == [1, 2, 3, 4] and not steps.skipped


async def test_independent_branches_overlap() -> None:
    """Both branches are running before either ends: neither waits for the other."""
    gates = {2: asyncio.Event(), 3: asyncio.Event()}
    steps = Steps(gate=gates)
    run = asyncio.create_task(run_plan(plan(node(1), node(2, 1), node(3, 1)), steps))
    for _ in range(100):
        if len(steps.started) == 3:
            break
        await asyncio.sleep(0)
    assert sorted(steps.started) == [1, 2, 3] and steps.finished == [1]
    gates[3].set()
    gates[2].set()
    assert await run


async def test_a_failed_node_stops_its_downstream_only() -> None:
    steps = Steps(fail={2})
    done = await run_plan(plan(node(1), node(2, 1), node(3, 2), node(4, 1)), steps)
    assert done is False
    assert steps.incomplete == [(2, "JobFailed")]
    assert steps.skipped == [(3, 2)]
    assert sorted(steps.finished) == [1, 2, 4]


async def test_a_cancelled_node_is_reported_as_such() -> None:
    steps = Steps(cancel={1})
    assert not await run_plan(plan(node(1), node(2, 1)), steps)
    assert steps.incomplete == [(1, "JobCancelled")] and steps.skipped == [(2, 1)]


async def test_nothing_starts_once_the_execution_has_ended() -> None:
    steps = Steps()
    steps.is_ended = True
    assert not await run_plan(plan(node(1), node(2, 1)), steps)
    assert steps.started == [] and steps.skipped == [(2, 1)]


async def test_cancelling_the_schedule_cancels_every_node() -> None:
    gate = {1: asyncio.Event()}
    steps = Steps(gate=gate)
    run = asyncio.create_task(run_plan(plan(node(1), node(2, 1)), steps))
    for _ in range(100):
        if steps.started:
            break
        await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert steps.finished == []
