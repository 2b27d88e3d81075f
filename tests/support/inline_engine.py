"""A ``FlowEngine`` without Prefect: flow and task bodies called in place, retries in a loop.

It runs an execution through the owner, the scheduler and the job step exactly as the node does,
so they are tested without a Prefect server; what the Prefect engine adds (flow runs, task runs,
their states) is tested against a real one in tests/flows/test_prefect_server.py.
"""

from __future__ import annotations

from typing import Any

from flows.flow_engine import Attempt, ExecutionBodies
from flows.scheduling import JobFailed, NodeOutputs
from orchestrator.graph import PlanNode


class InlineEngine:
    api_url = "inline"

    def __init__(self) -> None:
        self.bodies: ExecutionBodies | None = None
        self.flow_names: list[str] = []
        self.attempts: list[tuple[int, int]] = []  # (node id, attempt number)

    async def wait_ready(self) -> None:
        return None

    async def run_flow(self, bodies: ExecutionBodies, *, workflow_id: int, execution_id: int,
                       name: str, flow_run: Any = None) -> None:
        self.bodies = bodies
        await bodies.flow_body(workflow_id, execution_id)

    async def flow_started(self, name: str) -> str | None:
        self.flow_names.append(name)
        return f"inline-{len(self.flow_names)}"

    async def run_task(self, node: PlanNode, execution_id: int,
                       upstream: list[NodeOutputs]) -> NodeOutputs:
        assert self.bodies is not None
        number = 1
        while True:
            self.attempts.append((node.node_id, number))
            try:
                return await self.bodies.task_body(execution_id, node.node_id, upstream,
                                                   Attempt(number, f"task-{node.node_id}-{number}"))
            except JobFailed:
                if number > node.retry_count or not self.bodies.may_retry(execution_id):
                    raise
            number += 1

    async def stop(self) -> None:
        return None
