"""The interface type, what may feed what, and the order of steps: one set of wiring rules.

The node's workflow compiler (``orchestrator.graph``) and the Python workflow API
(``flows.client.define``) both use this module, so a workflow that the client accepts as it is
built is one the node compiles, with the same words when it is not. Pure: it imports nothing but
the standard library, ``orchestrator.states`` and ``orchestrator.errors``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.errors import InvalidInput
from orchestrator.states import InterfaceType

TEXT_OUTPUTS = frozenset({InterfaceType.STDOUT, InterfaceType.STDERR, InterfaceType.LOGS})
TEXT_INPUTS = frozenset({InterfaceType.STDIN, InterfaceType.ENV, InterfaceType.ARG})
# Inputs that take their value as text: a file tree (MOUNT) or a DATA file cannot feed them.
TEXT_ONLY_INPUTS = frozenset({InterfaceType.ENV, InterfaceType.ARG})
# Inputs one connection at most may feed (ENV: per name): a second would replace the first.
# An ARG may repeat (``-i a -i b``), and several outputs may fill one MOUNT directory.
FED_ONCE = frozenset({InterfaceType.STDIN, InterfaceType.ENV})
MOUNT_FUNCTIONS = frozenset({"", "INPUT", "OUTPUT", "BOTH"})
# The output of a DATA service node: its file.
DATA_OUTPUT = "DATA"
# The one MOUNT output of a remote peer's service named by type alone: the job's outputs say
# which (see ``pick_output``).
ANY_MOUNT_OUTPUT = "MOUNT:*"

Node = TypeVar("Node")


def can_output(kind: str, mount_function: str | None = None) -> bool:
    """Whether an interface of this kind produces an output. ``mount_function`` None: not
    known yet (the client, before the node has said), so a MOUNT may be either."""
    if kind == InterfaceType.MOUNT:
        return mount_function is None or mount_function in ("OUTPUT", "BOTH")
    return kind in TEXT_OUTPUTS


def can_input(kind: str, mount_function: str | None = None) -> bool:
    """Whether an interface of this kind takes an input (see ``can_output``)."""
    if kind == InterfaceType.MOUNT:
        return mount_function is None or mount_function in ("", "INPUT", "BOTH")
    return kind in TEXT_INPUTS


def output_key(kind: str, path: str = "") -> str:
    """The key of an output in a job's results: its kind, or ``MOUNT:<path>``."""
    if kind == InterfaceType.MOUNT:
        return f"MOUNT:{path}"
    return str(kind)


def pick_output(outputs: Mapping[str, Any], key: str) -> Any | None:
    """The output of this key among a job's ``outputs``; for ``ANY_MOUNT_OUTPUT``, its one
    MOUNT output (None when it has none or several)."""
    if key != ANY_MOUNT_OUTPUT:
        return outputs.get(key)
    mounts = [v for k, v in outputs.items() if k.startswith("MOUNT:")]
    return mounts[0] if len(mounts) == 1 else None


def output_named(outputs: Mapping[str, Any], key: str) -> str | None:
    """The key of the output (``KIND`` or ``KIND:path``, not a ``#<id>`` alias) that ``key``
    names among a job's ``outputs`` (whose values have a ``sha256``): itself, or the one output
    with the digest of the alias or ``ANY_MOUNT_OUTPUT`` it is (None: none, or not one)."""
    if key in outputs and not key.startswith("#"):
        return key
    ref = pick_output(outputs, key)
    if ref is None:
        return None
    same = [k for k, v in outputs.items() if not k.startswith("#") and v.sha256 == ref.sha256]
    return same[0] if len(same) == 1 else None


def validate_destination_file_name(value: Any) -> str | None:
    """A plain file name (no directory, no ``.``/``..``, no control characters, at most 255
    bytes), trimmed; empty: None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("destination_file_name must be a string")
    name = value.strip()
    if not name:
        return None
    if (name in (".", "..") or "/" in name or "\\" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or len(name.encode()) > 255):
        raise InvalidInput("destination_file_name must be a plain file name (no '/', '\\', "
                           "'.' or '..', no control characters, at most 255 bytes)")
    return name


def normalize_mount(path: str) -> str:
    """A MOUNT path as interfaces are compared: stripped, without a trailing slash."""
    path = (path or "").strip()
    return path.rstrip("/") or path


def fed_once_key(kind: str | None, path: str = "") -> tuple[str, str] | None:
    """What one connection at most may feed, for an input of this kind (None: no limit)."""
    if kind in FED_ONCE:
        return (str(kind), path if kind != InterfaceType.STDIN else "")
    return None


def carries_text(source_key: str) -> bool:
    """Whether the output of this key (see ``output_key``) may feed a text-only input."""
    return not (source_key.startswith("MOUNT:") or source_key == DATA_OUTPUT)


@dataclass(frozen=True, slots=True)
class Interface:
    """An interface of a service: what a client declares, what detection suggests, and, once
    stored, a row's values (``id`` and ``service_id`` set)."""

    interface_type: str
    path: str = ""
    mount_function: str = ""
    description: str = ""
    id: int | None = None
    service_id: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> Interface:
        """From anything with a stored interface's columns (the table row, mostly)."""
        return cls(str(row.interface_type), row.path or "", row.mount_function or "",
                   row.description or "", int(row.id or 0), int(row.service_id))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Interface:
        """An interface as a client gives it, validated (InvalidInput naming the field)."""
        kind = str(raw.get("interface_type", "")).strip().upper()
        if kind not in InterfaceType.__members__:
            raise InvalidInput(f"Invalid interface_type '{raw.get('interface_type')}': use one of "
                               + ", ".join(InterfaceType))
        path = str(raw.get("path") or "")
        function = str(raw.get("mount_function") or "").strip().upper()
        if function not in MOUNT_FUNCTIONS:
            raise InvalidInput(f"Invalid mount_function '{function}': use INPUT, OUTPUT or BOTH")
        itype = InterfaceType(kind)
        if itype in (InterfaceType.MOUNT, InterfaceType.ENV, InterfaceType.ARG) and not path:
            raise InvalidInput(f"A {itype} interface needs a path")
        if itype is InterfaceType.MOUNT and not path.startswith("/"):
            raise InvalidInput(f"MOUNT path must be absolute inside the container: '{path}'")
        if itype is InterfaceType.MOUNT and not function:
            function = "INPUT"
        return cls(itype, path, function, str(raw.get("description") or ""))

    @property
    def is_output(self) -> bool:
        return can_output(self.interface_type, self.mount_function)

    @property
    def is_input(self) -> bool:
        return can_input(self.interface_type, self.mount_function)

    @property
    def output_key(self) -> str:
        """The key of this output in a JobResult's ``outputs``."""
        return output_key(self.interface_type, self.path)

    @property
    def key(self) -> tuple[str, str]:
        """What makes two declared interfaces the same one."""
        return (str(self.interface_type), self.path)

    def to_dict(self) -> dict[str, str]:
        """As a client declares it (and as a suggestion is shown)."""
        return {"interface_type": str(self.interface_type), "path": self.path,
                "mount_function": self.mount_function, "description": self.description}


class Cycle(ValueError):
    """The nodes on a cycle (not those merely downstream of one), in their given order."""

    def __init__(self, members: list[Any]) -> None:
        super().__init__(members)
        self.members = members


def topological_order(nodes: Sequence[Node], edges: Iterable[tuple[Node, Node]]) -> list[Node]:
    """``nodes`` so that every edge's source comes before its target: in rounds, each round the
    nodes whose sources are all placed, in their given order. Raises Cycle."""
    edge_list = list(edges)
    preds: dict[Node, set[Node]] = {n: set() for n in nodes}
    for src, dst in edge_list:
        preds[dst].add(src)
    order: list[Node] = []
    done: set[Node] = set()
    while len(order) < len(nodes):
        ready = [n for n in nodes if n not in done and preds[n] <= done]
        if not ready:
            raise Cycle(_on_a_cycle([n for n in nodes if n not in done], edge_list))
        order.extend(ready)
        done.update(ready)
    return order


def _on_a_cycle(remaining: list[Node], edges: list[tuple[Node, Node]]) -> list[Node]:
    """Of the nodes left unplaced, those on a cycle: drop, until none is left to drop, each
    one that feeds no other unplaced node."""
    left = list(remaining)
    changed = True
    while changed:
        changed = False
        for n in list(left):
            if not any(src == n and dst in left for src, dst in edges):
                left.remove(n)
                changed = True
    return left
