"""Define a workflow in Python: steps that run services, wired output to input.

    with Workflow("text-pipeline", "generate, upper-case, count") as wf:
        gen = wf.step("generate")
        upper = wf.step("upper", timeout=30)
        count = wf.step("count", retry_count=1)
        gen.stdout >> upper.stdin
        upper.stdout >> count.stdin

    wf.register(client)          # create or replace the workflow on the node, by name
    result = wf.run(client)      # execute and wait; result.output("count") is its stdout

Services are named (looked up on the node when the workflow is registered) or given by id.
Everything that can be checked without the node is checked as the workflow is built: wiring an
input to an input, an output to an output, feeding one input twice, and cycles. The same
definition reads from and writes to a plain dict (``to_dict``/``from_dict``), which is the
YAML/JSON file format of ``remote-network workflow apply``.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flows.client.errors import DefinitionError
from orchestrator.errors import InvalidInput
from orchestrator.states import InterfaceType
from orchestrator.wiring import (
    TEXT_INPUTS,
    TEXT_ONLY_INPUTS,
    TEXT_OUTPUTS,
    Cycle,
    can_input,
    can_output,
    carries_text,
    fed_once_key,
    normalize_mount,
    output_key,
    topological_order,
    validate_destination_file_name,
)

if TYPE_CHECKING:
    from flows.client.node_client import NodeClient
    from flows.client.submit import Execution

__all__ = ["DefinitionError", "Edge", "Port", "Step", "Workflow", "step"]

PORT_KINDS = frozenset({*TEXT_OUTPUTS, *TEXT_INPUTS, InterfaceType.MOUNT})
# Node config keys, as the engine reads them from a workflow node's ``config``.
CONFIG_KEYS = ("timeout", "retry_count", "entrypoint", "cmd", "env", "args")
STEP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
EDGE = re.compile(r"^\s*(?P<src>\S+)\s*->\s*(?P<dst>\S+)\s*$")
PORT = re.compile(
    r"^(?P<step>[A-Za-z_][A-Za-z0-9_-]*)\.(?P<kind>[A-Za-z]+)(?:\((?P<arg>[^()]*)\))?$")

_current: contextvars.ContextVar[Workflow | None] = contextvars.ContextVar(
    "remote_network_workflow", default=None)


@dataclass(eq=False)
class Port:
    """One end of a wire: an interface of a step, by kind (and path for MOUNT, ENV, ARG)."""

    step: Step
    kind: str
    path: str = ""

    @property
    def can_output(self) -> bool:
        return can_output(self.kind)  # a MOUNT's function is the node's to say

    @property
    def can_input(self) -> bool:
        return can_input(self.kind)

    def __rshift__(self, other: Port) -> Edge:
        if not isinstance(other, Port):
            return NotImplemented
        return self.step.workflow.connect(self, other)

    def key(self) -> tuple[str, str, str]:
        return (self.step.name, self.kind, self.path)

    def __str__(self) -> str:
        suffix = f"({self.path})" if self.path else ""
        return f"{self.step.name}.{self.kind.lower()}{suffix}"


@dataclass(frozen=True, eq=False)
class Edge:
    source: Port
    target: Port

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}"


@dataclass(frozen=True)
class Delivery:
    """An output delivered to the node that runs the workflow (the original web UI's "Local
    Peer"), under ``file_name`` when one is given."""

    source: Port
    file_name: str | None = None

    def to_item(self) -> str | dict[str, str]:
        return str(self.source) if self.file_name is None else {"from": str(self.source),
                                                                 "as": self.file_name}


class Step:
    """A workflow node: one service, on this peer or another, with its run config."""

    def __init__(self, workflow: Workflow, name: str, service: str | int, *,
                 peer_id: str | None = None, interfaces: list[dict[str, Any]] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.workflow = workflow
        self.name = name
        self.service = service
        self.peer_id = peer_id or None
        self.interfaces = interfaces
        self.config = dict(config or {})

    @property
    def stdout(self) -> Port:
        return Port(self, "STDOUT")

    @property
    def stderr(self) -> Port:
        return Port(self, "STDERR")

    @property
    def logs(self) -> Port:
        return Port(self, "LOGS")

    @property
    def stdin(self) -> Port:
        return Port(self, "STDIN")

    def mount(self, path: str) -> Port:
        path = normalize_mount(path)
        if not path.startswith("/"):
            raise DefinitionError(f"step '{self.name}': mount path must be absolute, "
                                  f"got '{path}'")
        return Port(self, "MOUNT", path)

    def env(self, name: str) -> Port:
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise DefinitionError(f"step '{self.name}': '{name}' is not an environment "
                                  "variable name")
        return Port(self, "ENV", name)

    def arg(self, flag: str) -> Port:
        if not flag or not flag.strip():
            raise DefinitionError(f"step '{self.name}': an ARG port needs its argument name")
        return Port(self, "ARG", flag.strip())

    def port(self, kind: str, path: str = "") -> Port:
        """A port by kind name (``stdout``, ``mount`` with a path, ...), as files spell it."""
        kind = kind.upper()
        if kind not in PORT_KINDS:
            raise DefinitionError(f"step '{self.name}': unknown interface '{kind.lower()}' "
                                  "(use stdin, stdout, stderr, logs, mount(PATH), env(NAME) "
                                  "or arg(NAME))")
        if kind == "MOUNT":
            return self.mount(path)
        if kind == "ENV":
            return self.env(path)
        if kind == "ARG":
            return self.arg(path)
        if path:
            raise DefinitionError(f"step '{self.name}': {kind.lower()} takes no argument")
        return Port(self, kind)

    def __repr__(self) -> str:
        return f"Step({self.name!r}, service={self.service!r})"


@dataclass
class Workflow:
    """A workflow definition: steps and the wires between them."""

    name: str
    description: str = ""
    steps: dict[str, Step] = field(default_factory=dict, init=False)
    edges: list[Edge] = field(default_factory=list, init=False)
    deliveries: list[Delivery] = field(default_factory=list, init=False)
    # Set by ``register``: the workflow's id on the node and each step's node id.
    id: int | None = field(default=None, init=False)
    node_ids: dict[str, int] = field(default_factory=dict, init=False)
    _tokens: list[contextvars.Token[Workflow | None]] = field(
        default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise DefinitionError("a workflow needs a name")
        self.name = self.name.strip()

    # -- building ------------------------------------------------------------------------------
    def step(self, service: str | int, *, name: str | None = None, peer_id: str | None = None,
             interfaces: list[dict[str, Any]] | None = None, timeout: float | None = None,
             retry_count: int | None = None, entrypoint: str | list[str] | None = None,
             cmd: str | list[str] | None = None, env: dict[str, str] | None = None,
             args: list[str] | None = None) -> Step:
        """Add a step running ``service`` (a name, or an id) and return it.

        ``name`` defaults to the service name (``-2``, ``-3``... when repeated). A step on
        another peer names its service by id and lists that service's ``interfaces`` (as a
        service search returns them), since this node cannot look them up.
        """
        if isinstance(service, bool) or not isinstance(service, (str, int)):
            raise DefinitionError(f"service must be a name or an id, got {service!r}")
        if isinstance(service, str) and not service.strip():
            raise DefinitionError("service name is empty")
        config = {key: value for key, value in (
            ("timeout", timeout), ("retry_count", retry_count), ("entrypoint", entrypoint),
            ("cmd", cmd), ("env", env), ("args", args)) if value is not None}
        check_config(config, where=f"step '{name or service}'")
        step_name = name if name is not None else self._free_name(str(service))
        if not STEP_NAME.match(step_name):
            raise DefinitionError(f"step name '{step_name}' must start with a letter and hold "
                                  "only letters, digits, '-' and '_'")
        if step_name in self.steps:
            raise DefinitionError(f"workflow '{self.name}' already has a step '{step_name}'")
        step = Step(self, step_name, service.strip() if isinstance(service, str) else service,
                    peer_id=peer_id, interfaces=interfaces, config=config)
        self.steps[step_name] = step
        return step

    def _free_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]", "-", base)
        if not base or not base[0].isalpha():
            base = f"s-{base}"
        name, n = base, 1
        while name in self.steps:
            n += 1
            name = f"{base}-{n}"
        return name

    def connect(self, source: Port, target: Port) -> Edge:
        """Wire ``source`` (an output) to ``target`` (an input); ``a >> b`` does the same."""
        for port in (source, target):
            if port.step.workflow is not self or self.steps.get(port.step.name) is not port.step:
                raise DefinitionError(f"{port} belongs to another workflow")
        if not source.can_output:
            raise DefinitionError(f"cannot wire {source} -> {target}: {source} is an input")
        if not target.can_input:
            raise DefinitionError(f"cannot wire {source} -> {target}: {target} is an output")
        if target.kind in TEXT_ONLY_INPUTS and not carries_text(output_key(source.kind,
                                                                          source.path)):
            raise DefinitionError(f"cannot wire {source} -> {target}: a {target.kind} input "
                                  f"takes text; a {source.kind} output is not text")
        once = fed_once_key(target.kind, target.path)
        for edge in self.edges:
            if once is not None and edge.target.step is target.step \
                    and fed_once_key(edge.target.kind, edge.target.path) == once:
                raise DefinitionError(f"{target} is already fed by {edge.source}")
        if source.step is target.step:
            raise DefinitionError(f"cannot wire {source} -> {target}: a step cannot feed itself "
                                  f"(cycle: {source.step.name} -> {source.step.name})")
        path = self._path(target.step, source.step)
        if path:
            cycle = " -> ".join([source.step.name, *path])
            raise DefinitionError(f"cannot wire {source} -> {target}: it makes a cycle "
                                  f"({cycle})")
        edge = Edge(source, target)
        self.edges.append(edge)
        return edge

    def deliver(self, source: Port, *, as_name: str | None = None) -> Delivery:
        """Deliver ``source`` (an output) to the node that runs the workflow, as ``as_name``
        (a plain file name) if given: the node fetches it from the peer that made it."""
        if source.step.workflow is not self or self.steps.get(source.step.name) is not source.step:
            raise DefinitionError(f"{source} belongs to another workflow")
        if not source.can_output:
            raise DefinitionError(f"cannot deliver {source}: it is an input")
        try:
            name = validate_destination_file_name(as_name)
        except InvalidInput as exc:
            raise DefinitionError(f"cannot deliver {source}: {exc.message}") from None
        if any(d.source.key() == source.key() for d in self.deliveries):
            raise DefinitionError(f"{source} is delivered already")
        delivery = Delivery(source, name)
        self.deliveries.append(delivery)
        return delivery

    def _path(self, start: Step, goal: Step) -> list[str]:
        """Step names along a path of existing edges from ``start`` to ``goal``, or []."""
        parents: dict[str, str | None] = {start.name: None}
        frontier = [start.name]
        while frontier:
            current = frontier.pop()
            if current == goal.name:
                path = [current]
                while (parent := parents[path[-1]]) is not None:
                    path.append(parent)
                return list(reversed(path))
            for edge in self.edges:
                nxt = edge.target.step.name
                if edge.source.step.name == current and nxt not in parents:
                    parents[nxt] = current
                    frontier.append(nxt)
        return []

    def __enter__(self) -> Workflow:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        _current.reset(self._tokens.pop())
        if exc_type is None:
            self.validate()

    # -- checking and ordering ---------------------------------------------------------------
    def validate(self) -> None:
        if not self.steps:
            raise DefinitionError(f"workflow '{self.name}' has no steps")
        self.order()

    def order(self) -> list[Step]:
        """Steps in the node's order (``orchestrator.wiring.topological_order``): each after
        the steps that feed it, ties in the order they were added."""
        try:
            names = topological_order(list(self.steps), [
                (e.source.step.name, e.target.step.name) for e in self.edges])
        except Cycle as cycle:
            raise DefinitionError(f"workflow '{self.name}' has a cycle through "
                                  + ", ".join(sorted(cycle.members))) from None
        return [self.steps[name] for name in names]

    def levels(self) -> dict[str, int]:
        """Each step's depth (longest path from a source step), for laying the graph out."""
        level: dict[str, int] = {}
        for step in self.order():
            level[step.name] = max((level[e.source.step.name] + 1 for e in self.edges
                                    if e.target.step is step), default=0)
        return level

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps.values())

    # -- the file format ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for step in self.steps.values():
            item: dict[str, Any] = {"service": step.service}
            if step.peer_id:
                item["peer_id"] = step.peer_id
            if step.interfaces is not None:
                item["interfaces"] = step.interfaces
            item.update(step.config)
            nodes[step.name] = item
        out = {"name": self.name, "description": self.description, "nodes": nodes,
               "edges": [str(e) for e in self.edges]}
        if self.deliveries:
            out["deliver"] = [d.to_item() for d in self.deliveries]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Workflow:
        """Read the file format (see ``to_dict``); errors name the node, edge or key."""
        if not isinstance(data, dict):
            raise DefinitionError("a workflow definition must be a mapping with name, nodes "
                                  "and edges")
        unknown = set(data) - {"name", "description", "nodes", "edges", "deliver"}
        if unknown:
            raise DefinitionError("unknown workflow keys: " + ", ".join(sorted(unknown)))
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError("the workflow needs a 'name'")
        wf = cls(name, str(data.get("description") or ""))
        for step_name, spec in _node_items(data.get("nodes")):
            _add_node(wf, step_name, spec)
        edges = data.get("edges") or []
        if not isinstance(edges, list):
            raise DefinitionError("'edges' must be a list like ['gen.stdout -> upper.stdin']")
        for raw in edges:
            wf.connect(*parse_edge(wf, raw))
        deliver = data.get("deliver") or []
        if not isinstance(deliver, list):
            raise DefinitionError("'deliver' must be a list like ['upper.stdout'] or "
                                  "[{from: upper.stdout, as: result.txt}]")
        for raw in deliver:
            if isinstance(raw, dict) and set(raw) <= {"from", "as"} and "from" in raw:
                wf.deliver(parse_port(wf, str(raw["from"])),
                           as_name=None if raw.get("as") is None else str(raw["as"]))
            elif isinstance(raw, str):
                wf.deliver(parse_port(wf, raw))
            else:
                raise DefinitionError(f"deliver item {raw!r} must be 'STEP.port' or "
                                      "{from: STEP.port, as: NAME}")
        wf.validate()
        return wf

    # -- talking to a node -------------------------------------------------------------------
    def register(self, client: NodeClient) -> int:
        """Create this workflow on the node, or replace the one with the same name (same id)."""
        from flows.client.submit import register

        return register(self, client)

    def run(self, client: NodeClient, *, wait: bool = True, timeout: float = 600.0,
            poll_interval: float = 0.5, on_progress: Any = None) -> Execution:
        """Execute (registering first if needed); with ``wait``, until it ends or ``timeout``."""
        from flows.client.submit import run

        if self.id is None:
            self.register(client)
        assert self.id is not None
        return run(client, self.id, wait=wait, timeout=timeout, poll_interval=poll_interval,
                   on_progress=on_progress)


def step(service: str | int, **options: Any) -> Step:
    """Add a step to the workflow of the enclosing ``with Workflow(...)`` block."""
    wf = _current.get()
    if wf is None:
        raise DefinitionError("step() outside a 'with Workflow(...)' block: use wf.step()")
    return wf.step(service, **options)


def check_config(config: dict[str, Any], *, where: str) -> None:
    """Type checks of a step's config, matching what the node accepts."""
    for key in ("timeout", "retry_count"):
        value = config.get(key)
        if value is None:
            continue
        ok_types = (int, float) if key == "timeout" else (int,)
        if isinstance(value, bool) or not isinstance(value, ok_types) or value < 0:
            raise DefinitionError(f"{where}: {key} must be a non-negative number")
    for key in ("entrypoint", "cmd"):
        value = config.get(key)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise DefinitionError(f"{where}: {key} must be a string or a list of strings")
    env = config.get("env")
    if env is not None and not (isinstance(env, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise DefinitionError(f"{where}: env must map names to strings")
    args = config.get("args")
    if args is not None and not (isinstance(args, list) and all(isinstance(a, str)
                                                                 for a in args)):
        raise DefinitionError(f"{where}: args must be a list of strings")


def parse_port(wf: Workflow, text: str) -> Port:
    m = PORT.match(text.strip())
    if not m:
        raise DefinitionError(f"'{text}' is not a port: write STEP.stdout, STEP.stdin, "
                              "STEP.mount(/path), STEP.env(NAME) or STEP.arg(NAME)")
    step_ = wf.steps.get(m["step"])
    if step_ is None:
        known = ", ".join(wf.steps) or "none"
        raise DefinitionError(f"'{text}': no step named '{m['step']}' (steps: {known})")
    return step_.port(m["kind"], (m["arg"] or "").strip())


def parse_edge(wf: Workflow, raw: Any) -> tuple[Port, Port]:
    if isinstance(raw, dict) and set(raw) == {"from", "to"}:
        return parse_port(wf, str(raw["from"])), parse_port(wf, str(raw["to"]))
    m = EDGE.match(raw) if isinstance(raw, str) else None
    if not m:
        raise DefinitionError(f"edge {raw!r} must look like 'gen.stdout -> upper.stdin'")
    return parse_port(wf, m["src"]), parse_port(wf, m["dst"])


def _node_items(nodes: Any) -> list[tuple[str | None, Any]]:
    if isinstance(nodes, dict):
        return list(nodes.items())
    if isinstance(nodes, list):
        items: list[tuple[str | None, Any]] = []
        for spec in nodes:
            if not isinstance(spec, dict):
                raise DefinitionError(f"node {spec!r} must be a mapping with a 'service'")
            spec = dict(spec)
            items.append((spec.pop("name", None), spec))
        return items
    raise DefinitionError("'nodes' must be a mapping of step name to {service: ...}")


def _add_node(wf: Workflow, step_name: str | None, spec: Any) -> Step:
    where = f"node '{step_name}'" if step_name else "a node"
    if isinstance(spec, (str, int)) and not isinstance(spec, bool):
        spec = {"service": spec}
    if not isinstance(spec, dict) or "service" not in spec:
        raise DefinitionError(f"{where} needs a 'service' (a name or an id)")
    unknown = set(spec) - {"service", "peer_id", "interfaces", *CONFIG_KEYS}
    if unknown:
        raise DefinitionError(f"{where}: unknown keys " + ", ".join(sorted(unknown))
                              + " (allowed: service, peer_id, interfaces, "
                              + ", ".join(CONFIG_KEYS) + ")")
    interfaces = spec.get("interfaces")
    if interfaces is not None and not (isinstance(interfaces, list)
                                       and all(isinstance(i, dict) for i in interfaces)):
        raise DefinitionError(f"{where}: interfaces must be a list of mappings")
    options = {key: spec[key] for key in CONFIG_KEYS if key in spec}
    peer = spec.get("peer_id")
    return wf.step(spec["service"], name=None if step_name is None else str(step_name),
                   peer_id=str(peer) if peer else None, interfaces=interfaces, **options)
