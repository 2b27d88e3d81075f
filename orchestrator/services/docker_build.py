"""Building and pulling the images of Docker services (Docker SDK, blocking calls).

- ``plan_source(root)`` reads a source directory: a compose file (``docker-compose.yml``,
  ``docker-compose.yaml``, ``compose.yml``, ``compose.yaml``) wins over a ``Dockerfile``; in a
  compose file the service with a ``build`` section is built (its context and dockerfile), or
  else the ``image`` of the first service that has one is pulled.
- ``build_image`` streams the low-level build API's JSON lines: each log line goes to
  ``on_progress`` with a percentage computed from ``Step N/M``. A failed build removes the layers
  it left behind and raises ``OperationFailed`` with the engine's own reason.
- ``pull_image`` pulls with optional credentials that are used for that pull only.

Callers run these in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import yaml

from orchestrator.errors import InvalidInput, OperationFailed
from orchestrator.services.interface_detection import compose_service

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
IMAGE_LABEL = "remote-network.service"
_STEP = re.compile(r"^Step (\d+)/(\d+)\s*:")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*")
_LAYER = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")

# (message, percentage or None, log line or None)
Progress = Callable[[str, "int | None", "str | None"], None]


@dataclass
class SourcePlan:
    """What to do with a source directory."""

    root: Path
    compose_path: str = ""  # relative to root, "" without compose
    compose_service: dict[str, Any] = field(default_factory=dict)
    compose_service_name: str = ""
    compose_text: str = ""
    context: Path | None = None  # build context; None when an image is pulled instead
    dockerfile: str = "Dockerfile"  # relative to the context
    dockerfile_text: str = ""
    build_args: dict[str, str] = field(default_factory=dict)
    pull_image: str = ""  # "name[:tag]" when the compose service only names an image

    @property
    def builds(self) -> bool:
        return self.context is not None


def _inside(root: Path, path: Path, what: str) -> Path:
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise OperationFailed(f"{what} '{path}' is outside the source directory")
    return resolved


def plan_source(root: Path) -> SourcePlan:
    """Read ``root`` and decide how to get its image. OperationFailed when there is nothing to
    build or the compose file is unusable (the request was fine; the source is not)."""
    root = root.resolve()
    for name in COMPOSE_FILES:
        path = root / name
        if path.is_file():
            return _plan_compose(root, name, path.read_text(errors="replace"))
    dockerfile = root / "Dockerfile"
    if dockerfile.is_file():
        return SourcePlan(root, context=root, dockerfile="Dockerfile",
                          dockerfile_text=dockerfile.read_text(errors="replace"))
    raise OperationFailed("No Dockerfile or docker-compose.yml found in the source directory")


def _plan_compose(root: Path, name: str, text: str) -> SourcePlan:
    try:
        doc = yaml.safe_load(text)
        svc_name, svc = compose_service(doc)
    except (yaml.YAMLError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OperationFailed(f"Unusable {name}: {reason}") from exc
    plan = SourcePlan(root, compose_path=name, compose_service=svc,
                      compose_service_name=svc_name, compose_text=text)
    build = svc.get("build")
    if not build:
        plan.pull_image = str(svc["image"])
        return plan
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        raise OperationFailed(f"Unusable {name}: build of service '{svc_name}' must be a path or "
                           "a mapping")
    context = _inside(root, root / str(build.get("context") or "."), "Build context")
    dockerfile = str(build.get("dockerfile") or "Dockerfile")
    dockerfile_path = _inside(root, context / dockerfile, "Dockerfile")
    if not dockerfile_path.is_file():
        raise OperationFailed(f"{name}: service '{svc_name}' names a Dockerfile that does not "
                           f"exist ({dockerfile_path.relative_to(root)})")
    args = build.get("args") or {}
    if isinstance(args, list):
        args = dict(str(a).partition("=")[::2] for a in args)
    plan.context = context
    plan.dockerfile = str(dockerfile_path.relative_to(context))
    plan.dockerfile_text = dockerfile_path.read_text(errors="replace")
    plan.build_args = {str(k): str(v) for k, v in args.items() if v is not None}
    return plan


def compose_service_of(text: str) -> dict[str, Any]:
    """The compose service ``plan_source`` would pick from this compose text ({} if none)."""
    try:
        return compose_service(yaml.safe_load(text))[1]
    except (yaml.YAMLError, ValueError):
        return {}


# -- building ------------------------------------------------------------------------------------
def build_image(client: docker.DockerClient, plan: SourcePlan, tag: str, *,
                labels: dict[str, str] | None = None,
                on_progress: Progress | None = None) -> str:
    """Build ``plan`` as ``tag``; returns the image id."""
    assert plan.context is not None
    report = on_progress or (lambda *_: None)
    layers: list[str] = []
    image_id = ""
    percentage = 0
    own_layer = False
    report("Building Docker image...", 0, None)
    try:
        stream = client.api.build(path=str(plan.context), dockerfile=plan.dockerfile, tag=tag,
                                  rm=True, forcerm=True, decode=True, pull=False,
                                  buildargs=plan.build_args or None, labels=labels or None)
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail") or {}
                message = str(detail.get("message") or chunk.get("error") or "build failed")
                raise OperationFailed(f"Docker build failed: {_one_line(message)}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            text = chunk.get("stream")
            if not isinstance(text, str):
                continue
            for line in text.splitlines():
                if not line.strip():
                    continue
                step = _STEP.match(line)
                if step:
                    number, total = int(step.group(1)), int(step.group(2))
                    percentage = min(99, (number - 1) * 100 // max(total, 1))
                    instruction = line[step.end():].strip().split(" ", 1)[0].upper()
                    # The FROM image and cached layers are not this build's to remove.
                    own_layer = instruction != "FROM"
                elif line.strip() == "---> Using cache":
                    own_layer = False
                layer = _LAYER.match(line)
                if layer and own_layer:
                    layers.append(layer.group(1))
                report(f"Building Docker image... {line.strip()}"[:300], percentage, line)
    except OperationFailed:
        _remove_layers(client, layers)
        raise
    except docker.errors.APIError as exc:
        _remove_layers(client, layers)
        raise OperationFailed(f"Docker build failed: {_one_line(exc.explanation or exc)}") \
            from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        _remove_layers(client, layers)
        raise OperationFailed(f"Docker build failed: Docker engine unavailable "
                              f"({type(exc).__name__})") from exc
    if not image_id:
        try:
            image_id = str(client.images.get(tag).id)
        except docker.errors.DockerException as exc:
            _remove_layers(client, layers)
            raise OperationFailed("Docker build failed: the engine reported no image") from exc
    report("Docker image built", 100, None)
    return image_id


def _remove_layers(client: docker.DockerClient, layers: list[str]) -> None:
    """Remove what a failed build left (newest first); layers other images use stay."""
    for layer in reversed(layers):
        with contextlib.suppress(docker.errors.DockerException,
                                 requests.exceptions.RequestException):
            tags = [t for t in client.api.inspect_image(layer).get("RepoTags") or []
                    if t != "<none>:<none>"]
            if not tags:  # never a tagged image, whatever the log said
                client.api.remove_image(layer, noprune=True)


def _one_line(value: object) -> str:
    lines = [ln.strip() for ln in str(value).splitlines() if ln.strip()]
    return " ".join(lines)[:500] if lines else "unknown error"


# -- pulling -------------------------------------------------------------------------------------
def split_reference(image: str, tag: str | None = None) -> tuple[str, str]:
    """("name", "tag") from ``image`` and an optional explicit ``tag`` (default latest)."""
    image = image.strip()
    if not image or any(ch.isspace() for ch in image):
        raise InvalidInput(f"Invalid image name '{image}'")
    if "@" in image:
        raise InvalidInput("Image digests are not supported: give a name and a tag")
    name, tag_in_name = image, ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag_in_name = image.rpartition(":")
    final = (tag or "").strip() or tag_in_name or "latest"
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", final):
        raise InvalidInput(f"Invalid image tag '{final}'")
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"Invalid image name '{image}'")
    return name, final


def pull_image(client: docker.DockerClient, name: str, tag: str, *,
               username: str | None = None, password: str | None = None,
               on_progress: Progress | None = None) -> str:
    """Pull ``name:tag`` (credentials used for this pull only); returns the image id."""
    report = on_progress or (lambda *_: None)
    auth = {"username": username or "", "password": password} if password else None
    secrets = [s for s in (password,) if s]
    report(f"Pulling {name}:{tag}...", 0, None)
    try:
        for chunk in client.api.pull(name, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail") or {}
                raise OperationFailed(_pull_reason(name, tag, str(detail.get("message")
                                                                 or chunk.get("error")), secrets))
            detail = chunk.get("progressDetail") or {}
            pct = None
            if detail.get("total"):
                pct = min(99, int(detail.get("current", 0) * 100 / detail["total"]))
            status = str(chunk.get("status") or "")
            if status:
                report(f"Pulling {name}:{tag}... {status}", pct, None)
        image = client.images.get(f"{name}:{tag}")
    except OperationFailed:
        raise
    except docker.errors.APIError as exc:
        raise OperationFailed(_pull_reason(name, tag, str(exc.explanation or exc), secrets)) \
            from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise OperationFailed(f"Failed to pull image {name}:{tag}: Docker engine unavailable "
                              f"({type(exc).__name__})") from None
    report(f"Pulled {name}:{tag}", 100, None)
    return str(image.id)


_HTTP_401 = re.compile(r"(?<![\w.:])401(?![\w.:])")


def _pull_reason(name: str, tag: str, message: str, secrets: list[str]) -> str:
    """Names why a pull failed. Connectivity is checked first: an address such as
    ``127.0.0.1:40117`` must not read as an HTTP 401."""
    low = message.lower()
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout",
                              "dial tcp", "timeout", "network is unreachable")):
        reason = "registry unreachable"
    elif any(s in low for s in ("unauthorized", "authentication required", "no basic auth",
                                "denied", "incorrect username or password")) \
            or _HTTP_401.search(low):
        reason = "the registry refused the credentials (authentication failed)"
    elif any(s in low for s in ("manifest unknown", "not found", "does not exist",
                                "name unknown")):
        reason = "image not found in the registry"
    else:
        reason = _one_line(message)
    for secret in secrets:
        reason = reason.replace(secret, "***")
    return f"Failed to pull image {name}:{tag}: {reason}"


# -- inspecting and removing -----------------------------------------------------------------------
def image_config(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    """The ``Config`` of a local image, or None when it is not here."""
    try:
        return dict(client.images.get(ref).attrs.get("Config") or {})
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise OperationFailed(f"Failed to inspect image {ref}: {_one_line(exc)}") from None


def remove_image(client: docker.DockerClient, ref: str) -> bool:
    """Untag (and so remove, when it was the last tag) ``ref``; False when it was not here."""
    try:
        client.images.remove(ref, noprune=False)
    except docker.errors.ImageNotFound:
        return False
    return True
