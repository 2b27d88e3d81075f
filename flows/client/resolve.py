"""Turn a workflow definition into the node and connection bodies of the REST API.

Pure: the services and their interfaces come in as data (a ``ServiceCatalog``), so every
reference is checked, and every error raised, before anything is sent to the node.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flows.client.errors import DefinitionError
from orchestrator.wiring import can_input, can_output, normalize_mount

if TYPE_CHECKING:
    from flows.client.define import Port, Step, Workflow
    from flows.client.node_client import NodeClient

X_SPACING, Y_SPACING = 260, 140


@dataclass
class ServiceCatalog:
    """This node's services (as GET /api/services lists them) and their interfaces by id."""

    local_peer_id: str
    services: list[dict[str, Any]]
    interfaces: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, client: NodeClient, workflow: Workflow) -> ServiceCatalog:
        """Fetch what ``workflow`` uses: the service list and each used service's interfaces."""
        catalog = cls(client.peer_id(), client.services())
        for step in workflow:
            if catalog.is_remote(step):
                continue
            service = catalog.find(step)
            sid = int(service["id"])
            if sid not in catalog.interfaces:
                catalog.interfaces[sid] = client.interfaces(sid)
        return catalog

    def is_remote(self, step: Step) -> bool:
        return bool(step.peer_id) and step.peer_id != self.local_peer_id

    def find(self, step: Step) -> dict[str, Any]:
        """The local service a step names, or an error listing the near names."""
        ref = step.service
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            sid = int(ref)
            for service in self.services:
                if int(service["id"]) == sid:
                    return service
            raise DefinitionError(f"step '{step.name}': no service with id {sid} on this node")
        matches = [s for s in self.services if s["name"] == ref]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(str(s["id"]) for s in matches)
            raise DefinitionError(f"step '{step.name}': {len(matches)} services are named "
                                  f"'{ref}' (ids {ids}); refer to one by id")
        names = sorted({str(s["name"]) for s in self.services})
        near = difflib.get_close_matches(str(ref), names, n=5, cutoff=0.5)
        near += [n for n in names if str(ref).lower() in n.lower() and n not in near][:5]
        if near:
            hint = "did you mean: " + ", ".join(near[:5])
        elif names:
            hint = "services here: " + ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
        else:
            hint = "this node has no services"
        raise DefinitionError(f"step '{step.name}': no service named '{ref}' on this node "
                              f"({hint})")


@dataclass(frozen=True)
class NodeBody:
    step: str
    body: dict[str, Any]


@dataclass(frozen=True)
class ConnectionBody:
    source_step: str
    source_interface_id: int
    target_step: str | None  # None: the node that runs the workflow
    target_interface_id: int | None
    destination_file_name: str | None = None

    def body(self, node_ids: dict[str, int]) -> dict[str, Any]:
        """The connection as ``POST /api/workflows/{id}/connections`` takes it."""
        out: dict[str, Any] = {
            "source_node_id": node_ids[self.source_step],
            "source_interface_id": self.source_interface_id,
            "target_node_id": node_ids[self.target_step] if self.target_step else None,
            "target_interface_id": self.target_interface_id}
        if self.destination_file_name is not None:
            out["destination_file_name"] = self.destination_file_name
        return out


@dataclass(frozen=True)
class Resolved:
    nodes: list[NodeBody]
    connections: list[ConnectionBody]


def resolve(workflow: Workflow, catalog: ServiceCatalog) -> Resolved:
    workflow.validate()
    levels = workflow.levels()
    rows: dict[int, int] = {}
    nodes: list[NodeBody] = []
    services: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for step in workflow.order():
        if catalog.is_remote(step):
            sid, label, interfaces = _remote_service(step)
            peer_id = step.peer_id or ""
        else:
            service = catalog.find(step)
            sid, label = int(service["id"]), str(service["name"])
            interfaces = catalog.interfaces.get(sid, service.get("interfaces") or [])
            peer_id = ""
        services[step.name] = (f"service '{label}' (id {sid})", interfaces)
        level = levels[step.name]
        row = rows.get(level, 0)
        rows[level] = row + 1
        nodes.append(NodeBody(step.name, {
            "node_type": "SERVICE",
            "peer_id": peer_id,
            "service_id": sid,
            "service_name": "" if peer_id else label,
            "config": dict(step.config),
            "gui_props": {"label": step.name,
                          "position": {"x": level * X_SPACING, "y": row * Y_SPACING}},
        }))
    connections = []
    for edge in workflow.edges:
        src = find_interface(edge.source, *services[edge.source.step.name], as_output=True)
        dst = find_interface(edge.target, *services[edge.target.step.name], as_output=False)
        connections.append(ConnectionBody(edge.source.step.name, src, edge.target.step.name, dst))
    for delivery in workflow.deliveries:
        src = find_interface(delivery.source, *services[delivery.source.step.name],
                             as_output=True)
        connections.append(ConnectionBody(delivery.source.step.name, src, None, None,
                                          delivery.file_name))
    return Resolved(nodes, connections)


def find_interface(port: Port, label: str, interfaces: list[dict[str, Any]], *,
                   as_output: bool) -> int:
    """The id of the interface ``port`` stands for, or an error naming service and interface."""
    kind = port.kind
    candidates = [i for i in interfaces if str(i.get("interface_type", "")).upper() == kind]
    if kind == "MOUNT":
        candidates = [i for i in candidates
                      if normalize_mount(str(i.get("path") or "")) == port.path]
        # An unset function is not known here (a remote peer's listing): either role.
        fits = can_output if as_output else can_input
        fitting = [i for i in candidates
                   if fits(kind, str(i.get("mount_function") or "").upper() or None)]
        if candidates and not fitting:
            function = str(candidates[0].get("mount_function")).upper()
            role = "an output" if as_output else "an input"
            raise DefinitionError(f"step '{port.step.name}': mount {port.path} of {label} is an "
                                  f"{function} mount, it cannot be {role}")
        candidates = fitting
    elif kind in ("ENV", "ARG"):
        candidates = [i for i in candidates if str(i.get("path") or "").strip() == port.path]
    if not candidates:
        shown = f"{kind} {port.path}" if port.path else kind
        have = ", ".join(describe(i) for i in interfaces) or "none"
        raise DefinitionError(f"step '{port.step.name}': {label} has no {shown} interface "
                              f"(it has: {have})")
    iid = candidates[0].get("id")
    if iid is None:
        raise DefinitionError(f"step '{port.step.name}': interface {describe(candidates[0])} "
                              f"of {label} has no id")
    return int(iid)


def describe(interface: dict[str, Any]) -> str:
    kind = str(interface.get("interface_type", "?")).upper()
    path = str(interface.get("path") or "")
    return f"{kind} {path}" if path else kind


def _remote_service(step: Step) -> tuple[int, str, list[dict[str, Any]]]:
    ref = step.service
    if not (isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit())):
        raise DefinitionError(f"step '{step.name}': a service on peer {step.peer_id} must be "
                              "given by id (this node cannot look up another peer's names)")
    if step.interfaces is None:
        raise DefinitionError(f"step '{step.name}': list the interfaces of service {ref} on "
                              f"peer {step.peer_id} (id, interface_type, path), as a service "
                              "search returns them")
    return int(ref), f"{ref}@{step.peer_id}", list(step.interfaces)
