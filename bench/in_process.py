"""A real node built in this process for the benches (``Node`` with its Prefect server and
embedded PostgreSQL beside it, as ``remote-network start`` runs it), and the standalone services
and workflows they run on it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.node import Node
from orchestrator.services.standalone_services import RunConfig
from tests.support.node_process import free_port, free_udp_port


async def start_node(data_dir: Path) -> Node:
    settings = Settings(data_dir=data_dir, api_host="127.0.0.1", api_port=free_port(),
                        http_port=free_port(), p2p_host="127.0.0.1", quic_port=free_udp_port(),
                        dht_port=free_udp_port(), log_level="WARNING")
    node = Node(settings)
    await node.start()
    await node.prefect.wait_ready()
    return node


def service(node: Node, name: str, executable: str, *args: str,
            workdir: str = "") -> tuple[int, dict[str, int]]:
    """A standalone service with one STDIN and one STDOUT: (its id, interface ids by type)."""
    view, _ = node.standalone.create_from_local(
        name=name, description="", config=RunConfig(
            executable_path=executable, arguments=list(args), working_directory=workdir,
            custom_interfaces=[{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}]))
    return int(view.service.id or 0), {i.interface_type: int(i.id or 0) for i in view.interfaces}


def workflow(node: Node, name: str, nodes: list[tuple[int, dict[str, Any]]],
             edges: list[tuple[int, int, int, int]]) -> int:
    """Nodes as (service id, config); edges as (src index, src iface, dst index, dst iface)."""
    wf = int(node.workflows.create(name).id or 0)
    ids = [int(node.workflows.add_node(wf, service_id=sid, config=config).id or 0)
           for sid, config in nodes]
    for src, src_if, dst, dst_if in edges:
        node.workflows.add_connection(wf, {
            "source_node_id": ids[src], "source_interface_id": src_if,
            "target_node_id": ids[dst], "target_interface_id": dst_if})
    return wf


class JobClock:
    """Times every executor call of the node (the job's run time, as the node sees it)."""

    def __init__(self, node: Node) -> None:
        self.times: list[float] = []
        inner = node.executor.run

        async def timed(spec: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await inner(spec, **kwargs)
            finally:
                self.times.append(time.perf_counter() - t)

        node.executor.run = timed  # type: ignore[method-assign]

    def take(self) -> float:
        total = sum(self.times)
        self.times.clear()
        return total
