"""Docker services: created from a registry, a git repository or a local directory.

Every creation checks its input first (a 400 leaves nothing behind), then pulls or builds the
image, detects the interfaces, and records the service in one transaction. Whatever fails after
the input check leaves neither a database row nor an image of ours nor a temporary directory.
The Dockerfile and compose file a service was built from are kept under the services directory so
that ``suggested`` can re-detect the interfaces later.

Progress goes out on the event bus as OP_START / _PROGRESS / _COMPLETE / _ERROR with
the operation id (``docker-git-<ns>`` for git builds, which run in the background).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from executors.docker_engine import EngineError, EngineUnavailable, connect
from orchestrator.config import Settings
from orchestrator.errors import DomainError, InvalidInput, NotFound, OperationFailed
from orchestrator.events import DOCKER_OPERATION_COMPLETE as OP_COMPLETE
from orchestrator.events import DOCKER_OPERATION_ERROR as OP_ERROR
from orchestrator.events import DOCKER_OPERATION_PROGRESS as OP_PROGRESS
from orchestrator.events import DOCKER_OPERATION_START as OP_START
from orchestrator.events import EventBus
from orchestrator.models import DockerDetails
from orchestrator.registry import (
    ServiceRegistry,
    ServiceView,
    parse_interfaces,
    validate_name,
)
from orchestrator.service_policy import parse_policy
from orchestrator.services import docker_build, git_source
from orchestrator.services.docker_build import SourcePlan
from orchestrator.services.interface_detection import (
    from_compose,
    from_dockerfile,
    from_image_config,
    suggest,
)
from orchestrator.states import ServiceType
from orchestrator.wiring import Interface

log = logging.getLogger("remote_network.docker_services")

BUILT_REPOSITORY = "remote-network"
SOURCES = ("registry", "git", "local")


@dataclass(frozen=True, slots=True)
class Created:
    view: ServiceView
    suggested: list[Interface]


@dataclass(frozen=True, slots=True)
class Request:
    """What every creation shares, checked."""

    name: str
    description: str
    custom: list[Interface] | None
    # Access and policy fields as the client gave them (checked; see ``peer_policy``).
    policy: dict[str, Any] | None = None


def check_request(name: Any, description: Any, custom: Any,
                  policy: dict[str, Any] | None = None) -> Request:
    if custom is not None and not isinstance(custom, list):
        raise InvalidInput("custom_interfaces must be an array")
    specs = parse_interfaces(custom) if custom else None
    parse_policy(policy or {})
    return Request(validate_name(name), str(description or ""), specs, policy)


def parse_command(value: Any, field: str) -> str | None:
    """A shell string or JSON array (or a list) as a stored JSON array; "" clears; None keeps."""
    if value is None:
        return None
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return ""
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError as exc:
                raise InvalidInput(f"Invalid {field} format: not a valid JSON array") from exc
        else:
            try:
                items = shlex.split(text)
            except ValueError as exc:
                raise InvalidInput(f"Invalid {field} format: {exc}") from exc
    else:
        raise InvalidInput(f"Invalid {field} format: expected a string or an array of strings")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidInput(f"Invalid {field} format: expected an array of strings")
    return json.dumps(items) if items else ""


def _as_json_array(value: Any) -> str:
    """Compose/image entrypoint or command (string or list) as a JSON array, "" when unset."""
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError:
            value = [value]
    return json.dumps([str(v) for v in value])


def slug(name: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-")
    return text or "service"


class DockerServices:
    def __init__(self, registry: ServiceRegistry, bus: EventBus, settings: Settings) -> None:
        self.registry = registry
        self.bus = bus
        self.settings = settings
        self._client: docker.DockerClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        registry.before_delete(self.on_service_deleted)

    # -- the engine --------------------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = connect(self.settings.docker_host, timeout=600)
            except (EngineUnavailable, EngineError) as exc:
                raise OperationFailed(str(exc)) from exc
        return self._client

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def keep_root(self) -> Path:
        return self.settings.services_dir / "docker"

    # -- from a registry ---------------------------------------------------------------------
    async def from_registry(self, *, service_name: Any, image_name: Any, image_tag: Any = None,
                            description: Any = "", username: str | None = None,
                            password: str | None = None, custom_interfaces: Any = None,
                            policy: dict[str, Any] | None = None) -> Created:
        req = check_request(service_name, description, custom_interfaces, policy)
        if not isinstance(image_name, str) or not image_name.strip():
            raise InvalidInput("image_name is required")
        name, tag = docker_build.split_reference(image_name, image_tag)
        op = f"docker-registry-{time.time_ns()}"
        return await asyncio.to_thread(self._from_registry, req, name, tag, username, password, op)

    def _from_registry(self, req: Request, name: str, tag: str, username: str | None,
                       password: str | None, op: str) -> Created:
        ref = f"{name}:{tag}"
        self._event(OP_START, op, f"Pulling image {ref}", 0, service_name=req.name,
                    source="registry")
        try:
            existed = docker_build.image_config(self.client, ref) is not None
            docker_build.pull_image(self.client, name, tag, username=username,
                                    password=password,
                                    on_progress=self._reporter(op, "pull", req.name, ref))
            config = docker_build.image_config(self.client, ref) or {}
            image_id = self._image_id(ref)
            details = DockerDetails(
                image_name=name, image_tag=tag, image_id=image_id, source="registry",
                entrypoint=_as_json_array(config.get("Entrypoint")),
                cmd=_as_json_array(config.get("Cmd")))
            suggested = suggest(from_image_config(config))
            try:
                view = self._record(req, details, suggested)
            except BaseException:
                if not existed:
                    self._remove_image_quietly(ref)
                raise
        except DomainError as exc:
            self._event(OP_ERROR, op, exc.message, None, error=exc.message)
            raise
        self._event(OP_COMPLETE, op, "Docker service created", 100, service_id=view.service.id,
                    image=ref, suggested_interfaces=[i.to_dict() for i in suggested])
        return Created(view, suggested)

    # -- from git ----------------------------------------------------------------------------
    def start_from_git(self, *, service_name: Any, repo_url: Any, branch: Any = None,
                       username: str | None = None, password: str | None = None,
                       description: Any = "", custom_interfaces: Any = None,
                       policy: dict[str, Any] | None = None) -> str:
        """Check the input, start the clone and build in the background; returns the op id."""
        req = check_request(service_name, description, custom_interfaces, policy)
        git_source.parse_url(repo_url if isinstance(repo_url, str) else "")
        if branch is not None and not isinstance(branch, str):
            raise InvalidInput("branch must be a string")
        op = f"docker-git-{time.time_ns()}"
        task = asyncio.get_running_loop().create_task(
            self._git_operation(op, req, repo_url, branch or None, username, password))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return op

    async def _git_operation(self, op: str, req: Request, url: str, branch: str | None,
                             username: str | None, password: str | None) -> None:
        try:
            await asyncio.to_thread(self._from_git, op, req, url, branch, username, password)
        except DomainError as exc:
            self._event(OP_ERROR, op, exc.message, None, error=exc.message)
        except Exception:
            log.exception("docker operation %s crashed", op)
            self._event(OP_ERROR, op, "Docker service creation failed: internal error", None,
                        error="internal error")

    def _from_git(self, op: str, req: Request, url: str, branch: str | None,
                  username: str | None, password: str | None) -> None:
        self._event(OP_START, op, "Docker service creation started", 0, service_name=req.name,
                    source="git")
        workdir = Path(tempfile.mkdtemp(prefix="rn-docker-git-"))
        try:
            self._event(OP_PROGRESS, op, "Cloning repository...", 0)
            root = git_source.clone(url, workdir / "repo", branch=branch, username=username,
                                    password=password)
            self._event(OP_PROGRESS, op, "Repository cloned", 0)
            plan = docker_build.plan_source(root)
            created = self._build_and_record(req, plan, "git", op)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        view = created.view
        self._event(OP_COMPLETE, op, "Docker service created", 100, service_id=view.service.id,
                    image=f"{view.docker.image_name}:{view.docker.image_tag}"
                    if view.docker else "",
                    suggested_interfaces=[i.to_dict() for i in created.suggested])

    async def validate_git(self, url: str, username: str | None = None,
                           password: str | None = None) -> str | None:
        """None when the repository answers, else a one-line reason (never raises)."""
        return await asyncio.to_thread(git_source.validate, url, username, password)

    # -- from a local directory --------------------------------------------------------------
    async def from_local(self, *, service_name: Any, local_path: Any, description: Any = "",
                         custom_interfaces: Any = None,
                         policy: dict[str, Any] | None = None) -> Created:
        req = check_request(service_name, description, custom_interfaces, policy)
        if not isinstance(local_path, str) or not local_path.strip():
            raise InvalidInput("local_path is required")
        path = Path(local_path.strip())
        if not path.is_absolute():
            raise InvalidInput(f"local_path must be an absolute path: '{local_path}'")
        if not path.is_dir():
            raise InvalidInput(f"local_path is not an existing directory: '{local_path}'")
        op = f"docker-local-{time.time_ns()}"
        return await asyncio.to_thread(self._from_local, op, req, path)

    def _from_local(self, op: str, req: Request, path: Path) -> Created:
        self._event(OP_START, op, "Docker service creation started", 0, service_name=req.name,
                    source="local")
        try:
            plan = docker_build.plan_source(path)
            created = self._build_and_record(req, plan, "local", op)
        except DomainError as exc:
            self._event(OP_ERROR, op, exc.message, None, error=exc.message)
            raise
        self._event(OP_COMPLETE, op, "Docker service created", 100,
                    service_id=created.view.service.id,
                    suggested_interfaces=[i.to_dict() for i in created.suggested])
        return created

    # -- shared by git and local -------------------------------------------------------------
    def _build_and_record(self, req: Request, plan: SourcePlan, source: str,
                                           op: str) -> Created:
        ours = False
        if plan.builds:
            name, tag = f"{BUILT_REPOSITORY}/{slug(req.name)}", uuid.uuid4().hex[:12]
            docker_build.build_image(self.client, plan, f"{name}:{tag}",
                                     labels={docker_build.IMAGE_LABEL: req.name},
                                     on_progress=self._reporter(op, "build", req.name,
                                                                f"{name}:{tag}"))
            ours = True
        else:
            name, tag = docker_build.split_reference(plan.pull_image)
            ours = docker_build.image_config(self.client, f"{name}:{tag}") is None
            docker_build.pull_image(self.client, name, tag, on_progress=self._reporter(
                op, "pull", req.name, f"{name}:{tag}"))
        ref = f"{name}:{tag}"
        keep = self.keep_root / uuid.uuid4().hex
        try:
            config = docker_build.image_config(self.client, ref) or {}
            svc = plan.compose_service
            entrypoint = svc.get("entrypoint", config.get("Entrypoint"))
            cmd = svc.get("command", config.get("Cmd"))
            self._keep_files(keep, plan)
            details = DockerDetails(
                image_name=name, image_tag=tag, image_id=self._image_id(ref), source=source,
                compose_path=plan.compose_path, entrypoint=_as_json_array(entrypoint),
                cmd=_as_json_array(cmd), build_path=str(keep))
            suggested = suggest(from_image_config(config), from_dockerfile(plan.dockerfile_text),
                                from_compose(svc))
            view = self._record(req, details, suggested)
        except BaseException:
            shutil.rmtree(keep, ignore_errors=True)
            if ours:
                self._remove_image_quietly(ref)
            raise
        return Created(view, suggested)

    def _keep_files(self, keep: Path, plan: SourcePlan) -> None:
        keep.mkdir(parents=True, exist_ok=True)
        if plan.dockerfile_text:
            (keep / "Dockerfile").write_text(plan.dockerfile_text)
        if plan.compose_path:
            meta = {"compose_path": plan.compose_path, "service": plan.compose_service_name}
            (keep / "compose.yaml").write_text(plan.compose_text)
            (keep / "compose.json").write_text(json.dumps(meta))

    def _record(self, req: Request, details: DockerDetails, suggested: list[Interface]
                ) -> ServiceView:
        interfaces = req.custom if req.custom else [Interface.parse(s.to_dict())
                                                    for s in suggested]
        return self.registry.create(
            name=req.name, service_type=ServiceType.DOCKER, description=req.description,
            capabilities={"image_name": details.image_name, "image_tag": details.image_tag},
            interfaces=interfaces, details=details, policy=req.policy)

    # -- reading and changing ----------------------------------------------------------------
    def details(self, service_id: int) -> DockerDetails:
        try:
            view = self.registry.get(service_id)
        except NotFound:
            raise NotFound("Docker service not found") from None
        if view.service.service_type != ServiceType.DOCKER or view.docker is None:
            raise NotFound("Docker service not found")
        return view.docker

    async def suggested(self, service_id: int) -> list[Interface]:
        details = self.details(service_id)
        if details.source not in SOURCES:
            raise InvalidInput(f"Unknown source '{details.source}' for service {service_id}")
        return await asyncio.to_thread(self._suggested, details)

    def _suggested(self, details: DockerDetails) -> list[Interface]:
        ref = f"{details.image_name}:{details.image_tag}"
        try:
            config = docker_build.image_config(self.client, ref) or {}
        except OperationFailed as exc:
            raise OperationFailed(f"Failed to detect interfaces: {exc.message}") from exc
        sources = [from_image_config(config)]
        keep = Path(details.build_path) if details.build_path else None
        if details.source in ("git", "local") and keep is not None and keep.is_dir():
            dockerfile = keep / "Dockerfile"
            if dockerfile.is_file():
                sources.append(from_dockerfile(dockerfile.read_text(errors="replace")))
            compose = keep / "compose.yaml"
            if compose.is_file():
                text = compose.read_text(errors="replace")
                sources.append(from_compose(docker_build.compose_service_of(text)))
        return suggest(*sources)

    def replace_interfaces(self, service_id: int, raw: Any) -> None:
        """Replace a service's interfaces. The original web UI edits any service's interfaces
        through this route, standalone ones too; a DATA service's are fixed."""
        try:
            view = self.registry.get(service_id)
        except NotFound:
            raise NotFound("Docker service not found") from None
        if view.service.service_type == ServiceType.DATA:
            raise InvalidInput("a DATA service's interfaces are fixed")
        if not isinstance(raw, list):
            raise InvalidInput("interfaces must be an array")
        self.registry.replace_interfaces(service_id, parse_interfaces(raw))

    def update_config(self, service_id: int, *, entrypoint: Any = None, cmd: Any = None) -> None:
        self.details(service_id)
        changes = {}
        parsed_entry = parse_command(entrypoint, "entrypoint")
        parsed_cmd = parse_command(cmd, "cmd")
        if parsed_entry is not None:
            changes["entrypoint"] = parsed_entry
        if parsed_cmd is not None:
            changes["cmd"] = parsed_cmd
        if not changes:
            raise InvalidInput("Give entrypoint and/or cmd")
        self.registry.update_details(service_id, **changes)

    # -- deletion hook -----------------------------------------------------------------------
    def on_service_deleted(self, view: ServiceView) -> None:
        """Remove a deleted Docker service's image (unless another service uses it) and the
        files kept for it."""
        details = view.docker
        if view.service.service_type != ServiceType.DOCKER or details is None:
            return
        ref = f"{details.image_name}:{details.image_tag}"
        shared = any(
            other.docker is not None and other.service.id != view.service.id
            and (other.docker.image_name, other.docker.image_tag)
            == (details.image_name, details.image_tag)
            for other in self.registry.list())
        if not shared:
            self._remove_image_quietly(ref)
        if details.build_path:
            keep = Path(details.build_path)
            if keep.parent == self.keep_root:
                shutil.rmtree(keep, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------
    def _image_id(self, ref: str) -> str:
        try:
            return str(self.client.images.get(ref).id)
        except docker.errors.DockerException:
            return ""

    def _remove_image_quietly(self, ref: str) -> None:
        try:
            docker_build.remove_image(self.client, ref)
        except (docker.errors.DockerException, OperationFailed) as exc:
            log.warning("could not remove image %s: %s", ref, exc)

    def _event(self, kind: str, op: str, message: str, percentage: int | None,
               **extra: Any) -> None:
        payload: dict[str, Any] = {"operation_id": op, "message": message}
        if percentage is not None:
            payload["percentage"] = percentage
        payload.update(extra)
        self.bus.publish(kind, payload)

    def _reporter(self, op: str, phase: str, service_name: str,
                  image: str) -> Callable[[str, int | None, str | None], None]:
        """Progress of a pull or a build: each event also names its phase, the service and
        the image, which is how the web UI's wizard keys its progress."""
        last = [0]

        def report(message: str, percentage: int | None, line: str | None) -> None:
            if percentage is not None:
                last[0] = percentage
            extra = {"log": line} if line is not None else {}
            self._event(OP_PROGRESS, op, message, last[0], phase=phase,
                        service_name=service_name, image_name=image, **extra)
        return report
