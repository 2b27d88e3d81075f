"""The node's Prefect client answers the engine's redundant write and read of its own new runs."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

from flows.on_prefect.own_flow_runs import OwnFlowRuns


class RecordingClient:
    """Stands in for PrefectClient's two methods; records what would reach the server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    async def update_flow_run(self, flow_run_id: Any, **fields: Any) -> str:
        self.calls.append(("update", flow_run_id, fields))
        return "patched"

    async def read_flow_run(self, flow_run_id: Any) -> str:
        self.calls.append(("read", flow_run_id, {}))
        return "from server"


def flow_run(version: str = "v1", retries: int = 0) -> SimpleNamespace:
    policy = {"retries": retries, "retry_delay": 0}
    return SimpleNamespace(id=uuid.uuid4(), flow_version=version, empirical_policy=policy)


def installed() -> tuple[OwnFlowRuns, RecordingClient]:
    runs, client = OwnFlowRuns(), RecordingClient()
    runs.install(client)
    return runs, client


def test_unchanged_write_and_first_read_of_own_run_stay_local() -> None:
    runs, client = installed()
    run = flow_run()
    runs.add(run)

    async def engine_start() -> Any:
        await client.update_flow_run(flow_run_id=run.id, flow_version="v1",
                                     empirical_policy={"retries": 0, "retry_delay": 0})
        return await client.read_flow_run(run.id)

    assert asyncio.run(engine_start()) is run
    assert client.calls == []
    # A second read (a retried flow run reads again) asks the server.
    assert asyncio.run(client.read_flow_run(run.id)) == "from server"
    assert [c[0] for c in client.calls] == ["read"]


def test_a_write_that_changes_something_reaches_the_server() -> None:
    runs, client = installed()
    run = flow_run(retries=0)
    runs.add(run)
    asyncio.run(client.update_flow_run(flow_run_id=run.id, flow_version="v1",
                                       empirical_policy={"retries": 2, "retry_delay": 0}))
    asyncio.run(client.update_flow_run(flow_run_id=run.id, flow_version="v2"))
    asyncio.run(client.update_flow_run(flow_run_id=run.id, name="renamed"))
    assert [(c[0], c[2]) for c in client.calls] == [
        ("update", {"flow_version": "v1", "empirical_policy": {"retries": 2, "retry_delay": 0}}),
        ("update", {"flow_version": "v2"}),
        ("update", {"name": "renamed"})]


def test_runs_not_registered_or_discarded_go_to_the_server() -> None:
    runs, client = installed()
    other, done = flow_run(), flow_run()
    runs.add(done)
    runs.discard(done.id)
    assert len(runs) == 0
    for run in (other, done):
        asyncio.run(client.update_flow_run(flow_run_id=run.id, flow_version="v1"))
        assert asyncio.run(client.read_flow_run(run.id)) == "from server"
    assert [c[:2] for c in client.calls] == [("update", other.id), ("read", other.id),
                                             ("update", done.id), ("read", done.id)]
