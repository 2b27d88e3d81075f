"""Flow runs the node has just created, answered from memory where Prefect's engine asks again.

Given a flow run that already exists, Prefect's flow engine first writes the run's flow version
and retry policy back to the server (``PATCH /flow_runs/{id}``), then, once the run is Running,
reads the whole run again (``GET /flow_runs/{id}``) before it calls the flow. For a run the node
created a moment earlier, with that version and that policy, the write changes nothing and the read
returns the object the engine already holds (the engine keeps its state current itself). They are
two of the five requests every execution makes to the Prefect API, and under ten executions at
once each waits in the server's queue.

``OwnFlowRuns`` wraps those two methods of the node's own Prefect client. For a run registered
with ``add`` the write is skipped when it would set exactly what the run was created with, and
the engine's first read is answered with the engine's own object; every other call, and any later
read of the same run, goes to the server as before. A run is registered from its creation until
its execution ends.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID


class OwnFlowRuns:
    def __init__(self) -> None:
        self._runs: dict[UUID, Any] = {}  # flow run id -> the FlowRun the engine runs
        self._unread: set[UUID] = set()

    def add(self, flow_run: Any) -> None:
        self._runs[flow_run.id] = flow_run
        self._unread.add(flow_run.id)

    def discard(self, flow_run_id: UUID) -> None:
        self._runs.pop(flow_run_id, None)
        self._unread.discard(flow_run_id)

    def __len__(self) -> int:
        return len(self._runs)

    def unchanged(self, flow_run_id: UUID, **update: Any) -> bool:
        """Whether an update of ``flow_run_id`` with these fields would change nothing known."""
        run = self._runs.get(flow_run_id)
        if run is None:
            return False
        for field, value in update.items():
            if value is None:
                continue
            if field not in ("flow_version", "empirical_policy") or getattr(run, field) != value:
                return False
        return True

    def take_first_read(self, flow_run_id: UUID) -> Any | None:
        """The engine's own object for the first read of a registered run, else None."""
        if flow_run_id not in self._unread:
            return None
        self._unread.discard(flow_run_id)
        return self._runs.get(flow_run_id)

    def install(self, client: Any) -> None:
        """Answer ``client``'s updates and reads of registered runs as described above."""
        update = client.update_flow_run
        read = client.read_flow_run

        async def update_flow_run(flow_run_id: UUID, **fields: Any) -> Any:
            if self.unchanged(flow_run_id, **fields):
                return None
            return await update(flow_run_id, **fields)

        async def read_flow_run(flow_run_id: UUID) -> Any:
            held = self.take_first_read(flow_run_id)
            return held if held is not None else await read(flow_run_id)

        client.update_flow_run = update_flow_run
        client.read_flow_run = read_flow_run
