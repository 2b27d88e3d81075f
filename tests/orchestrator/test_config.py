"""Settings: defaults, RN_* environment variables and CLI flags, in that rising order."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import (
    NO_FLAG,
    START_FLAGS,
    START_SWITCHES,
    build_parser,
    generated_flags,
    settings_from,
)
from orchestrator.config import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("RN_"):
            monkeypatch.delenv(key)


def _start(*flags: str) -> Settings:
    return settings_from(build_parser().parse_args(["start", *flags]))


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = _start()
    assert s.data_dir == (tmp_path / "xdg" / "remote-network").resolve()
    assert (s.api_host, s.api_port) == ("0.0.0.0", 30069)
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8081)
    assert s.relay is False and s.nat is False
    assert s.challenge_ttl_seconds == 300 and s.jwt_ttl_seconds == 24 * 3600
    assert s.effective_database_url == f"sqlite:///{s.data_dir / 'node.db'}"
    assert s.key_path == s.data_dir / "identity.key"


def test_data_dir_without_xdg_is_under_home(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings().data_dir == (tmp_path / ".local" / "share" / "remote-network").resolve()


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("RN_API_PORT", "40001")
    monkeypatch.setenv("RN_RELAY", "true")
    monkeypatch.setenv("RN_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("RN_DATABASE_URL", "sqlite:////tmp/other.db")
    s = _start()
    assert s.data_dir == (tmp_path / "env").resolve()
    assert s.api_port == 40001 and s.relay is True and s.log_level == "DEBUG"
    assert s.effective_database_url == "sqlite:////tmp/other.db"


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("RN_API_PORT", "40001")
    monkeypatch.setenv("RN_HTTP_PORT", "40002")
    s = _start("--data-dir", str(tmp_path / "flag"), "--api-port", "50001", "--quic-port",
               "50003", "--dht-port", "50004", "--relay", "--nat", "--bootstrap", "h:1",
               "--bootstrap", "h:2", "--log-level", "WARNING", "--job-timeout", "9")
    assert s.data_dir == (tmp_path / "flag").resolve()
    assert s.api_port == 50001
    assert s.http_port == 40002  # no flag given: the environment's value stands
    assert (s.quic_port, s.dht_port) == (50003, 50004)
    assert s.relay is True and s.nat is True
    assert s.bootstrap == ["h:1", "h:2"]
    assert s.log_level == "WARNING" and s.job_timeout_seconds == 9


def test_every_start_flag_names_a_setting() -> None:
    from orchestrator.cli import START_FLAGS, START_SWITCHES

    fields = set(Settings.model_fields)
    for _flag, field, _ in START_FLAGS:
        assert field in fields
    for _flag, field, _ in START_SWITCHES:
        assert field in fields
    flags = {f for f, _, _ in START_FLAGS} | {f for f, _, _ in START_SWITCHES}
    assert {"--api-port", "--http-port", "--quic-port", "--dht-port", "--relay"} <= flags


def test_passphrase_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    phrase = tmp_path / "p"
    phrase.write_text("from-file\n")
    assert _start("--key-passphrase-file", str(phrase)).passphrase() == "from-file"
    monkeypatch.setenv("RN_KEY_PASSPHRASE", "from-env")
    assert _start().passphrase() == "from-env"
    monkeypatch.delenv("RN_KEY_PASSPHRASE")
    assert _start().passphrase() is None


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("RN_API_PORT", "lots")
    with pytest.raises(ValidationError):
        _start()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["start", "--log-level", "LOUD"])


def test_every_setting_has_a_start_flag() -> None:
    covered = {f for _, f, _ in START_FLAGS + generated_flags()}
    covered |= {f for _, f, _ in START_SWITCHES}
    assert set(Settings.model_fields) - NO_FLAG <= covered


def test_generated_flags_reach_the_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "start", "--data-dir", str(tmp_path), "--upload-ttl-seconds", "5",
        "--no-prefect-warmup", "--output-inline-limit", "10"])
    settings = settings_from(args)
    assert settings.upload_ttl_seconds == 5
    assert settings.prefect_warmup is False
    assert settings.output_inline_limit == 10
