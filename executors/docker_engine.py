"""The one place that opens a Docker SDK client and maps its errors to ours."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker
import docker.errors
import requests.exceptions


class EngineUnavailable(Exception):
    """No Docker engine answers at the configured address."""


class EngineError(Exception):
    """The engine answered with an error."""


class ImageNotFound(EngineError):
    pass


@contextmanager
def map_docker_errors(action: str) -> Iterator[None]:
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(f"{action}: image not found") from exc
    except docker.errors.APIError as exc:
        raise EngineError(f"{action}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineUnavailable(
            f"{action}: Docker engine unavailable ({type(exc).__name__})"
        ) from exc


def connect(base_url: str | None = None, *, timeout: int = 60) -> docker.DockerClient:
    with map_docker_errors("connect"):
        if base_url:
            return docker.DockerClient(base_url=base_url, timeout=timeout)
        return docker.from_env(timeout=timeout)


def engine_version(base_url: str | None = None) -> str | None:
    """The engine's version, or None when no engine answers."""
    try:
        client = connect(base_url, timeout=3)
        with map_docker_errors("version"):
            return str(client.version().get("Version", "")) or None
    except (EngineUnavailable, EngineError):
        return None


class FrameDecoder:
    """Splits the engine's multiplexed attach stream (non-TTY) into (stream, bytes) frames.

    Each frame is an 8-byte header (stream type, 3 zero bytes, big-endian payload size) and the
    payload; stream 1 is stdout, 2 is stderr. Bytes in, frames out; no I/O here.
    """

    NAMES = {0: "stdout", 1: "stdout", 2: "stderr"}

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buf += data
        frames: list[tuple[str, bytes]] = []
        while len(self._buf) >= 8:
            size = int.from_bytes(self._buf[4:8], "big")
            if len(self._buf) < 8 + size:
                break
            stream = self.NAMES.get(self._buf[0], "stdout")
            frames.append((stream, bytes(self._buf[8:8 + size])))
            del self._buf[:8 + size]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buf)
