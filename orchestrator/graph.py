"""Compile a workflow (nodes + connections) into an immutable, validated execution plan.

Pure: no database, no I/O. The caller hands in the workflow's rows as plain specs and two
look-ups (local services, local interfaces) and a known-peer check; a bad workflow raises
``InvalidInput`` with a message that names the node or connection at fault.

Wiring rules: a connection joins an *output* interface (STDOUT, STDERR, LOGS, MOUNT with function
OUTPUT/BOTH) of its source node's service to an *input* interface (STDIN, MOUNT with function
INPUT/BOTH, ENV, ARG) of its target node's service. An end names its interface by id, or by type
(the one interface of that type on that side; STDOUT, STDERR, LOGS and STDIN need none declared);
naming neither means STDOUT on the source side and STDIN on the target side. A DATA service is a
source whose one output is its file. Interfaces of a remote peer's service are taken as given:
the executing peer checks them.

A connection without a target node ends at the requesting node (the original web UI's "Local
Peer"): its output is a result of the workflow, delivered to the node that runs the workflow
(``PlanNode.deliveries``), under ``destination_file_name`` when one is given.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.errors import InvalidInput
from orchestrator.service_policy import PEER_ID
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import (
    ANY_MOUNT_OUTPUT,
    DATA_OUTPUT,
    TEXT_ONLY_INPUTS,
    TEXT_OUTPUTS,
    Cycle,
    Interface,
    can_input,
    can_output,
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
    target_node_id: int | None  # None: the requesting node
    source_interface_id: int | None = None
    target_interface_id: int | None = None
    source_interface_type: str | None = None
    target_interface_type: str | None = None
    destination_file_name: str | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    timeout: float = 300.0
    retry_count: int = 0
    retry_delay: float = 0.0
    cache: bool = False  # the workflow's default for nodes that do not say (``cache``)


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
class Delivery:
    """An output of a node delivered to the requesting node (a connection without a target)."""

    connection_id: int
    source_key: str
    file_name: str | None = None  # None: the output's own name


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
    deliveries: tuple[Delivery, ...] = ()
    # Take a result of the same job key instead of running (``flows.reuse``), when one is
    # signed by the service's own peer or one of ``cache_peers``.
    cache: bool = False
    cache_peers: tuple[str, ...] = ()
    # A node placed by content (``flows.placement``): its service is the one with
    # ``content_digest`` on any peer that offers it (``placed_any``) or on one of
    # ``placement``, in that order; each attempt goes to the next.
    content_digest: str = ""
    placement: tuple[str, ...] = ()
    placed_any: bool = False

    @property
    def placed(self) -> bool:
        return self.placed_any or bool(self.placement)

    @property
    def accepted_signers(self) -> tuple[str, ...]:
        """The peers whose receipts vouch for a cached result of this node."""
        return self.cache_peers or self.placement or (self.peer_id,)

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
            n["deliveries"] = tuple(Delivery(**d) for d in n.get("deliveries", ()))
            n["cache_peers"] = tuple(n.get("cache_peers", ()))
            n["placement"] = tuple(n.get("placement", ()))
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

    # Nodes: peer known, service present (or, placed by content, found when it runs).
    for n in nodes:
        peer = n.peer_id or own_peer_id
        if placement_of(n) is not None:
            services[n.id] = None
            continue
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
    deliveries: dict[int, list[Delivery]] = {n.id: [] for n in nodes}
    consumed: set[tuple[int, str]] = set()
    delivered: dict[tuple[int, str], int] = {}  # (node, output key) -> its delivery connection
    fed_by: dict[int, dict[tuple[str, str], int]] = {}  # target node -> fed-once input -> conn
    graph_edges: list[tuple[int, int]] = []
    for e in edges:
        where = f"Connection {e.id}"
        for end in (e.source_node_id, e.target_node_id):
            if end is not None and end not in by_id:
                raise InvalidInput(f"{where}: node {end} is not in this workflow")
        if e.source_node_id == e.target_node_id:
            raise InvalidInput(f"{where} joins {label(e.source_node_id)} to itself")
        for end in (e.source_node_id, e.target_node_id):
            if end is not None and placement_of(by_id[end]) is not None and (
                    e.source_interface_id if end == e.source_node_id
                    else e.target_interface_id) is not None:
                raise InvalidInput(f"{where}: {label(end)} is placed by content digest, and "
                                   "each peer numbers its interfaces its own way: name the "
                                   "interface by type (and path)")
        source_key = _source_key(where, e, services[e.source_node_id], interface, label)

        if e.target_node_id is None:
            _check_requester_end(where, e)
            key = (e.source_node_id, source_key)
            if key in delivered:
                raise InvalidInput(f"{where}: that output of {label(e.source_node_id)} is "
                                   "delivered to the requesting node already (connection "
                                   f"{delivered[key]})")
            delivered[key] = e.id
            deliveries[e.source_node_id].append(
                Delivery(e.id, source_key, e.destination_file_name))
            continue

        target_type, target_path = _target_end(where, e, services[e.target_node_id],
                                               interface, label)
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
                                     deliveries[node_id], defaults))
    return Plan(workflow_id, workflow_name, tuple(plan_nodes))


def _source_key(where: str, e: EdgeSpec, svc: ServiceInfo | None,
                interface: Callable[[int], Interface | None],
                label: Callable[[int], str]) -> str:
    """The key, in the source job's outputs, of the output the connection takes."""
    iface_id, kind = e.source_interface_id, e.source_interface_type
    if iface_id is None and kind is not None and not can_output(kind):
        raise InvalidInput(f"{where}: source interface type {kind} is not an output; connect "
                           "an output (STDOUT, STDERR, LOGS, MOUNT) to an input")
    if svc is not None and svc.service_type == ServiceType.DATA:
        if iface_id is not None:
            _own_interface(where, "source", iface_id, e.source_node_id, svc, interface, label)
        return DATA_OUTPUT
    if svc is None:  # a remote peer's service: its peer knows its interfaces
        if iface_id is not None:
            return f"#{iface_id}"
        if kind == InterfaceType.MOUNT:
            return ANY_MOUNT_OUTPUT
        return str(kind or InterfaceType.STDOUT)
    if iface_id is None:
        if kind is None:
            return str(InterfaceType.STDOUT)
        found = _by_type(where, "source", kind, e.source_node_id, svc, label)
        return found.output_key if found is not None else str(kind)
    iface = _own_interface(where, "source", iface_id, e.source_node_id, svc, interface, label)
    if not iface.is_output:
        raise InvalidInput(
            f"{where}: source interface {iface.id} ({iface.interface_type}) of "
            f"{label(e.source_node_id)} is an input; connect an output "
            "(STDOUT, STDERR, LOGS, MOUNT) to an input")
    _same_type(where, "source", iface, kind)
    return iface.output_key


def _target_end(where: str, e: EdgeSpec, svc: ServiceInfo | None,
                interface: Callable[[int], Interface | None],
                label: Callable[[int], str]) -> tuple[str | None, str]:
    """The type and path of the input the connection feeds (type None: a remote peer's
    interface, resolved there)."""
    node_id = int(e.target_node_id or 0)
    iface_id, kind = e.target_interface_id, e.target_interface_type
    if iface_id is None and kind is not None and not can_input(kind):
        raise InvalidInput(f"{where}: target interface type {kind} is not an input; connect "
                           "an output to an input (STDIN, MOUNT, ENV, ARG)")
    if svc is not None and svc.service_type == ServiceType.DATA:
        raise InvalidInput(f"{where}: {label(node_id)} is a DATA service and takes no input")
    if svc is None:
        if iface_id is not None:
            return None, ""
        return str(kind or InterfaceType.STDIN), ""
    if iface_id is None:
        if kind is None:
            return str(InterfaceType.STDIN), ""
        found = _by_type(where, "target", kind, node_id, svc, label)
        return (found.interface_type, found.path) if found is not None else (str(kind), "")
    iface = _own_interface(where, "target", iface_id, node_id, svc, interface, label)
    if not iface.is_input:
        raise InvalidInput(
            f"{where}: target interface {iface.id} ({iface.interface_type}) of "
            f"{label(node_id)} is an output; connect an output to an input "
            "(STDIN, MOUNT, ENV, ARG)")
    _same_type(where, "target", iface, kind)
    return iface.interface_type, iface.path


def _check_requester_end(where: str, e: EdgeSpec) -> None:
    """The requesting node takes a result as it is: on its one input, STDIN."""
    if e.target_interface_id is not None or e.target_interface_type not in (
            None, InterfaceType.STDIN):
        raise InvalidInput(f"{where} ends at the requesting node, whose one input is STDIN; "
                           "it takes no target interface id")


def _by_type(where: str, side: str, kind: str, node_id: int, svc: ServiceInfo,
             label: Callable[[int], str]) -> Interface | None:
    """The service's one interface of this type on this side; None where a process has one
    without declaring it (STDOUT, STDERR, LOGS; STDIN)."""
    output = side == "source"
    found = [i for i in svc.interfaces if i.interface_type == kind
             and (i.is_output if output else i.is_input)]
    what = "output" if output else "input"
    if len(found) > 1:
        raise InvalidInput(f"{where}: {label(node_id)} has {len(found)} {kind} {what}s; "
                           f"name one by {side}_interface_id")
    if found:
        return found[0]
    if (kind in TEXT_OUTPUTS) if output else kind == InterfaceType.STDIN:
        return None
    raise InvalidInput(f"{where}: {label(node_id)} has no {kind} {what}")


def _same_type(where: str, side: str, iface: Interface, kind: str | None) -> None:
    if kind is not None and kind != iface.interface_type:
        raise InvalidInput(f"{where}: {side} interface {iface.id} is {iface.interface_type}, "
                           f"not {kind}")


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


ANY = "any"
MAX_PLACEMENT = 16
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def placement_of(n: NodeSpec) -> tuple[str, tuple[str, ...]] | None:
    """A node placed by content: (its service's content digest, the peers in order, or
    ("any",)); None for a node of one service on one peer. InvalidInput when the config says
    it wrongly."""
    cfg = n.config or {}
    where = cfg.get("placement")
    if where is None:
        return None
    node = f"Node {n.id}: " if n.id else ""
    digest = cfg.get("service_digest")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise InvalidInput(f'{node}a placement needs config.service_digest: the service\'s '
                           'content digest (sha256:<64 hex digits>)')
    if where == ANY:
        return digest, (ANY,)
    if not isinstance(where, list) or not 0 < len(where) <= MAX_PLACEMENT or not all(
            isinstance(p, str) and PEER_ID.match(p.lower()) for p in where):
        raise InvalidInput(f'{node}config.placement is "any" or a list of 1 to '
                           f"{MAX_PLACEMENT} peer ids")
    return digest, tuple(dict.fromkeys(p.lower() for p in where))


def _plan_node(n: NodeSpec, info: ServiceInfo | None, own_peer_id: str,
               inputs: list[PlanInput], consumed: set[tuple[int, str]],
               deliveries: list[Delivery], defaults: Defaults) -> PlanNode:
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
    cache = cfg.get("cache", defaults.cache)
    peers = cfg.get("cache_peers") or []
    if not isinstance(cache, bool):
        raise InvalidInput(f"Node {n.id}: cache must be true or false")
    if not isinstance(peers, list) or len(peers) > 64 or not all(
            isinstance(p, str) and PEER_ID.match(p.lower()) for p in peers):
        raise InvalidInput(f"Node {n.id}: cache_peers must be a list of at most 64 peer ids")
    placed = placement_of(n)
    retries = int(retry if retry is not None else defaults.retry_count)
    if placed is not None:
        # Each attempt goes to the next peer: as many as there are (three for "any").
        retries = max(retries, 2 if placed[1] == (ANY,) else len(placed[1]) - 1)
    return PlanNode(
        node_id=n.id,
        peer_id="" if placed is not None else n.peer_id or own_peer_id,
        local=info is not None,
        service_id=int(n.service_id or 0),
        service_name=n.service_name or (info.name if info else ""),
        service_type=info.service_type if info else "",
        upstream=tuple(sorted({i.source_node_id for i in inputs})),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        timeout=float(timeout or defaults.timeout),
        retry_count=retries,
        retry_delay=float(cfg.get("retry_delay") or defaults.retry_delay),
        entrypoint=_words(cfg.get("entrypoint")),
        cmd=_words(cfg.get("cmd")),
        env=tuple(sorted((str(k), str(v)) for k, v in env.items())),
        args=tuple(str(a) for a in cfg.get("args") or ()),
        stdin=cfg.get("stdin"),
        deliveries=tuple(deliveries),
        cache=cache,
        cache_peers=tuple(p.lower() for p in peers),
        content_digest=placed[0] if placed is not None else "",
        placement=placed[1] if placed is not None and placed[1] != (ANY,) else (),
        placed_any=placed is not None and placed[1] == (ANY,),
    )
