"""flows.client stays a client: using it never imports the node's server side.

Each check runs in a fresh interpreter, so modules other tests imported do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLIENT_MODULES = [
    "flows.client",
    "flows.client.cli_workflow",
    "flows.client.define",
    "flows.client.files",
    "flows.client.node_client",
    "flows.client.resolve",
    "flows.client.submit",
    "flows.client.templates",
]

# Server-side packages and modules that no client code path may load.
SERVER_PACKAGES = ["api", "executors", "prefect", "fastapi", "uvicorn", "sqlmodel", "sqlalchemy",
                   "aioquic", "kademlia", "docker"]
SERVER_MODULES = ["orchestrator.node", "orchestrator.serve", "orchestrator.execution_store",
                  "orchestrator.db", "orchestrator.workflows", "orchestrator.graph",
                  "orchestrator.discovery", "orchestrator.peer_messaging", "orchestrator.relay"]

# Imports every client module, then runs ``remote-network workflow list`` against a data dir
# with a node key and JWT secret, so the client's lazy imports (minting a token, finding the
# node's address) run too; the node's URL is refused, so the command fails without a node.
SCRIPT = """
import importlib, json, sys
from pathlib import Path

data_dir = Path(sys.argv[1])
modules = json.loads(sys.argv[2])
for name in modules:
    importlib.import_module(name)

from orchestrator.auth import load_or_create_secret
from orchestrator.config import Settings
from orchestrator.keys import load_identity

settings = Settings(data_dir=data_dir)
load_identity(settings)
load_or_create_secret(settings.jwt_secret_path)

from orchestrator.cli import main
code = main(["workflow", "list", "--data-dir", str(data_dir), "--url", "http://127.0.0.1:9"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def loaded_modules(data_dir: Path) -> tuple[int, set[str]]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir), json.dumps(CLIENT_MODULES)],
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def test_the_client_does_not_import_the_server_side(tmp_path: Path) -> None:
    code, modules = loaded_modules(tmp_path / "node")
    assert code == 1  # cannot reach the node: the whole client path ran
    assert set(CLIENT_MODULES) <= modules
    flows_outside_client = sorted(m for m in modules if m.split(".")[0] == "flows"
                                  and m != "flows" and not m.startswith("flows.client"))
    assert flows_outside_client == []
    assert sorted(m for m in modules if m.split(".")[0] in SERVER_PACKAGES) == []
    assert sorted(m for m in modules if m in SERVER_MODULES) == []
