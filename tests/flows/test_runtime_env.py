"""The environment of the Prefect server the node starts beside itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.on_prefect.runtime import prefect_logging_config, server_environment
from orchestrator.config import Settings

DB = "postgresql+asyncpg://u@127.0.0.1:5/prefect"
API = "http://127.0.0.1:4321/api"
PERSISTER = "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"
TRIGGERS = "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED"
FLUSH = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (PERSISTER, TRIGGERS, FLUSH):
        monkeypatch.delenv(key, raising=False)


def test_defaults(tmp_path: Path) -> None:
    env = server_environment(Settings(data_dir=tmp_path), DB, API)
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == DB
    assert env["PREFECT_SERVER_API_PORT"] == "4321"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_UI_ENABLED"] == "false"
    # Prefect reads the interval as int(seconds): a fraction under 1 would become 0.
    assert float(env[FLUSH]) >= 1 and float(env[FLUSH]).is_integer()
    assert env[PERSISTER] == "false" and env[TRIGGERS] == "false"


def test_event_history_on_request(tmp_path: Path) -> None:
    env = server_environment(Settings(data_dir=tmp_path, prefect_event_history=True,
                                      prefect_ui=True), DB, API)
    assert PERSISTER not in env and TRIGGERS not in env
    assert env["PREFECT_UI_ENABLED"] == "true"


def test_environment_overrides_tuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FLUSH, "3")
    monkeypatch.setenv(PERSISTER, "true")
    env = server_environment(Settings(data_dir=tmp_path), DB, API)
    assert env[FLUSH] == "3" and env[PERSISTER] == "true"


def test_prefect_leaves_the_nodes_own_loggers_alone(tmp_path: Path) -> None:
    """The logging configuration the node hands Prefect is Prefect's own without the root and
    the HTTP server's loggers: importing Prefect in the node must not take those over."""
    path = prefect_logging_config(tmp_path)
    assert path is not None and path.parent == tmp_path
    config = yaml.safe_load(path.read_text())
    assert "root" not in config
    assert not {"uvicorn", "fastapi"} & set(config["loggers"])
    assert {"prefect", "prefect.flow_runs", "prefect.task_runs"} <= set(config["loggers"])
