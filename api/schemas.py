"""Request bodies and response shapes of the API reference."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from orchestrator.models import (
    BlacklistEntry,
    DataDetails,
    DockerDetails,
    JobExecution,
    JobExecutionInterface,
    ServiceInterface,
    StandaloneDetails,
    Workflow,
    WorkflowConnection,
    WorkflowExecution,
    WorkflowNode,
)
from orchestrator.peer_policy import LIMIT_KEYS, PeerPolicy
from orchestrator.registry import ServiceView


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


# -- responses ---------------------------------------------------------------------------------
def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def interface_out(iface: ServiceInterface) -> dict[str, Any]:
    return {
        "id": iface.id,
        "service_id": iface.service_id,
        "interface_type": iface.interface_type,
        "path": iface.path,
        "mount_function": iface.mount_function,
        "description": iface.description,
    }


def docker_details_out(d: DockerDetails) -> dict[str, Any]:
    return {
        "id": d.id,
        "service_id": d.service_id,
        "image_name": d.image_name,
        "image_tag": d.image_tag,
        "source": d.source,
        "compose_path": d.compose_path,
        "entrypoint": d.entrypoint,
        "cmd": d.cmd,
    }


def standalone_details_out(d: StandaloneDetails) -> dict[str, Any]:
    return {
        "id": d.id,
        "service_id": d.service_id,
        "executable_path": d.executable_path,
        "arguments": list(d.arguments),
        "working_directory": d.working_directory,
        "environment_variables": dict(d.environment_variables),
        "timeout_seconds": d.timeout_seconds,
        "run_as_user": d.run_as_user,
        "source": d.source,
    }


def data_details_out(d: DataDetails) -> dict[str, Any]:
    return {
        "id": d.id,
        "service_id": d.service_id,
        "file_path": d.file_path,
        "file_size": d.file_size,
        "file_hash": d.file_hash,
        "encryption_method": d.encryption_method,
    }


def policy_out(view: ServiceView, policy: PeerPolicy) -> dict[str, Any]:
    """A service's policy fields as they apply (the node's defaults where it sets none)."""
    s = view.service
    own = s.limits or {}
    return {
        "access": policy.access(s),
        "access_is_default": s.access is None,
        "allowed_peers": list(policy.allowed_peers(s)),
        "allow_command": s.allow_command,
        "allow_args": s.allow_args,
        "allow_network": policy.network(s),
        "limits": {k: own.get(k) for k in LIMIT_KEYS},
        "effective_limits": policy.limits(s),
    }


def service_out(view: ServiceView, policy: PeerPolicy) -> dict[str, Any]:
    s = view.service
    out: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "service_type": s.service_type,
        "type": s.type,
        "status": s.status,
        "endpoint": s.endpoint,
        "pricing_amount": s.pricing_amount,
        "pricing_type": s.pricing_type,
        "pricing_interval": s.pricing_interval,
        "pricing_unit": s.pricing_unit,
        "capabilities": s.capabilities,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
        "interfaces": [interface_out(i) for i in view.interfaces],
        **policy_out(view, policy),
    }
    if view.docker is not None:
        out["docker_details"] = docker_details_out(view.docker)
    if view.standalone is not None:
        out["standalone_details"] = standalone_details_out(view.standalone)
    if view.data is not None:
        out["data_details"] = data_details_out(view.data)
    return out


def suggested_out(specs: list[Any]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        item = {"interface_type": str(spec.interface_type), "description": spec.description}
        if spec.path:
            item["path"] = spec.path
        if spec.mount_function:
            item["mount_function"] = spec.mount_function
        out.append(item)
    return out


def workflow_out(w: Workflow) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "description": w.description,
        "definition": w.definition,
        "created_at": iso(w.created_at),
        "updated_at": iso(w.updated_at),
    }


def node_out(n: WorkflowNode) -> dict[str, Any]:
    return {
        "id": n.id,
        "workflow_id": n.workflow_id,
        "node_type": n.node_type,
        "peer_id": n.peer_id,
        "service_id": n.service_id,
        "service_name": n.service_name,
        "config": n.config,
        "gui_props": n.gui_props,
    }


def connection_out(c: WorkflowConnection) -> dict[str, Any]:
    return {
        "id": c.id,
        "workflow_id": c.workflow_id,
        "source_node_id": c.source_node_id,
        "source_interface_id": c.source_interface_id,
        "target_node_id": c.target_node_id,
        "target_interface_id": c.target_interface_id,
    }


def execution_out(e: WorkflowExecution) -> dict[str, Any]:
    return {
        "id": e.id,
        "workflow_id": e.workflow_id,
        "status": e.status,
        "started_at": iso(e.started_at),
        "completed_at": iso(e.completed_at),
        "error": e.error,
        "progress": e.progress,
        "trigger": e.trigger,
        "prefect_flow_run_id": e.prefect_flow_run_id,
        "created_at": iso(e.created_at),
    }


def job_out(j: JobExecution) -> dict[str, Any]:
    return {
        "id": j.id,
        "workflow_execution_id": j.workflow_execution_id,
        "workflow_id": j.workflow_id,
        "node_id": j.node_id,
        "service_id": j.service_id,
        "peer_id": j.peer_id,
        "requester_peer_id": j.requester_peer_id,
        "status": j.status,
        "attempt": j.attempt,
        "exit_code": j.exit_code,
        "error": j.error,
        "prefect_task_run_id": j.prefect_task_run_id,
        "created_at": iso(j.created_at),
        "started_at": iso(j.started_at),
        "completed_at": iso(j.completed_at),
    }


def job_interface_out(i: JobExecutionInterface) -> dict[str, Any]:
    return {
        "id": i.id,
        "job_execution_id": i.job_execution_id,
        "interface_id": i.interface_id,
        "interface_type": i.interface_type,
        "direction": i.direction,
        "path": i.path,
        "value": i.value,
        "artifact_hash": i.artifact_hash,
        "size": i.size,
    }


def blacklist_out(e: BlacklistEntry) -> dict[str, Any]:
    return {"peer_id": e.peer_id, "reason": e.reason, "blacklisted_at": iso(e.blacklisted_at)}
