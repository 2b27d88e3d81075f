"""Request bodies of the API reference, every route's in one place (answers: ``api.responses``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

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


# -- requests ----------------------------------------------------------------------------------
class LoginRequest(Body):
    challenge: str
    signature: str
    public_key: str


class ServiceCreate(PolicyIn):
    type: str
    name: str
    description: str = ""
    endpoint: str = ""
    status: str = "available"
    capabilities: dict[str, Any] = Field(default_factory=dict)
    pricing_amount: float = 0.0
    pricing_type: str = "FREE"
    pricing_interval: str = ""
    pricing_unit: str = ""


class ServiceUpdate(PolicyIn):
    name: str | None = None
    description: str | None = None
    status: str | None = None
    endpoint: str | None = None
    capabilities: dict[str, Any] | None = None
    pricing_amount: float | None = None
    pricing_type: str | None = None
    pricing_interval: str | None = None
    pricing_unit: str | None = None


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


class NodeCreate(Body):
    node_type: str = "SERVICE"
    peer_id: str = ""
    service_id: StrictInt | None = None
    service_name: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    gui_props: dict[str, Any] = Field(default_factory=dict)


class GuiPropsUpdate(Body):
    gui_props: dict[str, Any]


class NodeConfigUpdate(Body):
    config: dict[str, Any]


class ConnectionCreate(Body):
    source_node_id: StrictInt
    source_interface_id: StrictInt | None = None
    target_node_id: StrictInt
    target_interface_id: StrictInt | None = None


class ConnectionUpdate(Body):
    source_node_id: StrictInt | None = None
    source_interface_id: StrictInt | None = None
    target_node_id: StrictInt | None = None
    target_interface_id: StrictInt | None = None


class UIStateUpdate(Body):
    ui_state: dict[str, Any]


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
