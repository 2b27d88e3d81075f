"""Request bodies of the API reference, every route's in one place (answers: ``api.responses``)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)

from orchestrator.errors import InvalidInput
from orchestrator.services.standalone_services import GitSource, RunConfig


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- who may use a service (see the README's "Security model") ------------------------------
class LimitsIn(BaseModel):
    """Overrides of the node's job limits for one service; null: the node's default, 0: none.
    ``timeout_max_seconds`` may only lower the node's bound."""

    model_config = ConfigDict(extra="forbid")

    memory_mb: StrictInt | None = Field(default=None, ge=0)
    cpus: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    pids: StrictInt | None = Field(default=None, ge=0)
    output_mb: StrictInt | None = Field(default=None, ge=0)
    timeout_max_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class PolicyIn(Body):
    """A service's access and policy fields; unset ones keep their value (at creation: the
    defaults)."""

    access: Literal["public", "peers", "private", "default"] | None = Field(
        default=None, description="public: any peer not blacklisted; peers: those in "
        "allowed_peers; private: this node's own workflows only; default: the node's setting "
        "(DATA: private)")
    allowed_peers: list[str] | None = Field(
        default=None, description="peer ids (40 hex characters) admitted by access 'peers'")
    allow_command: StrictBool | None = Field(
        default=None, description="Docker: other peers may set entrypoint, cmd and args "
        "(default true)")
    allow_args: StrictBool | None = Field(
        default=None, description="standalone: other peers may set the arguments (cmd, args; "
        "default false); the executable is always the service's")
    allow_network: StrictBool | Literal["default"] | None = Field(
        default=None, description="jobs of other peers may reach the network (default: the "
        "node's remote_jobs_network)")
    limits: LimitsIn | None = Field(default=None, description="overrides of the node's job "
                                    "limits; given, it replaces the service's overrides")

    def policy(self) -> dict[str, Any]:
        """The policy fields given, for ``orchestrator.peer_policy.parse_policy``."""
        out = self.model_dump(include=set(POLICY_FIELDS), exclude_none=True)
        if self.limits is not None:
            out["limits"] = self.limits.model_dump()
        return out


POLICY_FIELDS = ("access", "allowed_peers", "allow_command", "allow_args", "allow_network",
                 "limits")


def _interval_text(value: Any) -> Any:
    """A pricing interval as stored (text): the original web UI sends a whole number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


# The reference's pricing interval is text; the original web UI's is a whole number.
PricingInterval = Annotated[str, BeforeValidator(_interval_text), Field(max_length=32)]


# A coordinate, zoom or pan value of the workflow editor: a finite number of a sane size.
StrictNumber = Annotated[StrictInt | StrictFloat, Field(ge=-1e9, le=1e9, allow_inf_nan=False)]


# -- requests ----------------------------------------------------------------------------------
class LoginRequest(Body):
    """``public_key`` may be left out: the node then finds which allowed key signed."""

    challenge: str
    signature: str
    public_key: str | None = None


class ServiceCreate(PolicyIn):
    type: str
    name: str
    description: str = ""
    endpoint: str = ""
    status: str = "available"
    capabilities: dict[str, Any] = Field(default_factory=dict)
    pricing_amount: float = 0.0
    pricing_type: str = "FREE"
    pricing_interval: PricingInterval = ""
    pricing_unit: str = ""


class ServiceUpdate(PolicyIn):
    name: str | None = None
    description: str | None = None
    status: str | None = None
    endpoint: str | None = None
    capabilities: dict[str, Any] | None = None
    pricing_amount: float | None = None
    pricing_type: str | None = None
    pricing_interval: PricingInterval | None = None
    pricing_unit: str | None = None


class ServicePricing(Body):
    """``PUT /api/services/{id}/pricing``, as the original web UI sets a service's price."""

    pricing_amount: float
    pricing_type: str = Field(max_length=32)
    pricing_interval: PricingInterval = ""
    pricing_unit: str = Field(default="", max_length=32)


class StatusUpdate(Body):
    status: str


class BlacklistAdd(Body):
    peer_id: str
    reason: str | None = None


class WorkflowCreate(Body):
    name: str
    description: str = ""
    definition: dict[str, Any] = Field(default_factory=dict)


class WorkflowUpdate(Body):
    name: str
    description: str | None = None
    definition: dict[str, Any] | None = None


def _card_interface(value: Any) -> Any:
    """An interface of a card as the UI sends it (kept as sent): a small object of scalars."""
    if not isinstance(value, dict):
        raise ValueError("each interface must be an object")
    if len(value) > 16:
        raise ValueError("an interface has at most 16 fields")
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool | type(None)):
            raise ValueError(f"interface field '{str(key)[:64]}' must be a plain value")
        if isinstance(item, str) and len(item) > 1024:
            raise ValueError(f"interface field '{str(key)[:64]}' is too long")
    return value


CardInterface = Annotated[dict[str, Any], BeforeValidator(_card_interface)]
Words = list[Annotated[str, Field(max_length=4096)]]


class NodeCreate(Body):
    """A workflow node: the reference's fields, or the original web UI's flat card (its
    ``gui_x``/``gui_y`` go into ``gui_props``, ``entrypoint``/``cmd`` into ``config``, the rest
    is kept as the card)."""

    node_type: str = "SERVICE"
    peer_id: str = ""
    service_id: StrictInt | None = None
    service_name: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    gui_props: dict[str, Any] = Field(default_factory=dict)
    service_type: str | None = Field(default=None, max_length=16)
    order: StrictInt | None = Field(default=None, ge=0, le=100_000)
    gui_x: StrictNumber | None = None
    gui_y: StrictNumber | None = None
    interfaces: list[CardInterface] | None = Field(default=None, max_length=64)
    entrypoint: Words | None = Field(default=None, max_length=256)
    cmd: Words | None = Field(default=None, max_length=256)
    pricing_amount: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    pricing_type: str | None = Field(default=None, max_length=32)
    pricing_interval: PricingInterval | None = None
    pricing_unit: str | None = Field(default=None, max_length=32)

    CARD_FIELDS: ClassVar[tuple[str, ...]] = (
        "service_type", "order", "interfaces", "pricing_amount", "pricing_type",
        "pricing_interval", "pricing_unit")

    def node_fields(self) -> dict[str, Any]:
        """What the workflow store takes: the reference's fields with the card's folded in."""
        gui_props = dict(self.gui_props)
        gui_props.update({k: round(v) for k, v in (("x", self.gui_x), ("y", self.gui_y))
                          if v is not None})
        config = dict(self.config)
        config.update({k: v for k, v in (("entrypoint", self.entrypoint), ("cmd", self.cmd))
                       if v})
        card = {k: getattr(self, k) for k in self.CARD_FIELDS if getattr(self, k) is not None}
        return {"node_type": self.node_type, "peer_id": self.peer_id,
                "service_id": self.service_id, "service_name": self.service_name,
                "config": config, "gui_props": gui_props, "card": card}


class GuiPropsUpdate(Body):
    """The reference's ``{"gui_props": {...}}`` (replaces them), or the original web UI's
    ``{"x", "y"}`` (merged into them, rounded)."""

    gui_props: dict[str, Any] | None = None
    x: StrictNumber | None = None
    y: StrictNumber | None = None

    def merged_into(self, current: dict[str, Any]) -> dict[str, Any]:
        if self.gui_props is not None:
            return self.gui_props
        if self.x is None and self.y is None:
            raise InvalidInput("gui_props is required (or x and y)")
        position = {k: round(v) for k, v in (("x", self.x), ("y", self.y)) if v is not None}
        return {**current, **position}


class NodeConfigUpdate(Body):
    """The reference's ``{"config": {...}}`` (replaces it), or the original web UI's
    ``{"entrypoint": [...], "cmd": [...]}`` (merged into it; an empty list drops the key)."""

    config: dict[str, Any] | None = None
    entrypoint: list[str] | None = Field(default=None, max_length=256)
    cmd: list[str] | None = Field(default=None, max_length=256)

    def merged_into(self, current: dict[str, Any]) -> dict[str, Any]:
        if self.config is not None:
            return self.config
        given = {k: v for k, v in (("entrypoint", self.entrypoint), ("cmd", self.cmd))
                 if v is not None}
        if not given:
            raise InvalidInput("config is required (or entrypoint and cmd)")
        merged = {**current, **{k: v for k, v in given.items() if v}}
        for key in (k for k, v in given.items() if not v):
            merged.pop(key, None)
        return merged


InterfaceTypeName = Annotated[str, StringConstraints(max_length=16)]
FileName = Annotated[str, StringConstraints(max_length=1024)]
# The original web UI's connection fields, and the reference's names for them.
UI_CONNECTION_NAMES = {"from_node_id": "source_node_id",
                       "from_interface_type": "source_interface_type",
                       "to_node_id": "target_node_id",
                       "to_interface_type": "target_interface_type"}


class ConnectionUpdate(Body):
    """A connection's fields, in the reference's names (``source_*``/``target_*``, with
    ``target_node_id: null`` for the requesting node), or in the original web UI's
    (``from_*``/``to_*``, ``to_node_id: null`` for its "Local Peer"); ``destination_file_name``
    in both. Only the fields given count; one body uses one set of names."""

    source_node_id: StrictInt | None = None
    source_interface_id: StrictInt | None = None
    source_interface_type: InterfaceTypeName | None = None
    target_node_id: StrictInt | None = None
    target_interface_id: StrictInt | None = None
    target_interface_type: InterfaceTypeName | None = None
    from_node_id: StrictInt | None = None
    from_interface_type: InterfaceTypeName | None = None
    to_node_id: StrictInt | None = None
    to_interface_type: InterfaceTypeName | None = None
    destination_file_name: FileName | None = None

    @model_validator(mode="after")
    def _one_dialect(self) -> ConnectionUpdate:
        given = self.model_fields_set
        ui = given & UI_CONNECTION_NAMES.keys()
        reference = given - UI_CONNECTION_NAMES.keys() - {"destination_file_name"}
        if ui and reference:
            raise ValueError("use either the from_*/to_* names or the source_*/target_* "
                               "names, not both")
        return self

    @property
    def in_ui_names(self) -> bool:
        return bool(self.model_fields_set & UI_CONNECTION_NAMES.keys())

    def ends(self) -> dict[str, Any]:
        """The fields given, in the store's (the reference's) names."""
        return {UI_CONNECTION_NAMES.get(k, k): getattr(self, k) for k in self.model_fields_set}


class ConnectionCreate(ConnectionUpdate):
    @model_validator(mode="after")
    def _both_nodes(self) -> ConnectionCreate:
        ends = self.ends()
        for key, ui in (("source_node_id", "from_node_id"), ("target_node_id", "to_node_id")):
            if key not in ends:
                raise ValueError(f"{key} (or {ui}) is required"
                                   + ("; null: the requesting node" if key.startswith("t")
                                      else ""))
        if ends["source_node_id"] is None:
            raise ValueError("source_node_id must be a node of the workflow: the requesting "
                               "node is a target only")
        return self


# The editor state keys the original web UI sends at the top level of its body, and what it
# takes when they are not set.
UI_STATE_DEFAULTS: dict[str, Any] = {"snap_to_grid": False, "zoom_level": 1, "pan_x": 0,
                                     "pan_y": 0, "self_peer_x": 50, "self_peer_y": 50}
UI_STATE_KEYS = tuple(UI_STATE_DEFAULTS)
# Of those, the ones a reference client does not write: a state with one was written by the UI.
UI_ONLY_STATE_KEYS = ("snap_to_grid", "zoom_level", "self_peer_x", "self_peer_y")


class UIStateUpdate(Body):
    """The reference's ``{"ui_state": {...}}`` (replaces it), or the original web UI's bare
    state (its known keys merged into the stored state; ``id``, ``workflow_id`` and the times
    it echoes are ignored). The UI sends back what it read, which holds both: then its keys
    are merged over the ``ui_state`` it echoes."""

    ui_state: dict[str, Any] | None = None
    snap_to_grid: StrictBool | None = None
    zoom_level: StrictNumber | None = None
    pan_x: StrictNumber | None = None
    pan_y: StrictNumber | None = None
    self_peer_x: StrictNumber | None = None
    self_peer_y: StrictNumber | None = None

    def merged_into(self, current: dict[str, Any]) -> dict[str, Any]:
        given = {k: getattr(self, k) for k in UI_STATE_KEYS if getattr(self, k) is not None}
        if self.ui_state is not None:
            return {**self.ui_state, **given}
        if not given:
            raise InvalidInput("ui_state is required")
        return {**current, **given}


class ScheduleCreate(Body):
    cron: str | None = Field(default=None, description="a cron expression, e.g. '0 3 * * *'")
    timezone: str | None = "UTC"
    active: bool = True


class RelayPeerRequest(Body):
    peer_id: str


# -- Docker services ---------------------------------------------------------------------------
class DockerFromRegistry(PolicyIn):
    service_name: str
    image_name: str
    image_tag: str | None = None
    description: str = ""
    username: str | None = None
    password: str | None = None
    custom_interfaces: list[dict[str, Any]] | None = None


class DockerFromGit(PolicyIn):
    service_name: str
    repo_url: str
    branch: str | None = None
    username: str | None = None
    password: str | None = None
    description: str = ""
    custom_interfaces: list[dict[str, Any]] | None = None


class DockerFromLocal(PolicyIn):
    service_name: str
    local_path: str
    description: str = ""
    custom_interfaces: list[dict[str, Any]] | None = None


class ValidateGit(Body):
    repo_url: str | None = None
    username: str | None = None
    password: str | None = None


class InterfacesUpdate(Body):
    interfaces: list[dict[str, Any]]


class DockerConfigUpdate(Body):
    entrypoint: str | list[str] | None = None
    cmd: str | list[str] | None = None


# -- standalone services -----------------------------------------------------------------------
class StandaloneRun(PolicyIn):
    """How a standalone service runs (``POST .../{id}/finalize``, and part of a creation)."""

    executable_path: str
    arguments: list[str] = Field(default_factory=list)
    working_directory: str = ""
    environment_variables: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: int | None = None
    run_as_user: str = ""
    capabilities: dict[str, Any] = Field(default_factory=dict)
    custom_interfaces: list[dict[str, Any]] | None = None

    def config(self) -> RunConfig:
        return RunConfig(
            executable_path=self.executable_path,
            arguments=self.arguments,
            working_directory=self.working_directory or "",
            environment_variables=self.environment_variables,
            timeout_seconds=self.timeout_seconds,
            run_as_user=self.run_as_user or "",
            capabilities=self.capabilities,
            custom_interfaces=self.custom_interfaces,
            policy=self.policy(),
        )


class StandaloneFromLocal(StandaloneRun):
    service_name: str
    description: str = ""


class StandaloneFromGit(StandaloneRun):
    service_name: str
    repo_url: str
    branch: str | None = None
    build_command: str = ""
    username: str = ""
    password: str = Field(default="", repr=False)
    description: str = ""

    def source(self) -> GitSource:
        return GitSource(self.repo_url, self.branch, self.username or None,
                         self.password or None, self.build_command or "")
