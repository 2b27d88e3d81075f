"""A workflow's rows, compiled into the ``Plan`` an execution runs (``orchestrator.graph``).

Reads the workflow's nodes and connections and the services and interfaces they name, each at
most once per compilation, and hands them to ``graph.compile_plan``, which checks the wiring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from orchestrator.errors import NotFound
from orchestrator.graph import (
    Defaults,
    EdgeSpec,
    NodeSpec,
    Plan,
    ServiceInfo,
    compile_plan,
)
from orchestrator.registry import ServiceRegistry
from orchestrator.wiring import Interface
from orchestrator.workflows import WorkflowStore


class PlanCompiler:
    def __init__(self, workflows: WorkflowStore, services: ServiceRegistry, *,
                 own_peer_id: str, defaults: Defaults,
                 is_known_peer: Callable[[str], bool]) -> None:
        self.workflows = workflows
        self.services = services
        self.own_peer_id = own_peer_id
        self.defaults = defaults
        self.is_known_peer = is_known_peer

    def _service_info(self, service_id: int) -> ServiceInfo | None:
        try:
            view = self.services.snapshot(service_id)
        except NotFound:
            return None
        ifaces = tuple(Interface.from_row(i) for i in view.interfaces)
        timeout = float(view.standalone.timeout_seconds) if view.standalone else None
        return ServiceInfo(int(view.service.id or 0), view.service.name,
                           view.service.service_type, ifaces, timeout)

    def compile(self, workflow_id: int) -> Plan:
        """The plan of the workflow (NotFound; InvalidInput naming what is wrong)."""
        workflow = self.workflows.get(workflow_id)
        services: dict[int, ServiceInfo | None] = {}
        interfaces: dict[int, Interface | None] = {}

        def service(service_id: int) -> ServiceInfo | None:
            if service_id not in services:
                services[service_id] = self._service_info(service_id)
            return services[service_id]

        def interface(interface_id: int) -> Interface | None:
            if interface_id not in interfaces:
                # Mostly an interface of a service already read; else (a wrong id) the table.
                known = (i for info in services.values() if info for i in info.interfaces)
                found = next((i for i in known if i.id == interface_id), None)
                if found is None:
                    row = self.services.interface(interface_id)
                    found = Interface.from_row(row) if row is not None else None
                interfaces[interface_id] = found
            return interfaces[interface_id]

        nodes = [NodeSpec(int(n.id or 0), n.peer_id, n.service_id, n.service_name,
                          dict(n.config or {})) for n in self.workflows.nodes(workflow_id)]
        edges = [EdgeSpec(int(c.id or 0), c.source_node_id, c.target_node_id,
                          c.source_interface_id, c.target_interface_id,
                          c.source_interface_type, c.target_interface_type,
                          c.destination_file_name)
                 for c in self.workflows.connections(workflow_id)]
        return compile_plan(workflow_id, workflow.name, nodes, edges,
                            own_peer_id=self.own_peer_id, service=service,
                            interface=interface, is_known_peer=self.is_known_peer,
                            defaults=replace(self.defaults, cache=bool(
                                (workflow.definition or {}).get("cache") is True)))
