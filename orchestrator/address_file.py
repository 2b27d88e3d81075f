"""The running node's address file: how tools on the same machine find its API.

``remote-network start`` writes ``<data dir>/node.json`` once its servers listen: its process id,
peer id and the URLs of its plain-HTTP and HTTPS APIs. It removes the file when it stops. The
``remote-network workflow`` commands, ``NodeClient.local`` and the examples read it, so a node
started with ``--http-port`` is found without ``--url``. A file left by a node that did not stop
cleanly (its process is gone) is ignored, and they fall back to the HTTP port of the settings.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from network.identity import write_durable
from orchestrator.config import Settings

FILE_NAME = "node.json"


def _path(settings: Settings) -> Path:
    return settings.data_dir / FILE_NAME


def loopback(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def urls(settings: Settings) -> dict[str, str]:
    """The node's API URLs as a client on this machine reaches them."""
    return {"http_url": f"http://{loopback(settings.http_host)}:{settings.http_port}",
            "api_url": f"https://{loopback(settings.api_host)}:{settings.api_port}"}


def write(settings: Settings, peer_id: str) -> None:
    """Record this process as the data dir's running node (atomically and durably: readers
    never see half, and a crash leaves the old record or the new one)."""
    record = {"pid": os.getpid(), "peer_id": peer_id, **urls(settings)}
    write_durable(_path(settings), json.dumps(record).encode(), mode=0o644)


def remove(settings: Settings) -> None:
    """Remove the file if this process wrote it."""
    running = read(settings)
    if running is not None and running.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            _path(settings).unlink()


def read(settings: Settings) -> dict[str, Any] | None:
    """What the running node of the data dir recorded; None without one (or its process gone)."""
    try:
        running = json.loads(_path(settings).read_text())
        pid = int(running["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(running, dict) or not _alive(pid):
        return None
    return running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


def local_http_url(settings: Settings) -> str:
    """The plain-HTTP API of the data dir's node: from its address file when it is running,
    else from the settings."""
    running = read(settings)
    url = running.get("http_url") if running else None
    return url if isinstance(url, str) and url else urls(settings)["http_url"]
