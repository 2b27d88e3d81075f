"""Compile a workflow (nodes + connections) into an immutable, validated execution plan.

Pure: no database, no I/O. The caller hands in the workflow's rows as plain specs and two
look-ups (local services, local interfaces) and a known-peer check; a bad workflow raises
``InvalidInput`` with a message that names the node or connection at fault.

Wiring rules: a connection joins an *output* interface (STDOUT, STDERR, LOGS, MOUNT with function
OUTPUT/BOTH) of its source node's service to an *input* interface (STDIN, MOUNT with function
INPUT/BOTH, ENV, ARG) of its target node's service. A missing interface id means STDOUT on the
source side and STDIN on the target side. A DATA service is a source whose one output is its file.
Interfaces of a remote peer's service are taken as given: the executing peer checks them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.errors import InvalidInput
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import (
    DATA_OUTPUT,
    TEXT_ONLY_INPUTS,
    Cycle,
    Interface,
    carries_text,
    fed_once_key,
    topological_order,
)


# -- what goes in -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServiceInfo:
    id: int
    name: str
    service_type: str
    interfaces: tuple[Interface, ...] = ()
    timeout: float | None = None  # the service's own default, when it has one


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: int
    peer_id: str
    service_id: int | None
    service_name: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    id: int
    source_node_id: int
    target_node_id: int
    source_interface_id: int | None = None
    target_interface_id: int | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    timeout: float = 300.0
    retry_count: int = 0
    retry_delay: float = 0.0


# -- what comes out -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlanInput:
    """One upstream output feeding one input of a node."""

    connection_id: int
    source_node_id: int
    # Key in the upstream JobResult.outputs ("STDOUT", "MOUNT:/out", "DATA", or "#<iface id>"
    # when the source is a remote peer's interface whose type only that peer knows).
    source_key: str
    source_interface_id: int | None
    target_interface_id: int | None
    target_type: str | None  # None: a remote peer's interface, resolved there
    target_path: str = ""


@dataclass(frozen=True, slots=True)
class PlanOutput:
    interface_id: int
    key: str
    interface_type: str
    path: str = ""
    final: bool = True  # not wired onward: a result of the workflow


@dataclass(frozen=True, slots=True)
class PlanNode:
    node_id: int
    peer_id: str
    local: bool
    service_id: int
    service_name: str
    service_type: str  # "" for a remote service (known to its peer)
    upstream: tuple[int, ...]
    inputs: tuple[PlanInput, ...]
    outputs: tuple[PlanOutput, ...]
    timeout: float
    retry_count: int
    retry_delay: float = 0.0
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()
    stdin: str | None = None

    @property
    def label(self) -> str:
        return f"node {self.node_id} ({self.service_name})"


@dataclass(frozen=True, slots=True)
class Plan:
    workflow_id: int
    workflow_name: str
    nodes: tuple[PlanNode, ...]  # topological order

    def node(self, node_id: int) -> PlanNode:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    def downstream(self, node_id: int) -> set[int]:
        """Every node that depends, directly or not, on ``node_id``."""
        out: set[int] = set()
        frontier = {node_id}
        while frontier:
            nxt = {n.node_id for n in self.nodes if frontier & set(n.upstream)} - out
            out |= nxt
            frontier = nxt
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Plan:
        nodes = []
        for n in raw["nodes"]:
            n = dict(n)
            n["upstream"] = tuple(n["upstream"])
            n["inputs"] = tuple(PlanInput(**i) for i in n["inputs"])
            n["outputs"] = tuple(PlanOutput(**o) for o in n["outputs"])
            for key in ("entrypoint", "cmd"):
                n[key] = tuple(n[key]) if n[key] is not None else None
            n["env"] = tuple(tuple(kv) for kv in n["env"])
            n["args"] = tuple(n["args"])
            nodes.append(PlanNode(**n))
        return cls(raw["workflow_id"], raw["workflow_name"], tuple(nodes))


# -- the compiler -------------------------------------------------------------------------------
def _words(value: Any) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return tuple(shlex.split(value))
    return tuple(str(v) for v in value)


def compile_plan(
    workflow_id: int,
    workflow_name: str,
    nodes: Sequence[NodeSpec],
    edges: Sequence[EdgeSpec],
    *,
    own_peer_id: str,
    service: Callable[[int], ServiceInfo | None],
    interface: Callable[[int], Interface | None],
    is_known_peer: Callable[[str], bool] = lambda _p: False,
    defaults: Defaults = Defaults(),
) -> Plan:
    if not nodes:
        raise InvalidInput(f"Workflow {workflow_id} has no nodes")
    by_id = {n.id: n for n in nodes}
    services: dict[int, ServiceInfo | None] = {}

    def label(node_id: int) -> str:
        n = by_id[node_id]
        name = n.service_name or (services.get(node_id).name if services.get(node_id) else "")
        return f"node {node_id}" + (f" ({name})" if name else "")

    # Nodes: peer known, service present.
    for n in nodes:
        peer = n.peer_id or own_peer_id
        if n.service_id is None:
            raise InvalidInput(f"Node {n.id} has no service")
        if peer == own_peer_id:
            info = service(n.service_id)
            if info is None:
                raise InvalidInput(f"Node {n.id}: service {n.service_id} does not exist on this "
                                   "node")
            if info.service_type == ServiceType.RELAY:
                raise InvalidInput(f"Node {n.id}: service '{info.name}' is a relay service and "
                                   "cannot run as a job")
            services[n.id] = info
        else:
            if not is_known_peer(peer):
                raise InvalidInput(f"Node {n.id}: peer {peer} is not known")
            services[n.id] = None

    # Connections: ends exist, output -> input, interfaces of the right services.
    inputs: dict[int, list[PlanInput]] = {n.id: [] for n in nodes}
    consumed: set[tuple[int, str]] = set()
    fed_by: dict[int, dict[tuple[str, str], int]] = {}  # target node -> fed-once input -> conn
    graph_edges: list[tuple[int, int]] = []
    for e in edges:
        where = f"Connection {e.id}"
        for end in (e.source_node_id, e.target_node_id):
            if end not in by_id:
                raise InvalidInput(f"{where}: node {end} is not in this workflow")
        if e.source_node_id == e.target_node_id:
            raise InvalidInput(f"{where} joins {label(e.source_node_id)} to itself")
        src_svc, dst_svc = services[e.source_node_id], services[e.target_node_id]

        # Source end.
        src_iface: Interface | None = None
        if src_svc is not None and src_svc.service_type == ServiceType.DATA:
            source_key = DATA_OUTPUT
            if e.source_interface_id is not None:
                src_iface = _own_interface(where, "source", e.source_interface_id,
                                           e.source_node_id, src_svc, interface, label)
        elif src_svc is not None:
            if e.source_interface_id is None:
                source_key = str(InterfaceType.STDOUT)
            else:
                src_iface = _own_interface(where, "source", e.source_interface_id,
                                           e.source_node_id, src_svc, interface, label)
                if not src_iface.is_output:
                    raise InvalidInput(
                        f"{where}: source interface {src_iface.id} ({src_iface.interface_type}) "
                        f"of {label(e.source_node_id)} is an input; connect an output "
                        "(STDOUT, STDERR, LOGS, MOUNT) to an input")
                source_key = src_iface.output_key
        else:
            source_key = (f"#{e.source_interface_id}" if e.source_interface_id is not None
                          else str(InterfaceType.STDOUT))

        # Target end.
        if dst_svc is not None and dst_svc.service_type == ServiceType.DATA:
            raise InvalidInput(f"{where}: {label(e.target_node_id)} is a DATA service and takes "
                               "no input")
        target_type: str | None
        target_path = ""
        if dst_svc is None:
            target_type = None if e.target_interface_id is not None else str(InterfaceType.STDIN)
        elif e.target_interface_id is None:
            target_type = str(InterfaceType.STDIN)
        else:
            dst_iface = _own_interface(where, "target", e.target_interface_id,
                                       e.target_node_id, dst_svc, interface, label)
            if not dst_iface.is_input:
                raise InvalidInput(
                    f"{where}: target interface {dst_iface.id} ({dst_iface.interface_type}) of "
                    f"{label(e.target_node_id)} is an output; connect an output to an input "
                    "(STDIN, MOUNT, ENV, ARG)")
            target_type, target_path = dst_iface.interface_type, dst_iface.path

        if target_type in TEXT_ONLY_INPUTS and not carries_text(source_key):
            raise InvalidInput(f"{where}: a {target_type} input takes text; "
                               f"{source_key.split(':')[0]} output of "
                               f"{label(e.source_node_id)} is not text")
        once = fed_once_key(target_type, target_path)
        if once is not None:
            fed = fed_by.setdefault(e.target_node_id, {})
            if once in fed:
                what = " ".join(part for part in once if part)
                raise InvalidInput(f"{where}: {what} of {label(e.target_node_id)} already has "
                                   f"a source (connection {fed[once]})")
            fed[once] = e.id

        inputs[e.target_node_id].append(PlanInput(
            connection_id=e.id, source_node_id=e.source_node_id, source_key=source_key,
            source_interface_id=e.source_interface_id,
            target_interface_id=e.target_interface_id, target_type=target_type,
            target_path=target_path))
        consumed.add((e.source_node_id, source_key))
        graph_edges.append((e.source_node_id, e.target_node_id))

    ids = [n.id for n in nodes]
    try:
        order = topological_order(ids, graph_edges)
    except Cycle as cycle:
        raise InvalidInput("Workflow has a cycle through "
                           + ", ".join(label(m) for m in sorted(cycle.members))) from None

    plan_nodes = []
    for node_id in order:
        n = by_id[node_id]
        info = services[node_id]
        plan_nodes.append(_plan_node(n, info, own_peer_id, inputs[node_id], consumed,
                                     defaults))
    return Plan(workflow_id, workflow_name, tuple(plan_nodes))


def _own_interface(where: str, side: str, interface_id: int, node_id: int, svc: ServiceInfo,
                   interface: Callable[[int], Interface | None],
                   label: Callable[[int], str]) -> Interface:
    iface = interface(interface_id)
    if iface is None:
        raise InvalidInput(f"{where}: {side} interface {interface_id} does not exist")
    if iface.service_id != svc.id:
        raise InvalidInput(f"{where}: {side} interface {interface_id} belongs to service "
                           f"{iface.service_id}, not to service '{svc.name}' of {label(node_id)}")
    return iface


def _plan_node(n: NodeSpec, info: ServiceInfo | None, own_peer_id: str,
               inputs: list[PlanInput], consumed: set[tuple[int, str]],
               defaults: Defaults) -> PlanNode:
    cfg = dict(n.config or {})
    outputs: list[PlanOutput] = []
    if info is not None:
        for iface in info.interfaces:
            if iface.is_output and info.service_type != ServiceType.DATA:
                key = iface.output_key
                outputs.append(PlanOutput(iface.id, key, iface.interface_type, iface.path,
                                          final=(n.id, key) not in consumed))
    timeout = cfg.get("timeout") or (info.timeout if info and info.timeout else None)
    retry = cfg.get("retry_count")
    env = cfg.get("env") or {}
    return PlanNode(
        node_id=n.id,
        peer_id=n.peer_id or own_peer_id,
        local=info is not None,
        service_id=int(n.service_id or 0),
        service_name=n.service_name or (info.name if info else ""),
        service_type=info.service_type if info else "",
        upstream=tuple(sorted({i.source_node_id for i in inputs})),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        timeout=float(timeout or defaults.timeout),
        retry_count=int(retry if retry is not None else defaults.retry_count),
        retry_delay=float(cfg.get("retry_delay") or defaults.retry_delay),
        entrypoint=_words(cfg.get("entrypoint")),
        cmd=_words(cfg.get("cmd")),
        env=tuple(sorted((str(k), str(v)) for k, v in env.items())),
        args=tuple(str(a) for a in cfg.get("args") or ()),
        stdin=cfg.get("stdin"),
    )
