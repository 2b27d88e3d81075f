"""Finding a job's processes from the host: inside its PID namespace, its own pids mean nothing
here, so a test names a process by a command no other process on the machine runs."""

from __future__ import annotations

import contextlib
import random

import psutil


def sleeper() -> str:
    """A sleep duration no other process on the host uses: ``sleep <it>`` names the process."""
    return f"{random.randrange(10**6, 10**7)}"


def sleeping(duration: str) -> list[int]:
    """Host pids of live ``sleep <duration>`` processes."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["cmdline"] == ["sleep", duration] \
                    and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
    return found
