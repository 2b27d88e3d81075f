"""Database tables. Every resource of the API reference has its table here.

Schema changes go through the migrations in ``orchestrator/migrations``; a change to this file
without a new migration is caught by ``tests/orchestrator/test_migrations.py``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from executors.base import utcnow


def _json(default: Any = None) -> Any:
    factory = dict if default is None else default
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))


class Service(SQLModel, table=True):
    __tablename__ = "services"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    description: str = ""
    service_type: str = Field(index=True)
    type: str = ""
    status: str = "ACTIVE"
    endpoint: str = ""
    pricing_amount: float = 0.0
    pricing_type: str = "FREE"
    pricing_interval: str = ""
    pricing_unit: str = ""
    capabilities: dict[str, Any] = _json()
    # Who may use it and how (see ``orchestrator.peer_policy``): access "public", "peers" (the
    # ``allowed_peers``) or "private", None for the node's default (DATA: "private");
    # allow_network None: the node's default; limits: overrides of the node's job limits.
    access: str | None = None
    allowed_peers: list[str] = _json(list)
    allow_command: bool = True
    allow_args: bool = False
    allow_network: bool | None = None
    limits: dict[str, Any] = _json()
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class ServiceInterface(SQLModel, table=True):
    __tablename__ = "service_interfaces"

    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(foreign_key="services.id", ondelete="CASCADE", index=True)
    interface_type: str
    path: str = ""
    mount_function: str = ""
    description: str = ""


class DockerDetails(SQLModel, table=True):
    __tablename__ = "docker_service_details"

    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(foreign_key="services.id", ondelete="CASCADE", unique=True)
    image_name: str
    image_tag: str = "latest"
    image_id: str = ""
    source: str = "registry"
    compose_path: str = ""
    entrypoint: str = ""
    cmd: str = ""
    build_path: str = ""


class StandaloneDetails(SQLModel, table=True):
    __tablename__ = "standalone_service_details"

    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(foreign_key="services.id", ondelete="CASCADE", unique=True)
    executable_path: str = ""
    arguments: list[str] = _json(list)
    working_directory: str = ""
    environment_variables: dict[str, str] = _json()
    timeout_seconds: int = 300
    run_as_user: str = ""
    source: str = "local"
    install_dir: str = ""


class DataDetails(SQLModel, table=True):
    __tablename__ = "data_service_details"

    id: int | None = Field(default=None, primary_key=True)
    service_id: int = Field(foreign_key="services.id", ondelete="CASCADE", unique=True)
    file_path: str = ""
    original_name: str = ""
    file_size: int = 0
    file_hash: str = ""
    encryption_method: str = "AES-256-GCM"
    # Returned by GET /api/services/{id}/passphrase by design; nowhere else.
    passphrase: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class Workflow(SQLModel, table=True):
    __tablename__ = "workflows"

    id: int | None = Field(default=None, primary_key=True)
    name: str
    description: str = ""
    definition: dict[str, Any] = _json()
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class WorkflowNode(SQLModel, table=True):
    __tablename__ = "workflow_nodes"

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: int = Field(foreign_key="workflows.id", ondelete="CASCADE", index=True)
    node_type: str = "SERVICE"
    peer_id: str = ""
    service_id: int | None = None
    service_name: str = ""
    config: dict[str, Any] = _json()
    gui_props: dict[str, Any] = _json()
    # How the original web UI's editor draws the node, kept as it sent them: service_type,
    # order, interfaces, pricing_* (the engine reads none of it).
    card: dict[str, Any] = _json()


class WorkflowConnection(SQLModel, table=True):
    __tablename__ = "workflow_connections"

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: int = Field(foreign_key="workflows.id", ondelete="CASCADE", index=True)
    source_node_id: int = Field(foreign_key="workflow_nodes.id", ondelete="CASCADE")
    source_interface_id: int | None = None
    # An interface may be named by its type instead of (or beside) its id.
    source_interface_type: str | None = None
    # None: the requesting node (the "Local Peer"): the output is a result of the workflow,
    # delivered to the node that runs it.
    target_node_id: int | None = Field(default=None, foreign_key="workflow_nodes.id",
                                       ondelete="CASCADE")
    target_interface_id: int | None = None
    target_interface_type: str | None = None
    # The name the output gets where it is delivered (None: its own).
    destination_file_name: str | None = None


class WorkflowUIState(SQLModel, table=True):
    __tablename__ = "workflow_ui_states"

    workflow_id: int = Field(foreign_key="workflows.id", ondelete="CASCADE", primary_key=True)
    ui_state: dict[str, Any] = _json()
    updated_at: dt.datetime = Field(default_factory=utcnow)


class WorkflowExecution(SQLModel, table=True):
    __tablename__ = "workflow_executions"

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: int = Field(foreign_key="workflows.id", ondelete="CASCADE", index=True)
    status: str = "PENDING"
    plan: dict[str, Any] = _json()
    error: str | None = None
    progress: int = 0
    prefect_flow_run_id: str | None = None
    trigger: str = "api"
    # A resumed execution: the one it carries on from (``POST .../resume``).
    resumed_from: int | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None


class JobExecution(SQLModel, table=True):
    __tablename__ = "job_executions"

    id: int | None = Field(default=None, primary_key=True)
    workflow_execution_id: int | None = Field(
        default=None, foreign_key="workflow_executions.id", ondelete="CASCADE", index=True
    )
    workflow_id: int | None = Field(default=None, index=True)
    node_id: int | None = None
    service_id: int | None = None
    peer_id: str = ""
    requester_peer_id: str = ""
    status: str = "PENDING"
    attempt: int = 0
    exit_code: int | None = None
    error: str | None = None
    prefect_task_run_id: str | None = None
    # What decides the job's outputs, hashed (orchestrator.content_identity.job_key).
    job_key: str = Field(default="", index=True)
    # The signed receipt of a completed job (orchestrator.receipts: a DSSE envelope), and its
    # digest, which the receipts of the jobs that read its outputs name.
    receipt: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    receipt_digest: str = ""
    # A completed job's outputs by key ("#<interface id>" aliases too), each
    # {sha256, size, kind, peer_id} (peer_id: the holder, "" for this node): what a resumed
    # execution or a cache hit hands downstream instead of running the job.
    output_refs: dict[str, Any] | None = Field(default=None,
                                               sa_column=Column(JSON, nullable=True))
    # A job not run but reused: the digest of the receipt whose outputs it took (a resumed
    # execution's job, or a cache hit).
    cached_from: str = ""
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None


class JobExecutionInterface(SQLModel, table=True):
    __tablename__ = "job_execution_interfaces"

    id: int | None = Field(default=None, primary_key=True)
    job_execution_id: int = Field(foreign_key="job_executions.id", ondelete="CASCADE", index=True)
    interface_id: int | None = None
    interface_type: str
    direction: str = "output"
    path: str = ""
    value: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    artifact_hash: str = ""
    size: int = 0
    # An output delivered to the requesting node: the file name it is delivered as.
    delivered_as: str | None = None


class WorkflowSchedule(SQLModel, table=True):
    """A cron schedule of a workflow, run as a Prefect deployment of ``run_workflow``."""

    __tablename__ = "workflow_schedules"

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: int = Field(foreign_key="workflows.id", ondelete="CASCADE", index=True)
    cron: str
    timezone: str = "UTC"
    active: bool = True
    deployment_id: str | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)


class BlacklistEntry(SQLModel, table=True):
    __tablename__ = "blacklist"

    peer_id: str = Field(primary_key=True)
    reason: str = "Manually blacklisted"
    blacklisted_at: dt.datetime = Field(default_factory=utcnow)


class RelayPreference(SQLModel, table=True):
    __tablename__ = "relay_preferences"

    peer_id: str = Field(primary_key=True)
    preferred: bool = True
    updated_at: dt.datetime = Field(default_factory=utcnow)
