"""Capturing one job's output: STDOUT, STDERR and the interleaved LOGS, each an artifact.

Bytes go to the store as they arrive (a stream is held in memory up to 64 KiB, then written out:
never held whole); each complete line, from either stream, is appended to LOGS in arrival order
and handed to the log sink. With a ``limit``, each stream keeps at most that many bytes: the
first byte past it is dropped with the rest, ``exceeded`` names the limit and ``on_exceeded`` is
called once (the executor then stops the job).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from executors.artifacts import ArtifactStore, ArtifactWriter
from executors.base import ArtifactRef, one_line

log = logging.getLogger("remote_network.executors")

LineSink = Callable[[str, str, str], None]  # (job_id, stream, line)
STREAMS = ("stdout", "stderr")
MAX_LINE = 64 * 1024  # a longer run without a newline is cut into lines of this size
STDERR_TAIL_LINES = 3  # the last lines on stderr quoted in a failed job's error
WATCH_SECONDS = 0.25  # how often the output mounts of a running job are measured
WATCH_MAX_ENTRIES = 100_000  # an output mount holding more entries than this is over its limit


class OutputCapture:
    def __init__(self, store: ArtifactStore, job_id: str, on_log: LineSink | None = None, *,
                 limit: int | None = None,
                 on_exceeded: Callable[[str], None] | None = None) -> None:
        self.job_id = job_id
        self._on_log = on_log
        self._limit = limit
        self._on_exceeded = on_exceeded
        self._sizes: dict[str, int] = {s: 0 for s in STREAMS}
        self.exceeded: str | None = None  # the error, once a stream went past the limit
        self._writers: dict[str, ArtifactWriter] = {
            "stdout": store.writer(),
            "stderr": store.writer(),
            "logs": store.writer(),
        }
        self._partial: dict[str, bytes] = {s: b"" for s in STREAMS}
        self._done = False
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def feed(self, stream: str, data: bytes) -> None:
        if not data:
            return
        if self._limit is not None:
            room = self._limit - self._sizes[stream]
            if len(data) > room:
                data = data[:max(room, 0)]
                if self.exceeded is None:
                    self.exceeded = f"output limit of {self._limit} bytes exceeded on {stream}"
                    if self._on_exceeded is not None:
                        self._on_exceeded(self.exceeded)
                if not data:
                    return
            self._sizes[stream] += len(data)
        self._writers[stream].write(data)
        buf = self._partial[stream] + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            self._line(stream, buf[start:nl + 1])
            start = nl + 1
        rest = buf[start:]
        while len(rest) >= MAX_LINE:
            self._line(stream, rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._partial[stream] = rest

    def _line(self, stream: str, raw: bytes) -> None:
        self._writers["logs"].write(raw)
        if stream == "stderr" and raw.strip():
            self._stderr_tail.append(raw[:1024].decode("utf-8", errors="replace").strip())
        if self._on_log is not None:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                self._on_log(self.job_id, stream, text)
            except Exception:  # a broken sink must not break the job
                log.exception("log sink failed for job %s", self.job_id)

    def exit_error(self, code: int) -> str:
        """The error of a job that exited with ``code``: the code, then its last lines on
        stderr (call after ``finish``, which flushes a last line without a newline)."""
        tail = " | ".join(self._stderr_tail)
        return one_line(f"exit code {code}: {tail}" if tail else f"exit code {code}")

    def finish(self) -> dict[str, ArtifactRef]:
        """Flush unterminated lines and store the three artifacts."""
        for stream in STREAMS:
            if self._partial[stream]:
                self._line(stream, self._partial[stream])
                self._partial[stream] = b""
        self._done = True
        return {name.upper(): w.commit() for name, w in self._writers.items()}

    def abort(self) -> None:
        if not self._done:
            for w in self._writers.values():
                w.abort()
            self._done = True


def tree_size(root: Path, max_entries: int = WATCH_MAX_ENTRIES) -> int | None:
    """Bytes of the files under ``root`` (links not followed); None past ``max_entries``."""
    total, seen, stack = 0, 0, [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    seen += 1
                    if seen > max_entries:
                        return None
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total
