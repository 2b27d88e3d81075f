"""A running node records its API addresses in its data dir; local tools find it there."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from orchestrator import address_file
from orchestrator.cli import main as cli_main
from orchestrator.config import Settings
from tests.support.node_process import NodeProcess


def settings(data_dir: Path, **kw: object) -> Settings:
    return Settings(data_dir=data_dir, **kw)  # type: ignore[arg-type]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_written_read_and_removed_by_its_process(tmp_path: Path) -> None:
    s = settings(tmp_path, http_host="0.0.0.0", http_port=18123, api_host="::", api_port=18124)
    address_file.write(s, "ab" * 20)
    running = address_file.read(s)
    assert running == {"pid": os.getpid(), "peer_id": "ab" * 20,
                       "http_url": "http://127.0.0.1:18123", "api_url": "https://[::1]:18124"}
    assert address_file.local_http_url(settings(tmp_path)) == "http://127.0.0.1:18123"
    address_file.remove(s)
    assert not (tmp_path / address_file.FILE_NAME).exists()


def test_a_file_left_by_a_dead_node_or_unreadable_is_ignored(tmp_path: Path) -> None:
    s = settings(tmp_path, http_port=18125)
    path = tmp_path / address_file.FILE_NAME
    path.write_text(json.dumps({"pid": dead_pid(), "http_url": "http://127.0.0.1:1"}))
    assert address_file.read(s) is None
    assert address_file.local_http_url(s) == "http://127.0.0.1:18125"
    address_file.remove(s)  # not ours: left in place
    assert path.exists()
    for text in ("", "not json", "[]", json.dumps({"pid": "x"}), json.dumps({"http_url": "y"})):
        path.write_text(text)
        assert address_file.read(s) is None, text
        assert address_file.local_http_url(s) == "http://127.0.0.1:18125"


def test_workflow_commands_find_a_node_started_on_other_ports(
        fresh_node: NodeProcess, capsys: pytest.CaptureFixture[str]) -> None:
    fresh_node.start()
    running = json.loads((fresh_node.data_dir / address_file.FILE_NAME).read_text())
    assert running["pid"] == fresh_node.pid
    assert running["http_url"] == fresh_node.http_url
    assert running["api_url"] == fresh_node.https_url
    # No --url: the command reads the node's address from its data dir.
    capsys.readouterr()
    assert cli_main(["workflow", "list", "--data-dir", str(fresh_node.data_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    assert fresh_node.stop() == 0
    assert not (fresh_node.data_dir / address_file.FILE_NAME).exists()
