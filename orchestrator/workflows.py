"""Workflows as stored: the workflow row, its nodes, connections and UI state.

Compiling a workflow into a runnable plan is ``orchestrator.graph``'s job; this module keeps
the editable definition consistent (a node or connection always belongs to its workflow).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

from sqlmodel import Session, col, select

from orchestrator.db import Database
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.events import WORKFLOW_UPDATED, EventBus
from orchestrator.graph import NodeSpec, placement_of
from orchestrator.models import (
    Workflow,
    WorkflowConnection,
    WorkflowNode,
    WorkflowUIState,
    utcnow,
)
from orchestrator.service_policy import PEER_ID
from orchestrator.states import InterfaceType
from orchestrator.wiring import (
    can_input,
    can_output,
    fed_once_key,
    validate_destination_file_name,
)

log = logging.getLogger("remote_network.workflows")

NODE_TYPES = {"SERVICE"}
# A connection's columns beside its ids, as add_connection and update_connection take them.
CONNECTION_FIELDS = ("source_node_id", "source_interface_id", "source_interface_type",
                     "target_node_id", "target_interface_id", "target_interface_type",
                     "destination_file_name")
DEFAULT_UI_STATE: dict[str, Any] = {"zoom": 1.0, "pan_x": 0, "pan_y": 0}
# A change of a JSON column: the current value in, the new value out.
Edit = Callable[[dict[str, Any]], dict[str, Any]]
# Node config keys the engine understands, with their types.
NODE_CONFIG_KEYS: dict[str, tuple[type, ...]] = {
    "timeout": (int, float),
    "retry_count": (int,),
    "retry_delay": (int, float),
    "entrypoint": (str, list),
    "cmd": (str, list),
    "env": (dict,),
    "args": (list,),
    "stdin": (str,),
}


def validate_workflow_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("Workflow name is required")
    if len(name.strip()) > 200:
        raise InvalidInput("Workflow name is longer than 200 characters")
    return name.strip()


def validate_node_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise InvalidInput("config must be an object")
    for key, kinds in NODE_CONFIG_KEYS.items():
        if key in config and config[key] is not None:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise InvalidInput(f"config.{key} has the wrong type")
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidInput(f"config.{key} must be a finite number")
            if key in ("timeout", "retry_count", "retry_delay") and value < 0:
                raise InvalidInput(f"config.{key} must not be negative")
    if "cache" in config and not isinstance(config["cache"], bool):
        raise InvalidInput("config.cache must be true or false")
    peers = config.get("cache_peers")
    if peers is not None and (not isinstance(peers, list) or len(peers) > 64 or not all(
            isinstance(p, str) and PEER_ID.match(p.lower()) for p in peers)):
        raise InvalidInput("config.cache_peers must be a list of at most 64 peer ids")
    if "placement" in config:
        placement_of(NodeSpec(0, "", None, config=config))  # InvalidInput when it is wrong
    return config


class LocalServices(Protocol):
    """What the store reads of this node's services: a workflow node placed on this node must
    name one of them, and a connection's end named by interface id gets that interface's type."""

    def exists(self, service_id: int) -> bool: ...

    def interface(self, interface_id: int) -> Any | None: ...


class WorkflowStore:
    def __init__(self, db: Database, bus: EventBus, *, own_peer_id: str,
                 services: LocalServices) -> None:
        self.db = db
        self.bus = bus
        self.own_peer_id = own_peer_id
        self.services = services
        # Called with a workflow's id just before it is deleted (what hangs off it, such as its
        # schedules, is still there); a hook that fails does not stop the delete.
        self._on_delete: list[Callable[[int], None]] = []

    def before_delete(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(workflow_id)`` just before each workflow is deleted."""
        self._on_delete.append(hook)

    # -- workflows ---------------------------------------------------------------------------
    def list(self) -> list[Workflow]:
        with self.db.session() as s:
            return list(s.exec(select(Workflow).order_by(col(Workflow.id))))

    def get(self, workflow_id: int) -> Workflow:
        with self.db.session() as s:
            return self._require(s, workflow_id)

    def create(self, name: str, description: str = "",
               definition: dict[str, Any] | None = None) -> Workflow:
        workflow = Workflow(name=validate_workflow_name(name), description=description or "",
                            definition=definition or {})
        with self.db.session() as s:
            s.add(workflow)
            s.commit()
            s.refresh(workflow)
        self._changed("created", workflow.id)
        return workflow

    def update(self, workflow_id: int, name: str, description: str | None,
               definition: dict[str, Any] | None) -> Workflow:
        with self.db.session() as s:
            workflow = self._require(s, workflow_id)
            workflow.name = validate_workflow_name(name)
            if description is not None:
                workflow.description = description
            if definition is not None:
                workflow.definition = definition
            workflow.updated_at = utcnow()
            s.add(workflow)
            s.commit()
            s.refresh(workflow)
        self._changed("updated", workflow_id)
        return workflow

    def delete(self, workflow_id: int) -> None:
        with self.db.session() as s:
            self._require(s, workflow_id)
        for hook in self._on_delete:
            try:
                hook(workflow_id)
            except Exception:
                log.exception("workflow %s: a delete hook failed", workflow_id)
        with self.db.session() as s:
            s.delete(self._require(s, workflow_id))
            s.commit()
        self._changed("deleted", workflow_id)

    # -- nodes -------------------------------------------------------------------------------
    def nodes(self, workflow_id: int) -> list[WorkflowNode]:
        with self.db.session() as s:
            self._require(s, workflow_id)
            return list(s.exec(select(WorkflowNode).where(WorkflowNode.workflow_id == workflow_id)
                               .order_by(col(WorkflowNode.id))))

    def add_node(self, workflow_id: int, *, node_type: str = "SERVICE", peer_id: str = "",
                 service_id: int | None = None, service_name: str = "",
                 config: dict[str, Any] | None = None,
                 gui_props: dict[str, Any] | None = None,
                 card: dict[str, Any] | None = None) -> WorkflowNode:
        node_type = (node_type or "SERVICE").upper()
        if node_type not in NODE_TYPES:
            raise InvalidInput(f"Invalid node_type '{node_type}': use SERVICE")
        placed = "placement" in (config or {})
        if placed:
            service_id = None  # placed by content digest: each peer has its own
        elif service_id is None or isinstance(service_id, bool) or service_id <= 0:
            raise InvalidInput("service_id is required and must be a positive integer (or "
                               "config.placement with config.service_digest)")
        peer_id = (peer_id or "").strip() or self.own_peer_id
        if not placed and peer_id == self.own_peer_id and not self.services.exists(
                int(service_id or 0)):
            raise InvalidInput(f"Service {service_id} does not exist on this node")
        node = WorkflowNode(workflow_id=workflow_id, node_type=node_type, peer_id=peer_id,
                            service_id=service_id, service_name=service_name or "",
                            config=validate_node_config(config or {}), gui_props=gui_props or {},
                            card=card or {})
        with self.db.session() as s:
            self._require(s, workflow_id)
            s.add(node)
            self._touch(s, workflow_id)
            s.commit()
            s.refresh(node)
        self._changed("node_added", workflow_id)
        return node

    def delete_node(self, workflow_id: int, node_id: int) -> None:
        with self.db.session() as s:
            s.delete(self._require_node(s, workflow_id, node_id))
            self._touch(s, workflow_id)
            s.commit()
        self._changed("node_deleted", workflow_id)

    def update_node(self, workflow_id: int, node_id: int, *,
                    gui_props: Edit | None = None, config: Edit | None = None) -> WorkflowNode:
        """Change a node's GUI properties and config; each edit is given the current value and
        answers the new one, in the same transaction."""
        with self.db.session() as s:
            node = self._require_node(s, workflow_id, node_id)
            if gui_props is not None:
                props = gui_props(dict(node.gui_props or {}))
                if not isinstance(props, dict):
                    raise InvalidInput("gui_props must be an object")
                node.gui_props = props
            if config is not None:
                node.config = validate_node_config(config(dict(node.config or {})))
            s.add(node)
            self._touch(s, workflow_id)
            s.commit()
            s.refresh(node)
        self._changed("node_updated", workflow_id)
        return node

    # -- connections -------------------------------------------------------------------------
    def connections(self, workflow_id: int) -> list[WorkflowConnection]:
        with self.db.session() as s:
            self._require(s, workflow_id)
            return list(s.exec(select(WorkflowConnection)
                               .where(WorkflowConnection.workflow_id == workflow_id)
                               .order_by(col(WorkflowConnection.id))))

    def add_connection(self, workflow_id: int, ends: dict[str, Any], *,
                       one_source: bool = False) -> WorkflowConnection:
        """A new connection. ``ends``: ``source_node_id`` and ``target_node_id`` (None: the
        requesting node; the key must be there), and optionally each end's
        ``*_interface_id``/``*_interface_type`` and ``destination_file_name``.

        ``one_source``: refuse now, not when the workflow runs, a second connection into an
        input that takes one (a STDIN named by type, as the original web UI names it)."""
        with self.db.session() as s:
            self._require(s, workflow_id)
            checked = self._check_ends(s, workflow_id, ends)
            if one_source:
                self._refuse_second_source(s, workflow_id, checked)
            conn = WorkflowConnection(workflow_id=workflow_id, **checked)
            s.add(conn)
            self._touch(s, workflow_id)
            s.commit()
            s.refresh(conn)
        self._changed("connection_added", workflow_id)
        return conn

    @staticmethod
    def _refuse_second_source(s: Session, workflow_id: int, ends: dict[str, Any]) -> None:
        target, kind = ends.get("target_node_id"), ends.get("target_interface_type")
        if target is None or ends.get("target_interface_id") is not None \
                or fed_once_key(kind) is None:
            return
        taken = s.exec(select(WorkflowConnection).where(
            WorkflowConnection.workflow_id == workflow_id,
            WorkflowConnection.target_node_id == target,
            WorkflowConnection.target_interface_type == kind)).first()
        if taken is not None:
            raise InvalidInput(f"{kind} of node {target} already has a source (connection "
                               f"{taken.id}): one connection feeds it")

    def update_connection(self, workflow_id: int, connection_id: int,
                          ends: dict[str, Any]) -> WorkflowConnection:
        """Change the connection's fields named in ``ends`` (as ``add_connection`` takes them;
        a None value sets None); a new interface id without a type drops the old type."""
        with self.db.session() as s:
            conn = self._require_connection(s, workflow_id, connection_id)
            current = {key: getattr(conn, key) for key in CONNECTION_FIELDS}
            for side in ("source", "target"):
                if f"{side}_interface_id" in ends and f"{side}_interface_type" not in ends:
                    current[f"{side}_interface_type"] = None
            merged = current | ends
            for key, value in self._check_ends(s, workflow_id, merged).items():
                setattr(conn, key, value)
            s.add(conn)
            self._touch(s, workflow_id)
            s.commit()
            s.refresh(conn)
        self._changed("connection_updated", workflow_id)
        return conn

    def delete_connection(self, workflow_id: int, connection_id: int) -> None:
        with self.db.session() as s:
            s.delete(self._require_connection(s, workflow_id, connection_id))
            self._touch(s, workflow_id)
            s.commit()
        self._changed("connection_deleted", workflow_id)

    # -- UI state ----------------------------------------------------------------------------
    def ui_state(self, workflow_id: int) -> dict[str, Any]:
        with self.db.session() as s:
            self._require(s, workflow_id)
            row = s.get(WorkflowUIState, workflow_id)
            return dict(row.ui_state) if row else dict(DEFAULT_UI_STATE)

    def set_ui_state(self, workflow_id: int, edit: Edit) -> None:
        """Change the editor state: ``edit`` is given the current one and answers the new."""
        with self.db.session() as s:
            self._require(s, workflow_id)
            row = s.get(WorkflowUIState, workflow_id) or WorkflowUIState(workflow_id=workflow_id)
            ui_state = edit(dict(row.ui_state) if row.ui_state else dict(DEFAULT_UI_STATE))
            if not isinstance(ui_state, dict):
                raise InvalidInput("ui_state must be an object")
            row.ui_state = ui_state
            row.updated_at = utcnow()
            s.add(row)
            s.commit()

    # -- helpers -----------------------------------------------------------------------------
    def _changed(self, action: str, workflow_id: int | None) -> None:
        self.bus.publish(WORKFLOW_UPDATED, {"action": action, "workflow_id": workflow_id})

    @staticmethod
    def _touch(s: Session, workflow_id: int) -> None:
        workflow = s.get(Workflow, workflow_id)
        if workflow is not None:
            workflow.updated_at = utcnow()
            s.add(workflow)

    @staticmethod
    def _require(s: Session, workflow_id: int) -> Workflow:
        workflow = s.get(Workflow, workflow_id)
        if workflow is None:
            raise NotFound("Workflow not found")
        return workflow

    def _require_node(self, s: Session, workflow_id: int, node_id: int) -> WorkflowNode:
        self._require(s, workflow_id)
        node = s.get(WorkflowNode, node_id)
        if node is None or node.workflow_id != workflow_id:
            raise NotFound("Node not found")
        return node

    def _require_connection(self, s: Session, workflow_id: int,
                            connection_id: int) -> WorkflowConnection:
        self._require(s, workflow_id)
        conn = s.get(WorkflowConnection, connection_id)
        if conn is None or conn.workflow_id != workflow_id:
            raise NotFound("Connection not found")
        return conn

    def _check_ends(self, s: Session, workflow_id: int,
                    ends: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        nodes: dict[str, WorkflowNode | None] = {}
        for key in ("source_node_id", "target_node_id"):
            if key not in ends:
                raise InvalidInput(f"{key} is required" + (
                    " (null: the requesting node)" if key == "target_node_id" else ""))
            value = ends[key]
            if value is None and key == "target_node_id":
                out[key], nodes[key] = None, None
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInput(f"{key} must be an integer")
            node = s.get(WorkflowNode, value)
            if node is None or node.workflow_id != workflow_id:
                raise InvalidInput(f"{key} {value} is not a node of this workflow")
            out[key], nodes[key] = value, node
        for side, fits in (("source", can_output), ("target", can_input)):
            iface_id = ends.get(f"{side}_interface_id")
            if iface_id is not None and (not isinstance(iface_id, int)
                                         or isinstance(iface_id, bool)):
                raise InvalidInput(f"{side}_interface_id must be an integer")
            kind = _interface_type(ends.get(f"{side}_interface_type"), f"{side}_interface_type")
            if kind is not None and not fits(kind):
                raise InvalidInput(f"{side}_interface_type {kind} is not an "
                                   + ("output" if side == "source" else "input"))
            node = nodes[f"{side}_node_id"]
            if kind is None and iface_id is not None and node is not None:
                kind = self._local_interface_type(node, iface_id)
            out[f"{side}_interface_id"], out[f"{side}_interface_type"] = iface_id, kind
        if out["target_node_id"] is None and (
                out["target_interface_id"] is not None
                or out["target_interface_type"] not in (None, InterfaceType.STDIN)):
            raise InvalidInput("A connection to the requesting node ends at its one input, "
                               "STDIN: it takes no target_interface_id")
        out["destination_file_name"] = validate_destination_file_name(
            ends.get("destination_file_name"))
        if out["source_node_id"] == out["target_node_id"]:
            raise InvalidInput("A connection cannot join a node to itself")
        return out

    def _local_interface_type(self, node: WorkflowNode, interface_id: int) -> str | None:
        """The type of interface ``interface_id`` of the node's service, when this node holds
        that service (another peer's interface ids mean nothing here)."""
        if (node.peer_id or self.own_peer_id) != self.own_peer_id:
            return None
        row = self.services.interface(interface_id)
        if row is None or row.service_id != node.service_id:
            return None
        return str(row.interface_type)


def _interface_type(value: Any, field: str) -> str | None:
    if value is None:
        return None
    kind = value.strip().upper() if isinstance(value, str) else None
    if kind not in InterfaceType.__members__:
        raise InvalidInput(f"{field} must be one of " + ", ".join(InterfaceType))
    return kind
