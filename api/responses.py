"""Response models of the API reference: the public variant of each table, and the envelopes.

Every route declares one of these as its response model, so ``/openapi.json`` describes every
answer. A public variant is read from its row (``Model.model_validate(row)``); it names the
columns the reference shows (never secrets such as a DATA service's passphrase or install
paths). Times are ``YYYY-MM-DDTHH:MM:SSZ`` in UTC. A key the reference leaves out when it does
not apply (a service's ``docker_details``, a suggestion's empty ``path``) is left out, not null.
"""

from __future__ import annotations

import datetime as dt
import operator
import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, computed_field

from orchestrator.content_identity import service_digest
from orchestrator.peer_policy import PeerPolicy
from orchestrator.registry import ServiceView
from orchestrator.service_policy import LIMIT_KEYS


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[dt.datetime, PlainSerializer(iso, return_type=str)]
OptionalTimestamp = Annotated[dt.datetime | None, PlainSerializer(iso, return_type=str | None)]
Number = int | float


def _omitted() -> Any:
    """A field left out of the answer when it is None."""
    return Field(default=None, exclude_if=_is_none)


def _omitted_empty() -> Any:
    """A text field left out of the answer when it is empty."""
    return Field(default="", exclude_if=operator.not_)


def _is_none(value: Any) -> bool:
    return value is None


class Public(BaseModel):
    """A public variant: built from a row's attributes."""

    model_config = ConfigDict(from_attributes=True)


class Message(BaseModel):
    message: str


class Success(BaseModel):
    success: bool = True
    message: str


# -- auth --------------------------------------------------------------------------------------
class Challenge(BaseModel):
    challenge: str
    expires_in: Number


class LoginAnswer(BaseModel):
    success: bool = True
    token: str
    peer_id: str


class Health(BaseModel):
    status: str
    peer_id: str


# -- node and peers ----------------------------------------------------------------------------
class CurrentRelaySession(BaseModel):
    """A NAT node's session with its relay; the bytes (and the cost at the relay's price) as
    the relay counts them, at its last keepalive answer."""

    relay_peer_id: str
    relay_node_id: str
    endpoint: str
    latency: str
    latency_ms: int
    pricing: Number
    duration_seconds: int
    ingress_bytes: int
    egress_bytes: int
    total_bytes: int
    current_cost: Number


class Topology(BaseModel):
    local_subnet: str = Field(description='"ip/prefix" of the node on its LAN, e.g. '
                              '"192.168.1.5/24"; empty when it has none')


class NodeStats(BaseModel):
    """The reference's figures, and beside them those the original web UI's dashboard reads:
    ``node_type`` (``private`` for a node behind NAT, which keeps a relay), ``quic_port``, the
    NAT type and public endpoint the node learned, and on a relay its sessions now, their cap,
    its price and the bytes they carried."""

    peer_id: str
    dht_node_id: str
    relay_mode: bool
    nat_mode: bool
    connected_relay: str | None
    active_connections: int
    node_type: str
    quic_port: int
    nat_type: str = Field(description='"public", "cone", "symmetric" or "unknown": what peers '
                          'on distinct addresses see of the QUIC port')
    public_endpoint: str = Field(description='"ip:port" as peers beyond the NAT see the QUIC '
                                 'port; empty while unknown')
    topology: Topology
    connections_opened: int = Field(description="verified peer connections since start")
    connections_direct: int = Field(description="of those, how many were direct (hole punched "
                                    "ones included)")
    connections_relayed_now: int = Field(description="peers reached through a relay now")
    hole_punch_attempts: int
    hole_punch_successes: int
    hole_punch_p50_ms: Number | None = Field(description="median time from reaching a peer "
                                             "through a relay to a direct connection")
    active_sessions: int | None = _omitted()
    max_connections: int | None = _omitted()
    pricing_per_gb: Number | None = _omitted()
    total_bytes: int | None = _omitted()
    current_relay_session: CurrentRelaySession | None = _omitted()


class NodeStatus(BaseModel):
    peer_id: str
    dht_node_id: str
    uptime_seconds: int
    known_peers: int
    stats: NodeStats
    files_count: int
    apps_count: int


class Gpu(BaseModel):
    """A GPU. In a peer's DHT summary only the vendor and the memory are known (shared evenly
    among its GPUs); the other texts are empty."""

    model_config = ConfigDict(extra="ignore")

    index: int = Field(description="Position of the GPU on its machine, from 0")
    name: str = Field(description='Model name, e.g. "NVIDIA H200"; empty when unknown')
    vendor: str = Field(description='e.g. "NVIDIA"; empty when unknown, never null')
    memory_mb: int = Field(description="Total memory, MiB")
    uuid: str = Field(description="The driver's GPU UUID; empty when unknown")
    driver_version: str = Field(description="Empty when unknown")


class SystemCapabilities(BaseModel):
    """What a machine offers. Sizes are MiB; disk is the file system of the node's data
    directory. For a peer, filled from its DHT summary: what the summary lacks (kernel, CPU
    model, versions, free memory and disk, GPU names) is empty or 0. Keys not named here are
    left out."""

    model_config = ConfigDict(extra="ignore")

    platform: str = Field(description='"linux", "darwin", "win32", ...')
    architecture: str = Field(description='"amd64", "arm64", "arm", or the machine name')
    kernel_version: str
    cpu_model: str
    cpu_cores: int = Field(description="Physical cores")
    cpu_threads: int = Field(description="Logical CPUs")
    total_memory_mb: int
    available_memory_mb: int
    total_disk_mb: int
    available_disk_mb: int
    has_docker: bool
    docker_version: str = Field(description="The Docker engine's version; empty without one")
    has_python: bool
    python_version: str
    gpus: list[Gpu] = Field(description="NVIDIA GPUs seen through NVML; empty without any")


class NodeCapabilities(BaseModel):
    docker_available: bool
    docker_version: str | None
    system: SystemCapabilities


class Peer(BaseModel):
    """A peer of our topic. A peer known only from a live connection (``source`` "quic", no
    signed record yet) shows empty texts, 0 and false."""

    peer_id: str
    dht_node_id: str = Field(description="Its DHT node id (40 hex digits), or empty")
    is_relay: bool = Field(description="It acts as a relay for peers behind NAT")
    is_store: bool = Field(description="It provides DHT storage")
    files_count: int = Field(description="Its ACTIVE DATA services")
    apps_count: int = Field(description="Its ACTIVE DOCKER and STANDALONE services")
    last_seen: str = Field(description="YYYY-MM-DDTHH:MM:SSZ, UTC")
    topic: str
    source: str = Field(description='"dht" (a signed record) or "quic" (a live connection)')
    is_behind_nat: bool
    nat_type: str = Field(description='e.g. "full_cone", "restricted"; empty when unknown')
    using_relay: bool = Field(description="It is reached through a relay now")
    connected_relay_id: str = Field(description="Peer id of that relay, or empty")
    service_digests: list[str] = Field(
        description='Content digests ("sha256:<hex>") of services it '
        "offers to anyone, from its signed record (at most 16)")


class PeerList(BaseModel):
    peers: list[Peer]
    total: int


class PeerCapabilities(BaseModel):
    """A peer's capabilities from its DHT summary, or ``error`` when there are none."""

    peer_id: str
    capabilities: SystemCapabilities | None = _omitted()
    error: str | None = _omitted()


# -- services ----------------------------------------------------------------------------------
class InterfacePublic(Public):
    id: int
    service_id: int
    interface_type: str
    path: str
    mount_function: str
    description: str


class DockerDetailsPublic(Public):
    id: int
    service_id: int
    image_name: str
    image_tag: str
    source: str
    compose_path: str
    entrypoint: str
    cmd: str


class StandaloneDetailsPublic(Public):
    id: int
    service_id: int
    executable_path: str
    arguments: list[str]
    working_directory: str
    environment_variables: dict[str, str]
    timeout_seconds: int
    run_as_user: str
    source: str


class DataDetailsPublic(Public):
    """A DATA service's file: the reference's fields, and beside them the names the original
    web UI's service page reads (``size_bytes``: as stored, encrypted; ``original_size_bytes``
    and ``hash``: of the clear file; ``compression_type``: ``tar.gz`` for a folder or an
    archive, else ``none``)."""

    id: int
    service_id: int
    file_path: str
    file_size: int
    file_hash: str
    encryption_method: str
    original_name: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size_bytes(self) -> int:
        try:
            return os.stat(self.file_path).st_size if self.file_path else 0
        except OSError:
            return 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def original_size_bytes(self) -> int:
        return self.file_size

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hash(self) -> str:
        return self.file_hash

    @computed_field  # type: ignore[prop-decorator]
    @property
    def compression_type(self) -> str:
        return "tar.gz" if self.original_name.endswith((".tar.gz", ".tgz")) else "none"


class LimitsPublic(BaseModel):
    """A service's own limits (null: the node's default)."""

    memory_mb: Number | None
    cpus: Number | None
    pids: Number | None
    output_mb: Number | None
    timeout_max_seconds: Number | None


class EffectiveLimits(BaseModel):
    """The limits that apply to the service's jobs (0: none)."""

    memory_mb: Number
    cpus: Number
    pids: Number
    output_mb: Number
    timeout_max_seconds: Number


class ServicePublic(Public):
    id: int
    name: str
    description: str
    service_type: str
    type: str
    status: str
    endpoint: str
    pricing_amount: float
    pricing_type: str
    pricing_interval: str
    pricing_unit: str
    capabilities: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp
    interfaces: list[InterfacePublic]
    access: str
    access_is_default: bool
    allowed_peers: list[str]
    allow_command: bool
    allow_args: bool
    allow_network: bool
    limits: LimitsPublic
    effective_limits: EffectiveLimits
    content_digest: str = Field(description='"sha256:<hex>": the same on every peer offering '
                                'the same image, executable or file; empty while unknown')
    docker_details: DockerDetailsPublic | None = _omitted()
    standalone_details: StandaloneDetailsPublic | None = _omitted()
    data_details: DataDetailsPublic | None = _omitted()

    @classmethod
    def of(cls, view: ServiceView, policy: PeerPolicy) -> ServicePublic:
        """The service with its policy fields as they apply (the node's defaults where it
        sets none)."""
        s = view.service
        own = s.limits or {}
        return cls.model_validate({
            **{name: getattr(s, name) for name in _SERVICE_COLUMNS},
            "interfaces": view.interfaces,
            "access": policy.access(s),
            "access_is_default": s.access is None,
            "content_digest": service_digest(view),
            "allowed_peers": list(policy.allowed_peers(s)),
            "allow_command": s.allow_command,
            "allow_args": s.allow_args,
            "allow_network": policy.network(s),
            "limits": {k: own.get(k) for k in LIMIT_KEYS},
            "effective_limits": policy.limits(s),
            "docker_details": view.docker,
            "standalone_details": view.standalone,
            "data_details": view.data,
        })


_SERVICE_COLUMNS = ("id", "name", "description", "service_type", "type", "status", "endpoint",
                    "pricing_amount", "pricing_type", "pricing_interval", "pricing_unit",
                    "capabilities", "created_at", "updated_at")


class SuggestedInterface(Public):
    interface_type: str
    description: str
    path: str = _omitted_empty()
    mount_function: str = _omitted_empty()


class ServiceList(BaseModel):
    services: list[ServicePublic]
    total: int


class ServiceOne(BaseModel):
    service: ServicePublic


class ServiceSaved(BaseModel):
    service: ServicePublic
    message: str


class ServiceCreated(BaseModel):
    """A service made from a source, with the interfaces its source suggests."""

    success: bool = True
    service: ServicePublic
    suggested_interfaces: list[SuggestedInterface]


class StatusChanged(BaseModel):
    message: str
    status: str


class Passphrase(BaseModel):
    passphrase: str
    data_details: DataDetailsPublic


class InterfaceList(BaseModel):
    interfaces: list[InterfacePublic]
    total: int


class OperationStarted(BaseModel):
    operation_id: str
    message: str


class GitValidation(BaseModel):
    valid: bool
    error: str | None = _omitted()


class DockerDetailsOne(BaseModel):
    details: DockerDetailsPublic


class Suggestions(BaseModel):
    suggested_interfaces: list[SuggestedInterface]


class StandaloneDetailsOne(BaseModel):
    success: bool = True
    service: ServicePublic
    details: StandaloneDetailsPublic


# -- workflows ---------------------------------------------------------------------------------
class WorkflowPublic(Public):
    id: int
    name: str
    description: str
    definition: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp


class WorkflowNodePublic(Public):
    """A workflow node: the reference's fields, and (where known) the original web UI's flat
    card fields, derived from them and from the card it saved."""

    id: int
    workflow_id: int
    node_type: str
    peer_id: str
    service_id: int | None
    service_name: str
    config: dict[str, Any]
    gui_props: dict[str, Any]
    gui_x: Number | None = _omitted()
    gui_y: Number | None = _omitted()
    service_type: str | None = _omitted()
    order: int | None = _omitted()
    interfaces: list[dict[str, Any]] | None = _omitted()
    entrypoint: list[str] | None = _omitted()
    cmd: list[str] | None = _omitted()
    pricing_amount: Number | None = _omitted()
    pricing_type: str | None = _omitted()
    pricing_interval: str | None = _omitted()
    pricing_unit: str | None = _omitted()

    @classmethod
    def of(cls, row: Any) -> WorkflowNodePublic:
        gui, config, card = row.gui_props or {}, row.config or {}, row.card or {}

        def position(axis: str) -> Number | None:
            value = gui.get(axis, (gui.get("position") or {}).get(axis)
                            if isinstance(gui.get("position"), dict) else None)
            return value if isinstance(value, int | float) and not isinstance(value, bool) \
                else None

        def words(key: str) -> list[str] | None:
            value = config.get(key)
            return value if isinstance(value, list) else None

        return cls.model_validate(row).model_copy(update={
            "gui_x": position("x"), "gui_y": position("y"),
            "entrypoint": words("entrypoint"), "cmd": words("cmd"),
            **{k: card.get(k) for k in ("service_type", "order", "interfaces",
                                        "pricing_amount", "pricing_type",
                                        "pricing_interval", "pricing_unit")}})


class ConnectionPublic(Public):
    """A connection in the reference's names (``target_node_id`` null: the requesting node);
    ``destination_file_name`` only when it has one."""

    id: int
    workflow_id: int
    source_node_id: int
    source_interface_id: int | None
    target_node_id: int | None
    target_interface_id: int | None
    destination_file_name: str | None = _omitted()


class UIConnection(BaseModel):
    """A connection in the original web UI's names: ``to_node_id`` null is its "Local Peer",
    the requesting node."""

    id: int
    workflow_id: int
    from_node_id: int
    from_interface_type: str | None
    to_node_id: int | None
    to_interface_type: str | None
    destination_file_name: str | None

    @classmethod
    def of(cls, row: Any) -> UIConnection:
        return cls(id=row.id, workflow_id=row.workflow_id, from_node_id=row.source_node_id,
                   from_interface_type=row.source_interface_type or (
                       "STDOUT" if row.source_interface_id is None else None),
                   to_node_id=row.target_node_id,
                   to_interface_type=row.target_interface_type or (
                       "STDIN" if row.target_interface_id is None else None),
                   destination_file_name=row.destination_file_name)


class ConnectionCreated(ConnectionPublic):
    """The answer to a new connection: the reference's row; for a body in the original web
    UI's names, also the row in those names under ``connection`` (which is what it reads)."""

    connection: UIConnection | None = _omitted()

    @classmethod
    def of(cls, row: Any, *, ui: bool) -> ConnectionCreated:
        return cls.model_validate(ConnectionPublic.model_validate(row).model_dump()
                                  | {"connection": UIConnection.of(row) if ui else None})


class ConnectionRow(UIConnection, ConnectionPublic):
    """A listed connection: both name sets, each end's interface type, and an explicit null
    for an end at the requesting node."""

    source_interface_type: str | None
    target_interface_type: str | None
    destination_file_name: str | None

    @classmethod
    def of(cls, row: Any) -> ConnectionRow:
        return cls.model_validate(ConnectionPublic.model_validate(row).model_dump()
                                  | UIConnection.of(row).model_dump()
                                  | {"source_interface_type": row.source_interface_type,
                                     "target_interface_type": row.target_interface_type})


class WorkflowListItem(WorkflowPublic):
    """A workflow as ``GET /api/workflows`` lists it: with ``status``, its latest execution's
    (lowercase, for the original web UI's list), once it has run; absent before."""

    status: str | None = _omitted()


class WorkflowList(BaseModel):
    workflows: list[WorkflowListItem]
    total: int


class NodeList(BaseModel):
    nodes: list[WorkflowNodePublic]
    total: int


class ConnectionList(BaseModel):
    """The workflow's connections. A connection from a node placed by the original web UI's
    editor (a node with a card) is listed with both name sets; one from a node made in the
    reference's shape, in the reference's names only, as nodes are."""

    connections: list[ConnectionRow | ConnectionPublic]
    total: int

    @classmethod
    def of(cls, rows: list[Any], carded: set[int]) -> ConnectionList:
        items: list[ConnectionRow | ConnectionPublic] = [
            ConnectionRow.of(c) if c.source_node_id in carded
            else ConnectionPublic.model_validate(c) for c in rows]
        return cls(connections=items, total=len(items))


class UIState(BaseModel):
    """A state the original web UI has written: the reference's ``{"ui_state": {...}}``;
    beside it, at the top level, the keys the editor reads (``snap_to_grid``, ``zoom_level``,
    ``pan_x``, ``pan_y``, ``self_peer_x``, ``self_peer_y``), from the state or the UI's
    defaults."""

    ui_state: dict[str, Any]
    snap_to_grid: Any
    zoom_level: Any
    pan_x: Any
    pan_y: Any
    self_peer_x: Any
    self_peer_y: Any

    @classmethod
    def of(cls, state: dict[str, Any], defaults: dict[str, Any]) -> UIState:
        return cls(ui_state=state, **{k: state.get(k, v) for k, v in defaults.items()})


def ui_state_answer(state: dict[str, Any], defaults: dict[str, Any],
                    ui_only: tuple[str, ...]) -> UIState | ReferenceUIState:
    """The UI's keys beside the reference's ``ui_state`` once the UI has written the state
    (it holds one of ``ui_only``, the keys only the UI writes); else the reference's answer."""
    if any(k in state for k in ui_only):
        return UIState.of(state, defaults)
    return ReferenceUIState(ui_state=state)


class ReferenceUIState(BaseModel):
    ui_state: dict[str, Any]


# -- executions --------------------------------------------------------------------------------
class ExecutionPublic(Public):
    id: int
    workflow_id: int
    status: str
    started_at: OptionalTimestamp
    completed_at: OptionalTimestamp
    error: str | None
    progress: Number
    trigger: str
    prefect_flow_run_id: str | None
    created_at: OptionalTimestamp
    resumed_from: int | None = Field(
        default=None, description="The execution this one resumes (POST .../resume)")
    resumed_by: list[int] = Field(default_factory=list,
                                  description="The executions that resume this one")


class JobPublic(Public):
    id: int
    workflow_execution_id: int | None
    workflow_id: int | None
    node_id: int | None
    service_id: int | None
    peer_id: str
    requester_peer_id: str
    status: str
    attempt: int
    exit_code: int | None
    error: str | None
    prefect_task_run_id: str | None
    job_key: str = Field(description='"sha256:<hex>" of what decides the outputs: the service\'s '
                         'content digest, command, environment, arguments and input hashes; '
                         'empty until the job ran')
    receipt_digest: str = Field(default="", description='"sha256:<hex>" of the job\'s signed '
                                'receipt (GET /api/job-executions/{id}/receipt); empty for none')
    cached_from: str = Field(default="", description="Set when the job did not run but took "
                             "the outputs of an earlier one (a resumed execution, a cached "
                             "result): the digest of that job's receipt")
    created_at: OptionalTimestamp
    started_at: OptionalTimestamp
    completed_at: OptionalTimestamp


class ExecutionJob(JobPublic):
    """A job as the original web UI's execution page reads it: the reference's fields, and
    the names that page uses."""

    job_name: str = Field(description="The name of the service the job runs")
    executor_peer_id: str = Field(description="The peer that runs the job (its peer_id)")


class DeliveredResult(BaseModel):
    """An output delivered to this node (a connection to the requesting node)."""

    job_execution_id: int
    node_id: int | None
    interface_id: int = Field(description="The job interface row: its content is at "
                                          "/api/job-executions/{job}/interfaces/{id}/content")
    interface_type: str
    file_name: str
    artifact_hash: str
    size: int

    @classmethod
    def of(cls, job: Any, row: Any) -> DeliveredResult:
        return cls(job_execution_id=job.id, node_id=job.node_id, interface_id=row.id,
                   interface_type=row.interface_type, file_name=row.delivered_as,
                   artifact_hash=row.artifact_hash, size=row.size)


class ExecutionStatus(ExecutionPublic):
    """``GET /api/workflow-executions/{id}/status``: the reference's execution, and beside it
    the same execution and its jobs in the shape the original web UI reads
    (``{execution, jobs, total}``), and the results delivered to this node."""

    execution: ExecutionPublic
    jobs: list[ExecutionJob]
    total: int
    results: list[DeliveredResult]

    @classmethod
    def of(cls, row: Any, jobs: list[Any], delivered: list[tuple[Any, Any]],
           resumed_by: list[int] | None = None) -> ExecutionStatus:
        execution = ExecutionPublic.model_validate(row).model_copy(
            update={"resumed_by": list(resumed_by or [])})
        names = {n.get("node_id"): n.get("service_name") or ""
                 for n in (row.plan or {}).get("nodes", []) if isinstance(n, dict)}
        rows = [ExecutionJob(**JobPublic.model_validate(j).model_dump(),
                             job_name=names.get(j.node_id) or f"service-{j.service_id}",
                             executor_peer_id=j.peer_id) for j in jobs]
        return cls(**execution.model_dump(), execution=execution, jobs=rows, total=len(rows),
                   results=[DeliveredResult.of(job, r) for job, r in delivered])


class JobSummary(Public):
    """A job as the older per-workflow list shows it."""

    id: int
    workflow_id: int | None
    status: str
    created_at: OptionalTimestamp


class JobInterfacePublic(Public):
    id: int
    job_execution_id: int
    interface_id: int | None
    interface_type: str
    direction: str
    path: str
    value: str | None
    artifact_hash: str
    size: int
    delivered_as: str | None = _omitted()


class ExecutionList(BaseModel):
    executions: list[ExecutionPublic]
    total: int


class JobList(BaseModel):
    jobs: list[JobPublic]
    total: int


class JobSummaryList(BaseModel):
    jobs: list[JobSummary]
    total: int


class JobRecordList(BaseModel):
    """Job executions under the older ``executions`` key."""

    executions: list[JobPublic]
    total: int


class JobInterfaceList(BaseModel):
    interfaces: list[JobInterfacePublic]
    total: int


class ExecutionStarted(BaseModel):
    message: str
    workflow_id: int
    note: str
    execution_id: int


class ExecutionResumed(ExecutionStarted):
    resumed_from: int = Field(description="The execution it carries on from")


class PlannedInput(BaseModel):
    from_node: int
    output: str = Field(description="The upstream output it takes")
    from_peer: str | None = Field(description="The peer that holds it (null: placed, unknown)")
    bytes: int | None = Field(description="Bytes it moves to this node's peer (0: the same "
                              "peer); null until the upstream has run")


class PlannedNode(BaseModel):
    node_id: int
    service_name: str
    peer_id: str | None = Field(description="The peer it would run on (null: a node placed "
                                "by content that no peer offers now)")
    service_id: int | None
    reached: str = Field(description='"local", "direct", "relayed", "not_connected" (dialled '
                         'when the job starts) or "no_peer"')
    cached: bool | None = Field(description="Whether its result would come from the cache; "
                                "null: unknown until its upstream has run")
    job_key: str | None
    bytes_in: int | None = Field(description="Bytes its inputs move between peers; null: not "
                                 "known before running")
    inputs: list[PlannedInput]
    candidates: list[str] = Field(description="A placed node: the peers that offer its "
                                  "service now, in the order attempts go to them")


class WorkflowPlanPreview(BaseModel):
    """``POST /api/workflows/{id}/plan``: what an execution would do; nothing runs."""

    workflow_id: int
    nodes: list[PlannedNode]
    bytes_between_peers: int | None = Field(description="All inputs' bytes between peers; "
                                            "null when one is not known")


class ReceiptChain(BaseModel):
    """An execution's receipts, in the order they were made: each names the receipts of the
    jobs whose outputs it read, which come before it (``remote-network verify`` checks it)."""

    execution_id: int
    receipts: list[dict[str, Any]] = Field(description="DSSE envelopes (in-toto Statement v1)")
    total: int


class ExecutionCancelled(BaseModel):
    success: bool = True
    message: str
    status: str


class SchedulePublic(Public):
    id: int
    workflow_id: int
    cron: str
    timezone: str
    active: bool
    deployment_id: str | None
    created_at: OptionalTimestamp


class ScheduleList(BaseModel):
    schedules: list[SchedulePublic]
    total: int


class ScheduleCreated(BaseModel):
    schedule: SchedulePublic
    message: str


class ScheduleRunRequested(BaseModel):
    message: str
    flow_run_id: str | None


# -- blacklist ---------------------------------------------------------------------------------
class BlacklistEntryPublic(Public):
    peer_id: str
    reason: str | None
    blacklisted_at: OptionalTimestamp


class BlacklistList(BaseModel):
    blacklist: list[BlacklistEntryPublic]
    peer_ids: list[str]
    total: int


class BlacklistAdded(BaseModel):
    peer_id: str
    reason: str | None
    message: str


class BlacklistCheck(BaseModel):
    peer_id: str
    is_blacklisted: bool


# -- relay -------------------------------------------------------------------------------------
class RelaySession(BaseModel):
    """A peer relayed through this node (relay mode)."""

    session_id: str
    client_node_id: str
    client_peer_id: str
    session_type: str
    start_time: int
    duration_seconds: int
    ingress_bytes: int
    egress_bytes: int
    total_bytes: int
    earnings: Number
    last_keepalive: int


class RelayCandidate(BaseModel):
    """A relay this node may use (NAT mode), best first."""

    node_id: str
    peer_id: str
    endpoint: str
    latency: str
    latency_ms: int
    reputation_score: Number
    pricing_per_gb: Number
    capacity: int
    last_seen: int
    is_connected: bool
    is_preferred: bool
    is_available: bool
    unavailable_msg: str
