"""The `remote-network` command: keys, tokens, passphrases and clean shutdown on signals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import nacl.signing

from tests.support.node_process import REPO, ApiClient, NodeProcess

NO_PREFECT = {"RN_PREFECT_WARMUP": "false"}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RN_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO,
                          capture_output=True, text=True, env=full_env, timeout=120)


def _peer_id(seed_hex: str) -> str:
    key = nacl.signing.SigningKey(bytes.fromhex(seed_hex))
    return hashlib.sha1(bytes(key.verify_key)).hexdigest()


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "remote-network"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "start" in out.stdout and "token" in out.stdout


def test_unencrypted_key_is_private_and_warned_about(tmp_path: Path) -> None:
    data = tmp_path / "d"
    shown = cli("key", "show", "--data-dir", str(data))
    assert shown.returncode == 0, shown.stderr
    assert "unencrypted" in shown.stderr
    key_file = data / "identity.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    lines = dict(line.split(":", 1) for line in shown.stdout.strip().splitlines())
    peer_id, public_key = lines["peer_id"].strip(), lines["public_key"].strip()

    exported = cli("key", "export", "--data-dir", str(data))
    assert exported.returncode == 0
    seed = exported.stdout.strip()
    assert len(bytes.fromhex(seed)) == 32
    assert _peer_id(seed) == peer_id
    assert bytes(nacl.signing.SigningKey(bytes.fromhex(seed)).verify_key).hex() == public_key
    # The same key on every call.
    assert cli("key", "show", "--data-dir", str(data)).stdout == shown.stdout


def test_passphrase_from_env(tmp_path: Path) -> None:
    data, secret = tmp_path / "d", "correct horse battery"
    env = {"RN_KEY_PASSPHRASE": secret}
    shown = cli("key", "show", "--data-dir", str(data), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "unencrypted" not in shown.stderr
    seed = cli("key", "export", "--data-dir", str(data), env=env).stdout.strip()
    raw = (data / "identity.key").read_text()
    assert seed not in raw and json.loads(raw)["encrypted"] is True
    assert stat.S_IMODE((data / "identity.key").stat().st_mode) == 0o600

    wrong = cli("key", "show", "--data-dir", str(data), env={"RN_KEY_PASSPHRASE": "nope-nope"})
    assert wrong.returncode != 0
    assert "wrong passphrase" in wrong.stderr
    assert "nope-nope" not in wrong.stderr + wrong.stdout
    missing = cli("key", "export", "--data-dir", str(data))
    assert missing.returncode != 0 and "encrypted" in missing.stderr
    assert missing.stdout == ""

    bad_start = cli("start", "--data-dir", str(data), "--api-port", "0", "--http-port", "0",
                    env={"RN_KEY_PASSPHRASE": "nope-nope", **NO_PREFECT})
    assert bad_start.returncode != 0
    assert "wrong passphrase" in bad_start.stderr
    assert "nope-nope" not in bad_start.stderr + bad_start.stdout

    # The same start also takes its database from --database-url.
    elsewhere = tmp_path / "elsewhere.db"
    node = NodeProcess(data, env={**env, **NO_PREFECT},
                       extra_args=["--database-url", f"sqlite:///{elsewhere}"]).start()
    try:
        c = ApiClient(node.https_url, nacl.signing.SigningKey(bytes.fromhex(seed)))
        try:
            assert c.login()
            assert c.get("/api/node/status").json()["peer_id"] == _peer_id(seed)
            wf = c.post("/api/workflows", json={"name": "in-elsewhere"}).json()
        finally:
            c.close()
        assert not (data / "node.db").exists()
        with sqlite3.connect(elsewhere) as conn:
            assert conn.execute("SELECT name FROM workflows WHERE id = ?",
                                (wf["id"],)).fetchone() == ("in-elsewhere",)
        conn.close()
        assert secret not in node.log()
        node.signal(signal.SIGTERM)
        assert node.proc is not None and node.proc.wait(60) == 0
    finally:
        node.stop()


def test_passphrase_file_and_sigint(tmp_path: Path) -> None:
    data = tmp_path / "d"
    phrase = tmp_path / "passphrase"
    phrase.write_text("from a file\n")
    assert cli("key", "show", "--data-dir", str(data), "--key-passphrase-file",
               str(phrase)).returncode == 0
    assert json.loads((data / "identity.key").read_text())["encrypted"] is True

    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    out = cli("start", "--data-dir", str(data), "--key-passphrase-file", str(wrong), env=NO_PREFECT)
    assert out.returncode != 0 and "wrong passphrase" in out.stderr
    assert "not it" not in out.stderr + out.stdout

    node = NodeProcess(data, extra_args=["--key-passphrase-file", str(phrase)], env=NO_PREFECT)
    node.start()
    try:
        c = node.client(seed=bytes.fromhex(cli("key", "export", "--data-dir", str(data),
                                               "--key-passphrase-file",
                                               str(phrase)).stdout.strip()))
        try:
            wf = c.post("/api/workflows", json={"name": "before-sigint"}).json()
        finally:
            c.close()
        node.signal(signal.SIGINT)
        assert node.proc is not None and node.proc.wait(60) == 0
    finally:
        node.stop()
    # The database was closed cleanly: its write-ahead log is checkpointed away.
    assert not (data / "node.db-wal").exists() or (data / "node.db-wal").stat().st_size == 0
    with sqlite3.connect(data / "node.db") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM workflows WHERE id = ?",
                                            (wf["id"],))]
    conn.close()
    assert names == ["before-sigint"]


def test_token_command_prints_a_working_jwt(node_proc: NodeProcess) -> None:
    out = cli("token", "--data-dir", str(node_proc.data_dir))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.count(".") == 2
    with httpx.Client(base_url=node_proc.https_url, verify=False, timeout=30) as c:
        resp = c.get("/api/services", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200


def test_exported_seed_logs_in(node_proc: NodeProcess) -> None:
    out = cli("key", "export", "--data-dir", str(node_proc.data_dir))
    seed = bytes.fromhex(out.stdout.strip())
    c = node_proc.client(seed=seed)
    try:
        assert c.get("/api/node/status").json()["peer_id"] == _peer_id(seed.hex())
    finally:
        c.close()


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    out = cli("key", "show", "--data-dir", str(tmp_path / "d"), env={"RN_API_PORT": "many"})
    assert out.returncode != 0
    assert "invalid setting" in out.stderr


def test_sigterm_stops_child_processes(tmp_path: Path) -> None:
    """With its default settings the node runs helpers (Prefect's API); SIGTERM ends them too."""
    import time

    import psutil
    import pytest

    node = NodeProcess(tmp_path / "d").start()
    try:
        parent = psutil.Process(node.pid)
        children: list[psutil.Process] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not children:
            children = parent.children(recursive=True)
            time.sleep(0.5)
        if not children:
            pytest.skip("this node runs no child processes")
        node.signal(signal.SIGTERM)
        assert node.proc is not None and node.proc.wait(60) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        node.stop()
