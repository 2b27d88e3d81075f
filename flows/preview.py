"""What an execution of a workflow would do, without running anything (``POST .../plan``).

For each node, in the order the execution would take them: the peer it would run on (a node
placed by content: the first peer that offers it now), how that peer is reached (this node,
a direct connection, a relay, or not connected yet), whether its result would come from the
cache, and the bytes its inputs would move between peers where their sizes are known.

A node's job key, and so its cache answer, is known only once every input is: a node with no
upstream, a DATA file of this node, or an upstream result that the cache would serve. Beyond
that the answer is ``null`` (unknown until the upstream runs), as are the byte counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from executors.base import ArtifactRef
from flows.dispatch import DispatchError, JobDispatcher
from flows.job_step import job_inputs, job_request
from flows.placement import Placement, pick, placed_on
from flows.reuse import Reuse
from flows.scheduling import JobFailed, NodeOutputs
from orchestrator.graph import Plan, PlanNode
from orchestrator.registry import ServiceRegistry
from orchestrator.states import ServiceType
from orchestrator.wiring import DATA_OUTPUT, pick_output

log = logging.getLogger("remote_network.flows")


class Compiler(Protocol):
    def compile(self, workflow_id: int) -> Plan: ...


@dataclass(slots=True)
class NodePreview:
    node_id: int
    service_name: str
    peer_id: str | None  # None: a placed node no peer offers now
    service_id: int | None
    reached: str  # "local", "direct", "relayed", "not_connected", "no_peer"
    cached: bool | None  # None: unknown until the upstream runs (or no cache for this node)
    job_key: str | None
    bytes_in: int | None  # bytes its inputs move from other peers; None: not known
    inputs: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)


class PlanPreview:
    def __init__(self, compiler: Compiler, registry: ServiceRegistry, *, own_peer_id: str,
                 dispatcher_for: Callable[[PlanNode], JobDispatcher],
                 reuse: Reuse | None, placement: Placement | None,
                 reached: Callable[[str], str]) -> None:
        self.compiler = compiler
        self.registry = registry
        self.own_peer_id = own_peer_id
        self.dispatcher_for = dispatcher_for
        self.reuse = reuse
        self.placement = placement
        self.reached = reached

    async def preview(self, workflow_id: int) -> tuple[Plan, list[NodePreview]]:
        """The plan (400 when the workflow is not valid) and each node's preview."""
        plan = self.compiler.compile(workflow_id)
        known: dict[int, NodeOutputs] = {}  # nodes whose outputs are known before running
        out = []
        for node in plan.nodes:
            out.append(await self._node(plan, node, known))
        return plan, out

    async def _node(self, plan: Plan, node: PlanNode,
                    known: dict[int, NodeOutputs]) -> NodePreview:
        candidates: list[str] = []
        if node.placed:
            found = await self.placement.candidates(node) if self.placement else []
            candidates = [c.peer_id for c in found]
            if not found:
                return NodePreview(node.node_id, node.service_name, None, None, "no_peer",
                                   None, None, None, candidates=candidates)
            node = placed_on(node, pick(found, 1))
        peer = node.peer_id or self.own_peer_id
        reached = "local" if peer == self.own_peer_id else self.reached(peer)
        inputs = [{"from_node": i.source_node_id, "output": i.source_key,
                   "from_peer": plan.node(i.source_node_id).peer_id or None, "bytes": None}
                  for i in node.inputs]
        preview = NodePreview(node.node_id, node.service_name, peer, node.service_id, reached,
                              None if node.cache else False, None, None, inputs, candidates)
        if node.service_type == ServiceType.DATA:
            size = self._data_size(node.service_id)
            if size is not None:
                known[node.node_id] = NodeOutputs(node.node_id, {
                    DATA_OUTPUT: ArtifactRef("0" * 64, size)})
            preview.cached = False
            return preview
        upstream = [known[u] for u in node.upstream if u in known]
        if len(upstream) < len(node.upstream):
            return preview
        sizes = []
        for item, inp in zip(inputs, node.inputs, strict=True):
            ref = pick_output(known[inp.source_node_id].outputs, inp.source_key)
            from_peer = plan.node(inp.source_node_id).peer_id or self.own_peer_id
            item["bytes"] = 0 if ref is not None and from_peer == peer else (
                ref.size if ref is not None else None)
            sizes.append(item["bytes"])
        preview.bytes_in = sum(sizes) if all(s is not None for s in sizes) else None
        if not node.cache or self.reuse is None:
            return preview
        try:
            request = job_request(f"rn-plan-n{node.node_id}", plan, node,
                                  job_inputs(plan, node, {u.node_id: u for u in upstream}),
                                  upstream)
            preview.job_key = await self.dispatcher_for(node).job_key(request)
        except (DispatchError, JobFailed) as exc:
            log.info("plan: no job key for %s (%s)", node.label, exc)
            return preview
        found_result = await self.reuse.lookup(preview.job_key, node.accepted_signers,
                                               probe=True)
        preview.cached = found_result is not None
        if found_result is not None:
            known[node.node_id] = NodeOutputs(node.node_id, found_result.outputs)
        return preview

    def _data_size(self, service_id: int) -> int | None:
        try:
            view = self.registry.snapshot(service_id)
        except Exception:
            return None
        return view.data.file_size if view.data is not None else None
