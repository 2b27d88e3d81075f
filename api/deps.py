"""Dependencies shared by the routes: the node's parts, the caller's token, validated path ids.

The app holds what ``api.app.create_app`` was given (``NodeParts``); each dependency below
reads one part of it, so the routes name only what they use and nothing here knows the node
itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Protocol

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError
from starlette.requests import HTTPConnection

from api.gate import CLAIMS, bearer
from executors.artifacts import ArtifactStore
from flows.executions import Executions as ExecutionOwner
from flows.on_prefect.schedules import ScheduleService
from flows.preview import PlanPreview as WorkflowPlanPreview
from orchestrator.auth import Authenticator, TokenClaims
from orchestrator.blacklist import Blacklist as PeerBlacklist
from orchestrator.capabilities import CapabilityProbe
from orchestrator.config import Settings as NodeSettings
from orchestrator.discovery import Discovery as PeerDiscovery
from orchestrator.errors import AuthFailed
from orchestrator.events import EventBus
from orchestrator.execution_store import ExecutionStore
from orchestrator.peer_policy import PeerPolicy
from orchestrator.registry import ServiceRegistry
from orchestrator.relay import RelayClient, RelayServer
from orchestrator.services.docker_services import DockerServices as DockerServiceManager
from orchestrator.services.standalone_services import (
    StandaloneServices as StandaloneServiceManager,
)
from orchestrator.workflows import WorkflowStore

# An inbound WebSocket message handler: (payload, reply) -> None.
WsReply = Callable[[dict[str, Any]], Awaitable[None]]
WsHandler = Callable[[dict[str, Any], WsReply], Awaitable[None]]


class NodeControl(Protocol):
    """This node as a whole: its id, its status, a restart."""

    @property
    def peer_id(self) -> str: ...

    def status(self) -> dict[str, Any]: ...

    def restart(self) -> None: ...


class Relays(Protocol):
    """The relay sides; each raises 403 (``Forbidden``) when the node is not in that mode."""

    def relay_server(self) -> RelayServer: ...

    def relay_client(self) -> RelayClient: ...


class NodeParts(NodeControl, Relays, Protocol):
    """What the HTTP edge uses of the node."""

    @property
    def settings(self) -> NodeSettings: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def bus(self) -> EventBus: ...
    @property
    def workflows(self) -> WorkflowStore: ...
    @property
    def services(self) -> ServiceRegistry: ...
    @property
    def policy(self) -> PeerPolicy: ...
    @property
    def blacklist(self) -> PeerBlacklist: ...
    @property
    def execution_store(self) -> ExecutionStore: ...
    @property
    def executions(self) -> ExecutionOwner: ...
    @property
    def schedules(self) -> ScheduleService: ...
    @property
    def plan_preview(self) -> WorkflowPlanPreview: ...
    @property
    def docker_services(self) -> DockerServiceManager: ...
    @property
    def standalone(self) -> StandaloneServiceManager: ...
    @property
    def discovery(self) -> PeerDiscovery: ...
    @property
    def capabilities(self) -> CapabilityProbe: ...
    @property
    def artifacts(self) -> ArtifactStore: ...
    @property
    def ws_handlers(self) -> Mapping[str, WsHandler]: ...


def parts_of(conn: HTTPConnection) -> NodeParts:
    """The parts the app was created with (``app.state.node``)."""
    return conn.app.state.node  # type: ignore[no-any-return]


# The dependencies are async on purpose: they are cheap, and a sync dependency costs every
# request a hop through the thread pool. ``HTTPConnection``: they serve the WebSocket too.
async def settings(conn: HTTPConnection) -> NodeSettings:
    return parts_of(conn).settings


async def auth(conn: HTTPConnection) -> Authenticator:
    return parts_of(conn).auth


async def bus(conn: HTTPConnection) -> EventBus:
    return parts_of(conn).bus


async def workflows(conn: HTTPConnection) -> WorkflowStore:
    return parts_of(conn).workflows


async def services(conn: HTTPConnection) -> ServiceRegistry:
    return parts_of(conn).services


async def policy(conn: HTTPConnection) -> PeerPolicy:
    return parts_of(conn).policy


async def blacklist(conn: HTTPConnection) -> PeerBlacklist:
    return parts_of(conn).blacklist


async def execution_records(conn: HTTPConnection) -> ExecutionStore:
    return parts_of(conn).execution_store


async def executions(conn: HTTPConnection) -> ExecutionOwner:
    return parts_of(conn).executions


async def schedules(conn: HTTPConnection) -> ScheduleService:
    return parts_of(conn).schedules


async def plan_preview(conn: HTTPConnection) -> WorkflowPlanPreview:
    return parts_of(conn).plan_preview


async def docker_services(conn: HTTPConnection) -> DockerServiceManager:
    return parts_of(conn).docker_services


async def standalone_services(conn: HTTPConnection) -> StandaloneServiceManager:
    return parts_of(conn).standalone


async def discovery(conn: HTTPConnection) -> PeerDiscovery:
    return parts_of(conn).discovery


async def capabilities(conn: HTTPConnection) -> CapabilityProbe:
    return parts_of(conn).capabilities


async def artifacts(conn: HTTPConnection) -> ArtifactStore:
    return parts_of(conn).artifacts


async def ws_handlers(conn: HTTPConnection) -> Mapping[str, WsHandler]:
    return parts_of(conn).ws_handlers


def node_control_of(conn: HTTPConnection) -> NodeControl:
    """The node's control, read directly (for a hot path that skips the dependency)."""
    return parts_of(conn)


async def node_control(conn: HTTPConnection) -> NodeControl:
    return node_control_of(conn)


async def relay_server(conn: HTTPConnection) -> RelayServer:
    """The relay side; 403 outside relay mode."""
    relays: Relays = parts_of(conn)
    return relays.relay_server()


async def relay_client(conn: HTTPConnection) -> RelayClient:
    """The NAT side; 403 outside NAT mode."""
    relays: Relays = parts_of(conn)
    return relays.relay_client()


Settings = Annotated[NodeSettings, Depends(settings)]
Auth = Annotated[Authenticator, Depends(auth)]
Bus = Annotated[EventBus, Depends(bus)]
Workflows = Annotated[WorkflowStore, Depends(workflows)]
Services = Annotated[ServiceRegistry, Depends(services)]
Policy = Annotated[PeerPolicy, Depends(policy)]
Blacklist = Annotated[PeerBlacklist, Depends(blacklist)]
ExecutionRecords = Annotated[ExecutionStore, Depends(execution_records)]
Executions = Annotated[ExecutionOwner, Depends(executions)]
Schedules = Annotated[ScheduleService, Depends(schedules)]
PlanPreview = Annotated[WorkflowPlanPreview, Depends(plan_preview)]
DockerServices = Annotated[DockerServiceManager, Depends(docker_services)]
StandaloneServices = Annotated[StandaloneServiceManager, Depends(standalone_services)]
Discovery = Annotated[PeerDiscovery, Depends(discovery)]
Capabilities = Annotated[CapabilityProbe, Depends(capabilities)]
Artifacts = Annotated[ArtifactStore, Depends(artifacts)]
WsHandlers = Annotated[Mapping[str, WsHandler], Depends(ws_handlers)]
Control = Annotated[NodeControl, Depends(node_control)]
RelaySessions = Annotated[RelayServer, Depends(relay_server)]
NatRelay = Annotated[RelayClient, Depends(relay_client)]


async def require_token(request: Request) -> TokenClaims:
    """The caller's token claims: verified by the gate in front of every route (``api.gate``),
    or here when a request did not pass through it."""
    claims: TokenClaims | None = getattr(request.state, CLAIMS, None)
    if claims is not None:
        return claims
    raw = request.headers.get("authorization")
    token = bearer(raw.encode("latin-1") if raw is not None else None)
    if token is None:
        raise AuthFailed("Unauthorized")
    return parts_of(request).auth.check_token(token)


Caller = Annotated[TokenClaims, Depends(require_token)]


# Ids are positive and stored in signed 64-bit columns; 18 digits keep any literal in range.
ID_MAX_DIGITS = 18
ID_MAX = 10**ID_MAX_DIGITS - 1


def path_id(label: str, param: str = "id") -> Any:
    """A typed id path parameter ``{param}``: a positive integer of at most 18 digits.

    Anything else is refused with the reference's 400 ``Invalid <label> ID`` (see
    ``describe_validation``); the OpenAPI document declares it as a bounded integer.
    """

    def parse(raw: object) -> int:
        text = raw if isinstance(raw, str) else str(raw)
        if (len(text) > ID_MAX_DIGITS or not text.isascii() or not text.isdigit()
                or int(text) <= 0):
            raise PydanticCustomError("path_id", f"Invalid {label} ID")
        return int(text)

    schema = {"type": "integer", "minimum": 1, "maximum": ID_MAX}
    return Annotated[int, BeforeValidator(parse), WithJsonSchema(schema), Path(alias=param)]


ServiceId = path_id("service")
WorkflowId = path_id("workflow")
NodeId = path_id("node", "node_id")
ConnectionId = path_id("connection", "connection_id")
ExecutionId = path_id("workflow execution")
JobId = path_id("job execution")
ScheduleId = path_id("schedule", "schedule_id")
InterfaceRecordId = path_id("interface", "interface_id")


def describe_validation(errors: Any) -> str:
    """The 400 message for a request FastAPI refused: a bad path id first, else the body."""
    parts = []
    errors = list(errors)
    for err in errors:
        if tuple(err.get("loc", ()))[:1] == ("path",):
            return str(err.get("msg"))
    for err in errors:
        # A rule of the whole body (a model validator) says what is wrong in its own words.
        if tuple(err.get("loc", ())) == ("body",) and err.get("type") == "value_error":
            return str(err.get("ctx", {}).get("error") or err.get("msg"))
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return "Invalid request body: expected a JSON object"
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "Invalid request body" + (": " + "; ".join(parts) if parts else "")
