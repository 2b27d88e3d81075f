"""The node's one settings object.

Values come, in rising priority, from the defaults below, environment variables prefixed
``RN_`` (``RN_DATA_DIR``, ``RN_API_PORT``, ...) and the CLI flags of ``remote-network start``.
Nothing else in the project reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "remote-network"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RN_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    api_host: str = "0.0.0.0"
    api_port: int = 30069
    http_host: str = "127.0.0.1"
    http_port: int = 8081
    quic_port: int = 30070
    dht_port: int = 30071
    p2p_host: str = "0.0.0.0"
    database_url: str | None = None
    relay: bool = False
    nat: bool = False
    # Relay mode: how many peers behind NAT it takes at once, and its price per GB relayed.
    relay_max_sessions: int = Field(default=100, gt=0)
    relay_price_per_gb: float = Field(default=0.01, ge=0)
    # NAT mode: how often the relay candidates are probed (and the session kept alive), and
    # how long a probe waits for an answer (seconds).
    relay_probe_seconds: float = Field(default=15.0, gt=0)
    relay_probe_timeout: float = Field(default=5.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    key_passphrase: str | None = None
    key_passphrase_file: Path | None = None
    jwt_ttl_seconds: int = 24 * 3600
    challenge_ttl_seconds: int = 300
    docker_host: str | None = None
    job_timeout_seconds: int = 300
    retry_count: int = 0
    bootstrap: list[str] = Field(default_factory=list)
    topic: str = "remote-network-mesh"
    # WebSocket uploads: an idle session is dropped (and its chunks removed) after the ttl.
    upload_ttl_seconds: float = Field(default=600.0, gt=0)
    upload_max_bytes: int = Field(default=2 * 1024**3, gt=0)
    # Standalone services from git: the longest a build_command may run.
    build_timeout_seconds: float = Field(default=600.0, gt=0)
    # DHT: seconds to wait for a peer's answer, between publications/lookups, before a peer
    # not seen is dropped; the host peers should reach us at (default: the bind address, or
    # the address the bootstrap peer sees, or this machine's interfaces).
    dht_rpc_timeout: float = Field(default=2.0, gt=0)
    dht_refresh_seconds: float = Field(default=30.0, gt=0)
    peer_stale_seconds: float = Field(default=120.0, gt=0)
    # DHT bounds on what strangers store here: keys in all, keys one source address may bring,
    # topic members one source address may bring; and the most peers the directory lists.
    dht_max_values: int = Field(default=4096, gt=0)
    dht_values_per_source: int = Field(default=256, gt=0)
    dht_members_per_source: int = Field(default=8, gt=0)
    peer_book_max: int = Field(default=1024, gt=0)
    # QUIC: incoming connections in all and per peer, streams a peer may have open on one
    # connection; the TLS bulk channel: connections served at once.
    p2p_max_connections: int = Field(default=256, gt=0)
    p2p_max_connections_per_peer: int = Field(default=4, gt=0)
    p2p_max_streams: int = Field(default=64, gt=0)
    bulk_max_connections: int = Field(default=32, gt=0)
    public_host: str | None = None
    prefect_ui: bool = False
    prefect_port: int = 4200
    # An existing Prefect server to use instead of the one the node runs beside itself
    # (RN_PREFECT_API_URL, or Prefect's own PREFECT_API_URL).
    prefect_api_url: str | None = Field(
        default=None, validation_alias=AliasChoices("RN_PREFECT_API_URL", "PREFECT_API_URL"))
    # Prefect's database (SQLAlchemy async URL); default: an embedded PostgreSQL in the data dir,
    # SQLite there when PostgreSQL cannot start.
    prefect_database_url: str | None = None
    # Keep Prefect's event history (its Events page) and run its automations on the Prefect
    # server the node starts. Off by default: every task-run event would be stored and matched
    # against triggers, which costs that server about as much CPU as recording the runs.
    prefect_event_history: bool = False
    # Lines of a job's output (stdout and stderr) sent to Prefect as its task run's logs, shown
    # in the Prefect UI; past this many a job's last log says how many more its LOGS output
    # holds. Sent only with prefect_ui or prefect_api_url (where a UI shows them); 0: none.
    prefect_job_log_lines: int = Field(default=1000, ge=0)
    # Start Prefect in the background when the node starts, so the first execute is not slow.
    prefect_warmup: bool = True
    # How often the node looks for due runs of its scheduled workflows.
    schedule_poll_seconds: float = Field(default=2.0, gt=0)
    # Executions that ended longer ago than this are deleted with their jobs and records (and
    # then the artifacts nothing refers to); 0 keeps them for ever. Swept this often.
    retention_days: float = Field(default=30.0, ge=0)
    retention_sweep_seconds: float = Field(default=3600.0, gt=0)
    # Text outputs (STDOUT, STDERR, LOGS) up to this size are returned inline as `value`.
    output_inline_limit: int = Field(default=64 * 1024, ge=0)

    # -- what other peers may do (see the README's "Security model") --------------------------
    # Access of Docker and standalone services that do not set their own: "public" (any peer
    # not blacklisted), "peers" (those in service_access_peers) or "private" (this node's own
    # workflows only). DATA services are always "private" unless they say otherwise.
    service_access: Literal["public", "peers", "private"] = "public"
    service_access_peers: list[str] = Field(default_factory=list)
    # Limits of every job, unless a service sets its own (0: no limit).
    job_memory_mb: int = Field(default=2048, ge=0)
    job_cpus: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    job_pids: int = Field(default=512, ge=0)
    job_output_mb: int = Field(default=1024, ge=0)
    # The longest run time a job may ask for; a longer, non-finite or non-positive one is refused.
    job_timeout_max_seconds: float = Field(default=24 * 3600.0, gt=0, allow_inf_nan=False)
    # Jobs of other peers running at once, in total (default: two per core) and per peer
    # (default: half of that, at least one); past that they wait in a queue this long, and past
    # the queue they are refused.
    remote_jobs_max: int = Field(default=0, ge=0)  # 0: two per core
    remote_jobs_per_peer: int = Field(default=0, ge=0)  # 0: half the total
    remote_jobs_queue: int = Field(default=32, ge=0)
    # Jobs of other peers get no network unless their service allows it.
    remote_jobs_network: bool = False
    # The user a standalone job of another peer runs as when the node runs as root.
    sandbox_user: str = "nobody"
    # Standalone jobs run in a bubblewrap sandbox; off, they run as plain processes that can
    # read the node's files (only for a node whose every service and peer is trusted).
    job_sandbox: bool = True
    # HTTP API: the largest request body (JSON; uploads go over the WebSocket in chunks) and
    # how long a client may take to send it; login attempts (GET /api/auth/challenge and
    # POST /api/auth/ed25519, each) per client address: a burst, then so many a second.
    http_body_max_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    http_body_timeout_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    auth_rate_burst: int = Field(default=30, ge=1)
    auth_rate_per_second: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    # A built single-page web UI (a folder with an index.html) served at / beside the API.
    web_ui_dir: Path | None = None

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("web_ui_dir", mode="after")
    @classmethod
    def _web_ui(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser().resolve()
        if not value.is_dir():
            raise ValueError(f"web UI folder {value} does not exist or is not a folder")
        if not (value / "index.html").is_file():
            raise ValueError(f"web UI folder {value} has no index.html (build the UI into it "
                             "first)")
        return value

    @property
    def effective_remote_jobs_max(self) -> int:
        return self.remote_jobs_max or 2 * (os.cpu_count() or 1)

    @property
    def effective_remote_jobs_per_peer(self) -> int:
        return self.remote_jobs_per_peer or max(1, self.effective_remote_jobs_max // 2)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'node.db'}"

    def passphrase(self) -> str | None:
        """The identity key's passphrase, from the value or the file, if either is set."""
        if self.key_passphrase:
            return self.key_passphrase
        if self.key_passphrase_file:
            return self.key_passphrase_file.read_text().strip() or None
        return None

    # Paths inside the data dir, in one place.
    @property
    def key_path(self) -> Path:
        return self.data_dir / "identity.key"

    @property
    def authorized_keys_path(self) -> Path:
        return self.data_dir / "authorized_keys"

    @property
    def jwt_secret_path(self) -> Path:
        return self.data_dir / "jwt.secret"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def services_dir(self) -> Path:
        return self.data_dir / "services"

    @property
    def prefect_dir(self) -> Path:
        return self.data_dir / "prefect"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"
