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
