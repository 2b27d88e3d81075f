"""Capturing one job's output: STDOUT, STDERR and the interleaved LOGS, each an artifact.

Bytes go to the store as they arrive (a stream is held in memory up to 64 KiB, then written out:
never held whole); each complete line, from either stream, is appended to LOGS in arrival order
and handed to the log sink.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from executors.artifacts import ArtifactStore, ArtifactWriter
from executors.base import ArtifactRef, one_line

log = logging.getLogger("remote_network.executors")

LineSink = Callable[[str, str, str], None]  # (job_id, stream, line)
STREAMS = ("stdout", "stderr")
MAX_LINE = 64 * 1024  # a longer run without a newline is cut into lines of this size
STDERR_TAIL_LINES = 3  # the last lines on stderr quoted in a failed job's error


class OutputCapture:
    def __init__(self, store: ArtifactStore, job_id: str, on_log: LineSink | None = None) -> None:
        self.job_id = job_id
        self._on_log = on_log
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
