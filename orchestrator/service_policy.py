"""A service's policy settings as its owner gives them: access, command freedom, network, limits.

``parse_policy`` validates what a client sends (service create and update) into the service
columns before anything is stored; ``orchestrator.peer_policy`` applies the stored settings to
other peers' jobs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import InvalidInput

ACCESS_VALUES = ("public", "peers", "private")
# The per-service limit overrides, and the node-wide setting each falls back to.
LIMIT_KEYS = ("memory_mb", "cpus", "pids", "output_mb", "timeout_max_seconds")
MAX_ALLOWED_PEERS = 1000
PEER_ID = re.compile(r"^[0-9a-f]{40}\Z")


# -- per-service settings ---------------------------------------------------------------------
def _number(key: str, value: Any, *, integer: bool) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"limits.{key} must be a number or null")
    if not math.isfinite(value):
        raise InvalidInput(f"limits.{key} must be a finite number")
    if integer and value != int(value):
        raise InvalidInput(f"limits.{key} must be a whole number")
    if key == "timeout_max_seconds" and value <= 0:
        raise InvalidInput("limits.timeout_max_seconds must be positive")
    if value < 0:
        raise InvalidInput(f"limits.{key} must not be negative (0: no limit)")
    if value > 2**40:
        raise InvalidInput(f"limits.{key} is too large")
    return int(value) if integer else float(value)


def parse_limits(raw: Any) -> dict[str, int | float | None]:
    """Limit overrides as given by a client: every key of LIMIT_KEYS, None for the default."""
    if raw is None:
        return dict.fromkeys(LIMIT_KEYS)
    if not isinstance(raw, Mapping):
        raise InvalidInput("limits must be an object")
    unknown = sorted(set(raw) - set(LIMIT_KEYS))
    if unknown:
        raise InvalidInput(f"unknown limit '{unknown[0]}': use " + ", ".join(LIMIT_KEYS))
    return {k: _number(k, raw.get(k), integer=k in ("memory_mb", "pids", "output_mb"))
            for k in LIMIT_KEYS}


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def parse_policy(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The service columns for the policy fields present (and not None) in ``raw``.

    ``access`` is ``public``, ``peers``, ``private`` or ``default`` (the node's setting);
    ``allowed_peers`` a list of peer ids; ``allow_network`` true, false or ``"default"``.
    Raises InvalidInput naming the field; nothing is changed before all of it is valid.
    """
    out: dict[str, Any] = {}
    access = raw.get("access")
    if access is not None:
        value = str(access).strip().lower() if isinstance(access, str) else access
        if value not in (*ACCESS_VALUES, "default"):
            raise InvalidInput(f"Invalid access '{access}': use public, peers, private or "
                               "default")
        out["access"] = None if value == "default" else value
    peers = raw.get("allowed_peers")
    if peers is not None:
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise InvalidInput("allowed_peers must be a list of peer ids")
        if len(peers) > MAX_ALLOWED_PEERS:
            raise InvalidInput(f"allowed_peers holds at most {MAX_ALLOWED_PEERS} peer ids")
        cleaned = []
        for p in peers:
            pid = p.strip().lower()
            if not PEER_ID.match(pid):
                raise InvalidInput(f"Invalid peer id '{p[:80]}' in allowed_peers: 40 hex "
                                   "characters")
            if pid not in cleaned:
                cleaned.append(pid)
        out["allowed_peers"] = cleaned
    for name in ("allow_command", "allow_args"):
        if raw.get(name) is not None:
            out[name] = _flag(name, raw[name])
    network = raw.get("allow_network")
    if network is not None:
        out["allow_network"] = None if network == "default" else _flag("allow_network", network)
    if raw.get("limits") is not None:
        out["limits"] = {k: v for k, v in parse_limits(raw["limits"]).items() if v is not None}
    return out
