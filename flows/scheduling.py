"""DAG scheduling of one execution: each plan node starts as soon as its upstream nodes have
finished, so independent branches overlap; a node whose upstream did not complete is not started.

Plain asyncio: what runs a node (a Prefect task run, in the node) and what is recorded about it
are the ``NodeSteps`` given; nothing here knows Prefect, the database or the network.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from executors.base import ArtifactRef
from orchestrator.graph import Plan, PlanNode


class JobFailed(Exception):
    """A job ended without completing; its record says why."""


class JobCancelled(Exception):
    """A job ended cancelled (its execution was cancelled)."""


class WorkflowFailed(Exception):
    """An execution ended FAILED; the message is its recorded error."""


class NodeOutputs:
    """What a finished node hands downstream: its outputs by key, as artifact references.

    A task's return value and its downstream tasks' parameter. Prefect walks into dataclasses,
    dicts and lists among a task's parameters and results (twice per task run) to find futures
    and link upstream runs; it links this object by identity, so it is deliberately a plain
    object that Prefect does not walk into: walking its references cost milliseconds a job.

    ``receipt``: the digest of the receipt that vouches for the outputs ("" for none: a DATA
    node's file); ``reused_from``: set when the node did not run but took the outputs of an
    earlier job (a resumed execution's, a cached result), saying which.
    """

    __slots__ = ("node_id", "outputs", "receipt", "reused_from")

    def __init__(self, node_id: int, outputs: dict[str, ArtifactRef] | None = None, *,
                 receipt: str = "", reused_from: str = "") -> None:
        self.node_id = node_id
        self.outputs: dict[str, ArtifactRef] = outputs if outputs is not None else {}
        self.receipt = receipt
        self.reused_from = reused_from

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NodeOutputs) and other.node_id == self.node_id
                and other.outputs == self.outputs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NodeOutputs(node_id={self.node_id}, outputs={sorted(self.outputs)})"


class NodeSteps(Protocol):
    """What the scheduler asks of the execution it schedules."""

    def ended(self) -> bool:
        """Whether the execution has ended meanwhile (cancelled): no node starts then."""

    async def run(self, node: PlanNode, upstream: list[NodeOutputs]) -> NodeOutputs:
        """Run the node; raises JobFailed or JobCancelled (or anything) when it did not
        complete."""

    def not_started(self, node: PlanNode, upstream: PlanNode) -> None:
        """``node`` will not run: ``upstream`` did not complete."""

    def did_not_complete(self, node: PlanNode, error: BaseException) -> None:
        """``node`` ran and did not complete (``error`` says how)."""


async def run_plan(plan: Plan, steps: NodeSteps) -> bool:
    """Run every node of ``plan`` in dependency order; whether all of them completed."""
    tasks: dict[int, asyncio.Task[NodeOutputs | None]] = {}

    async def one(node: PlanNode) -> NodeOutputs | None:
        upstream: list[NodeOutputs] = []
        for up in node.upstream:
            try:
                result = await tasks[up]
            except BaseException:
                result = None
            if result is None:
                steps.not_started(node, plan.node(up))
                return None
            upstream.append(result)
        if steps.ended():
            return None
        try:
            return await steps.run(node, upstream)
        except Exception as exc:
            steps.did_not_complete(node, exc)
            return None

    for node in plan.nodes:  # topological order: every upstream task exists before its users
        tasks[node.node_id] = asyncio.create_task(one(node), name=f"node-{node.node_id}")
    try:
        results: list[Any] = await asyncio.gather(*tasks.values(), return_exceptions=True)
    except asyncio.CancelledError:
        for t in tasks.values():
            t.cancel()
        raise
    return all(isinstance(r, NodeOutputs) for r in results)
