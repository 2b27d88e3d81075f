"""The original web UI's WebSocket vocabulary, translated from the node's bus events.

A connection speaks the UI's dialect once it sends a dot-case message (``ping``,
``service.search.request``, ``file.upload.start``, ...; see ``speaks_ui``). Such a connection
gets, beside the reference's UPPER_CASE events, the UI's messages built here: dot-case types in
a ``{type, payload, timestamp}`` envelope, full snapshots instead of deltas, times as the UI
reads them. Everything here is a plain function of an event and the parts it reads (``Sources``);
the reads are synchronous (database), so callers run them off the event loop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from api.responses import ServicePublic, WorkflowPublic, iso
from orchestrator import events as ev
from orchestrator.errors import DomainError, NotFound

log = logging.getLogger("remote_network.ws")

# A message type in the UI's dialect: lowercase words joined by dots, or the bare ``ping``.
# Every type of the reference is UPPER_CASE, so a reference client never matches by accident.
DOT_CASE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")

# Periodic snapshots, in seconds (ORIGINAL_UI_PROTOCOL §3.3 and §8b, row "WS").
TICK_SECONDS = 5
PERIODS = {
    "node.status": 5,
    "relay.sessions": 5,
    "relay.candidates": 5,
    "peers.updated": 10,
    "services.updated": 15,
    "workflows.updated": 15,
    "blacklist.updated": 30,
}

DOCKER_TYPES = {
    ev.DOCKER_OPERATION_START: "docker.operation.start",
    ev.DOCKER_OPERATION_PROGRESS: "docker.operation.progress",
    ev.DOCKER_OPERATION_COMPLETE: "docker.operation.complete",
    ev.DOCKER_OPERATION_ERROR: "docker.operation.error",
}


def speaks_ui(kind: str) -> bool:
    """Whether a client message of type ``kind`` shows the UI's dialect."""
    return kind == "ping" or DOT_CASE.fullmatch(kind) is not None


def envelope(kind: str, payload: Any, now: float | None = None) -> dict[str, Any]:
    """A message as the UI reads it: ``timestamp`` in Unix seconds."""
    return {"type": kind, "payload": payload,
            "timestamp": int(time.time() if now is None else now)}


def error(message: str, *, request_type: str | None = None) -> dict[str, Any]:
    """An error in the UI's dialect (lowercase ``error``; the UI reads ``payload.error``)."""
    payload: dict[str, Any] = {"error": message}
    if request_type:
        payload["request_type"] = request_type
    return envelope("error", payload)


def unix(value: dt.datetime | None) -> int | None:
    """Unix seconds of a time (naive times are UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp())


def unix_of_iso(value: Any) -> int | None:
    """Unix seconds of a ``YYYY-MM-DDTHH:MM:SSZ`` text (None when it is not one)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return unix(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


class RelaySource(Protocol):
    def relay_server(self) -> Any: ...

    def relay_client(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Sources:
    """What the translations read: the node's parts, as the routes' dependencies give them."""

    records: Any      # orchestrator.execution_store.ExecutionStore
    services: Any     # orchestrator.registry.ServiceRegistry
    policy: Any       # orchestrator.peer_policy.PeerPolicy
    workflows: Any    # orchestrator.workflows.WorkflowStore
    blacklist: Any    # orchestrator.blacklist.Blacklist
    discovery: Any    # orchestrator.discovery.Discovery
    control: Any      # api.deps.NodeControl
    relays: RelaySource | None = None


# -- snapshots ---------------------------------------------------------------------------------
def ui_service(view: Any, policy: Any) -> dict[str, Any]:
    """A service as ``services.updated`` lists it: the reference's fields, with ``created_at``
    and ``updated_at`` in Unix seconds, ``config`` (the capabilities) and the Docker
    ``entrypoint``/``cmd`` where there are any."""
    public = ServicePublic.of(view, policy)
    item = public.model_dump(mode="json")
    item["created_at"] = unix(public.created_at)
    item["updated_at"] = unix(public.updated_at)
    item["config"] = item["capabilities"]
    docker = item.get("docker_details") or {}
    for key in ("entrypoint", "cmd"):
        if docker.get(key):
            item[key] = docker[key]
    return item


def services_snapshot(src: Sources) -> dict[str, Any]:
    return envelope("services.updated",
                    {"services": [ui_service(v, src.policy) for v in src.services.list()]})


def workflows_snapshot(src: Sources) -> dict[str, Any]:
    """Each workflow with its times in Unix seconds and ``status``: its latest execution's,
    lowercase, or ``idle`` when it never ran (as the original node sends it)."""
    items = []
    statuses = src.records.latest_statuses()
    for w in src.workflows.list():
        public = WorkflowPublic.model_validate(w)
        item = public.model_dump(mode="json")
        item["created_at"] = unix(public.created_at)
        item["updated_at"] = unix(public.updated_at)
        item["status"] = statuses.get(public.id, "idle").lower()
        items.append(item)
    return envelope("workflows.updated", {"workflows": items})


def blacklist_snapshot(src: Sources) -> dict[str, Any]:
    return envelope("blacklist.updated", {"blacklist": [
        {"peer_id": e.peer_id, "reason": e.reason, "added_at": unix(e.blacklisted_at)}
        for e in src.blacklist.list()]})


def peers_snapshot(src: Sources) -> dict[str, Any]:
    """The peers of ``GET /api/peers`` with ``last_seen`` in Unix seconds (a peer whose time
    cannot be read is left out: the UI cannot show it)."""
    peers = []
    for p in src.discovery.list_peers()["peers"]:
        seen = unix_of_iso(p.get("last_seen"))
        if seen is not None:
            peers.append({**p, "last_seen": seen})
    return envelope("peers.updated", {"peers": peers})


def node_status(src: Sources) -> dict[str, Any]:
    return envelope("node.status", src.control.status())


def relay_sessions(src: Sources) -> dict[str, Any] | None:
    """The relayed sessions (relay mode only), each with the UI's ``remote_peer_id``."""
    try:
        server = src.relays.relay_server() if src.relays else None
    except DomainError:
        return None
    if server is None:
        return None
    return envelope("relay.sessions", {"sessions": [
        {**s, "remote_peer_id": s.get("client_peer_id", "")} for s in server.sessions()]})


def relay_candidates(src: Sources) -> dict[str, Any] | None:
    """The relay candidates (NAT mode only)."""
    try:
        client = src.relays.relay_client() if src.relays else None
    except DomainError:
        return None
    if client is None:
        return None
    return envelope("relay.candidates", {"candidates": list(client.candidates()),
                                         "connected_relay": client.connected_relay_id})


SNAPSHOTS: dict[str, Callable[[Sources], dict[str, Any] | None]] = {
    "node.status": node_status,
    "relay.sessions": relay_sessions,
    "relay.candidates": relay_candidates,
    "peers.updated": peers_snapshot,
    "services.updated": services_snapshot,
    "workflows.updated": workflows_snapshot,
    "blacklist.updated": blacklist_snapshot,
}


def due(elapsed: int) -> list[str]:
    """The periodic snapshots due ``elapsed`` seconds after the connection switched."""
    return [name for name, period in PERIODS.items() if elapsed % period == 0]


def periodic(elapsed: int, src: Sources) -> list[dict[str, Any]]:
    """The snapshots due at ``elapsed``; one that cannot be built is logged and left out."""
    out = []
    for name in due(elapsed):
        try:
            message = SNAPSHOTS[name](src)
        except Exception:
            log.exception("UI snapshot %s failed", name)
            continue
        if message is not None:
            out.append(message)
    return out


# -- events ------------------------------------------------------------------------------------
def execution_updated(payload: dict[str, Any], src: Sources) -> list[dict[str, Any]]:
    """``execution.updated``: the event's state, the row's start and end times (ISO texts)."""
    started = completed = None
    try:
        row = src.records.execution(payload["execution_id"])
        started, completed = iso(row.started_at), iso(row.completed_at)
    except NotFound:
        pass
    return [envelope("execution.updated", {
        "execution_id": payload["execution_id"], "workflow_id": payload.get("workflow_id"),
        "status": payload.get("status"), "error": payload.get("error"),
        "started_at": started, "completed_at": completed})]


def job_status_updated(payload: dict[str, Any], src: Sources) -> list[dict[str, Any]]:
    """``job.status.updated`` for a job of a local execution (another peer's job: nothing).
    ``job_execution_id`` is the job's id (the ``id`` of the execution's ``jobs`` rows),
    ``workflow_job_id`` its workflow node, ``job_name`` the service the plan names for it."""
    execution_id = payload.get("execution_id")
    if execution_id is None:
        return []
    name = ""
    try:
        plan = src.records.execution(execution_id).plan or {}
    except NotFound:
        plan = {}
    for node in plan.get("nodes", []):
        if isinstance(node, dict) and node.get("node_id") == payload.get("node_id"):
            name = node.get("service_name") or (
                f"service-{node['service_id']}" if node.get("service_id") else "")
            break
    return [envelope("job.status.updated", {
        "job_execution_id": payload.get("job_id"), "execution_id": execution_id,
        "status": payload.get("status"), "error": payload.get("error"),
        "job_name": name, "workflow_job_id": payload.get("node_id")})]


def docker_operation(kind: str, payload: dict[str, Any], src: Sources) -> list[dict[str, Any]]:
    """``docker.operation.*``: the reference's payload, plus the log line as ``stream``
    (progress, but for build lines) and the created service as ``service`` (complete). A
    progress event of a pull is also ``docker.pull.progress {service_name, image_name, status,
    progress}``, and a build line ``docker.build.output {service_name, image_name, stream,
    error}``: the add-service wizard follows those, keyed by the service's name."""
    out = dict(payload)
    also: list[dict[str, Any]] = []
    if kind == ev.DOCKER_OPERATION_PROGRESS:
        # A build line goes as docker.build.output only: the wizard prints both messages'
        # lines, so carrying it twice would print it twice.
        if out.get("log") and "stream" not in out and out.get("phase") != "build":
            out["stream"] = out["log"]
        named = {"service_name": out.get("service_name", ""),
                 "image_name": out.get("image_name", "")}
        if out.get("phase") == "pull":
            also.append(envelope("docker.pull.progress", {
                **named, "status": out.get("log") or out.get("message", ""),
                "progress": out.get("percentage")}))
        elif out.get("phase") == "build" and out.get("log"):
            also.append(envelope("docker.build.output", {**named, "stream": out["log"],
                                                         "error": None}))
    if kind == ev.DOCKER_OPERATION_COMPLETE and out.get("service_id") is not None:
        with contextlib.suppress(NotFound):
            out["service"] = ui_service(src.services.get(out["service_id"]), src.policy)
    return [envelope(DOCKER_TYPES[kind], out), *also]


def translate(kind: str, payload: dict[str, Any], src: Sources) -> list[dict[str, Any]]:
    """The UI messages for one bus event (none for an event the UI has no name for)."""
    if kind == ev.EXECUTION_UPDATED:
        return execution_updated(payload, src)
    if kind == ev.JOB_UPDATED:
        return job_status_updated(payload, src)
    if kind == ev.SERVICE_UPDATED:
        return [services_snapshot(src)]
    if kind == ev.WORKFLOW_UPDATED:
        return [workflows_snapshot(src)]
    if kind == ev.BLACKLIST_UPDATED:
        return [blacklist_snapshot(src)]
    if kind == ev.PEER_UPDATED:
        return [peers_snapshot(src)]
    if kind == ev.PEER_CAPABILITIES_UPDATED:
        return [envelope("peer.capabilities.updated", dict(payload))]
    if kind == ev.RELAY_CANDIDATES:
        return [envelope("relay.candidates", dict(payload))]
    if kind in DOCKER_TYPES:
        return docker_operation(kind, payload, src)
    return []


TRANSLATED = frozenset({ev.EXECUTION_UPDATED, ev.JOB_UPDATED, ev.SERVICE_UPDATED,
                        ev.WORKFLOW_UPDATED, ev.BLACKLIST_UPDATED, ev.PEER_UPDATED,
                        ev.PEER_CAPABILITIES_UPDATED, ev.RELAY_CANDIDATES, *DOCKER_TYPES})
