"""Standalone services: executables on this machine, from a local path, a git repo or an upload.

Local sources are referenced where they are (and never deleted by the node). Git and upload
sources are copies the node owns, under ``services_dir`` (``git-<random>`` and ``<id>``); they
are removed with their service. Whatever fails while creating a service leaves nothing behind,
neither files nor rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import stat
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import InvalidInput, NotFound, OperationFailed
from orchestrator.models import StandaloneDetails
from orchestrator.registry import (
    ServiceRegistry,
    ServiceView,
    parse_interfaces,
    validate_name,
)
from orchestrator.service_policy import parse_policy
from orchestrator.states import InterfaceType, ServiceStatus, ServiceType
from orchestrator.wiring import Interface

log = logging.getLogger("remote_network.standalone")

SUGGESTED_INTERFACES: tuple[Interface, ...] = (
    Interface(InterfaceType.STDIN, description="Standard input stream"),
    Interface(InterfaceType.STDOUT, description="Standard output stream"),
    Interface(InterfaceType.STDERR, description="Standard error stream"),
    Interface(InterfaceType.LOGS, description="Combined log output"),
)
BUILD_TAIL_LINES = 20
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class RunConfig:
    """How to run a standalone service: what the create and finalize endpoints accept."""

    executable_path: str
    arguments: Sequence[str] = ()
    working_directory: str = ""
    environment_variables: dict[str, str] = field(default_factory=dict)
    timeout_seconds: int | None = None
    run_as_user: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    custom_interfaces: list[dict[str, Any]] | None = None
    # Access and policy fields as the client gave them (see ``peer_policy.parse_policy``).
    policy: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GitSource:
    repo_url: str
    branch: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    build_command: str = ""


def suggested_interfaces() -> list[Interface]:
    return list(SUGGESTED_INTERFACES)


# -- validation --------------------------------------------------------------------------------
def check_run_as_user(value: str) -> str:
    """``user`` or ``user:group`` (names or numeric ids) that exist on this machine."""
    value = (value or "").strip()
    if not value:
        return ""
    user, sep, group = value.partition(":")
    if not user or (sep and not group) or ":" in group:
        raise InvalidInput(f"Invalid run_as_user '{value}': use 'user' or 'user:group'")
    try:
        if user.isdigit():
            pwd.getpwuid(int(user))
        else:
            pwd.getpwnam(user)
    except KeyError:
        raise InvalidInput(f"Invalid run_as_user: user '{user}' does not exist on this "
                           "machine") from None
    if group:
        try:
            if group.isdigit():
                grp.getgrgid(int(group))
            else:
                grp.getgrnam(group)
        except KeyError:
            raise InvalidInput(f"Invalid run_as_user: group '{group}' does not exist on this "
                               "machine") from None
    return value


def _check_common(config: RunConfig) -> tuple[dict[str, Any], list[Interface]]:
    """The detail fields shared by every source, and the interfaces to store."""
    if any(not isinstance(a, str) or "\x00" in a for a in config.arguments):
        raise InvalidInput("arguments must be a list of strings")
    for key, value in config.environment_variables.items():
        if not key or "=" in key or "\x00" in key or not isinstance(value, str) \
                or "\x00" in value:
            raise InvalidInput(f"Invalid environment variable '{key}'")
    timeout = 300 if config.timeout_seconds is None else config.timeout_seconds
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise InvalidInput(f"timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS}")
    interfaces = parse_interfaces(config.custom_interfaces) or suggested_interfaces()
    parse_policy(config.policy or {})
    fields = {
        "arguments": list(config.arguments),
        "environment_variables": dict(config.environment_variables),
        "timeout_seconds": timeout,
        "run_as_user": check_run_as_user(config.run_as_user),
    }
    return fields, interfaces


def check_executable(path: Path, shown: str) -> None:
    if not path.exists():
        raise InvalidInput(f"executable_path '{shown}' does not exist")
    if not path.is_file():
        raise InvalidInput(f"executable_path '{shown}' is not a regular file")
    if not os.access(path, os.X_OK):
        raise InvalidInput(f"executable_path '{shown}' is not executable")


def relative_inside(root: Path, rel: str, what: str) -> Path:
    """``root/rel`` resolved, refusing absolute paths, '..' and symlinks leading out of root."""
    if not isinstance(rel, str) or not rel.strip():
        raise InvalidInput(f"{what} is required")
    if rel.startswith("/") or "\x00" in rel:
        raise InvalidInput(f"{what} '{rel}' must be relative to the service directory")
    if ".." in Path(rel).parts:
        raise InvalidInput(f"{what} '{rel}' must not contain '..'")
    base = root.resolve()
    resolved = (base / rel).resolve()
    if not resolved.is_relative_to(base):
        raise InvalidInput(f"{what} '{rel}' leads outside the service directory")
    return resolved


def _executable_in_upload(root: Path, service_id: int, rel: str) -> Path:
    """``rel`` inside the upload's directory; also as the web UI spells it, ``<id>/<path>``
    (relative to the directory above): when ``rel`` does not exist and starts with the
    service's id, that segment is dropped."""
    exe = relative_inside(root, rel, "executable_path")
    first, sep, rest = rel.partition("/")
    if not exe.exists() and sep and first == str(service_id) and rest.strip("/"):
        return relative_inside(root, rest, "executable_path")
    return exe


# -- the service -------------------------------------------------------------------------------
class StandaloneServices:
    def __init__(self, settings: Settings, registry: ServiceRegistry) -> None:
        self.settings = settings
        self.registry = registry
        registry.before_delete(self._remove_owned_files)

    @property
    def root(self) -> Path:
        return self.settings.services_dir

    # -- from a local executable ------------------------------------------------------------
    def create_from_local(self, *, name: str, description: str,
                          config: RunConfig) -> tuple[ServiceView, list[Interface]]:
        path = config.executable_path
        if not isinstance(path, str) or not path.strip():
            raise InvalidInput("executable_path is required")
        if not os.path.isabs(path):
            raise InvalidInput(f"executable_path '{path}' must be an absolute path")
        check_executable(Path(path), path)
        workdir = config.working_directory.strip()
        if workdir:
            if not os.path.isabs(workdir):
                raise InvalidInput(f"working_directory '{workdir}' must be an absolute path")
            if not Path(workdir).is_dir():
                raise InvalidInput(f"working_directory '{workdir}' does not exist or is not a "
                                   "directory")
        fields, interfaces = _check_common(config)
        details = StandaloneDetails(executable_path=path, working_directory=workdir,
                                    source="local", **fields)
        view = self.registry.create(name=name, service_type=ServiceType.STANDALONE,
                                    description=description, capabilities=config.capabilities,
                                    interfaces=interfaces, details=details,
                                    policy=config.policy)
        return view, suggested_interfaces()

    # -- from git -----------------------------------------------------------------------------
    async def create_from_git(self, *, name: str, description: str, source: GitSource,
                              config: RunConfig) -> tuple[ServiceView, list[Interface]]:
        from orchestrator.services import git_source

        git_source.parse_url(source.repo_url)
        # Everything that can be checked before cloning is.
        rel_exe = config.executable_path
        relative_inside(self.root, rel_exe, "executable_path")
        rel_wd = config.working_directory.strip()
        if rel_wd:
            relative_inside(self.root, rel_wd, "working_directory")
        fields, interfaces = _check_common(config)
        validate_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        repo = self.root / f"git-{uuid.uuid4().hex}"
        try:
            await asyncio.to_thread(git_source.clone, source.repo_url, repo,
                                    branch=source.branch or None,
                                    username=source.username or None,
                                    password=source.password or None)
            if source.build_command.strip():
                await self._build(repo, source.build_command)
            exe = relative_inside(repo, rel_exe, "executable_path")
            check_executable(exe, rel_exe)
            workdir = ""
            if rel_wd:
                wd = relative_inside(repo, rel_wd, "working_directory")
                if not wd.is_dir():
                    raise InvalidInput(f"working_directory '{rel_wd}' is not a directory in the "
                                       "repository")
                workdir = str(wd)
            details = StandaloneDetails(executable_path=str(exe), working_directory=workdir,
                                        source="git", install_dir=str(repo), **fields)
            view = self.registry.create(name=name, service_type=ServiceType.STANDALONE,
                                        description=description,
                                        capabilities=config.capabilities,
                                        interfaces=interfaces, details=details,
                                        policy=config.policy)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, repo, True)
            raise
        return view, suggested_interfaces()

    async def _build(self, repo: Path, command: str) -> None:
        """Run the build command in the repo; failure or timeout: OperationFailed with its tail."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RN_")}
        env["GIT_TERMINAL_PROMPT"] = "0"
        proc = await asyncio.create_subprocess_shell(
            command, cwd=repo, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        tail: deque[str] = deque(maxlen=BUILD_TAIL_LINES)

        async def collect() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                tail.append(line.decode(errors="replace").rstrip()[:300])

        timeout = self.settings.build_timeout_seconds
        try:
            await asyncio.wait_for(asyncio.gather(collect(), proc.wait()), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise OperationFailed(f"Build command timed out after {timeout}s"
                                  + _tail_text(tail)) from None
        if proc.returncode != 0:
            raise OperationFailed(f"Build command failed with exit code {proc.returncode}"
                                  + _tail_text(tail))

    # -- from an upload -------------------------------------------------------------------------
    def create_from_upload(self, *, name: str, description: str, staged: Path,
                           single_file: str | None) -> ServiceView:
        """Adopt the uploaded files in ``staged`` (a directory) as a new INACTIVE service.

        ``single_file``: the file's name when the upload was one plain file (not an archive);
        it becomes the default executable and is made executable at finalize.
        """
        details = StandaloneDetails(source="upload")
        view = self.registry.create(name=name, service_type=ServiceType.STANDALONE,
                                    description=description, status=ServiceStatus.INACTIVE,
                                    interfaces=suggested_interfaces(), details=details)
        service_id = view.service.id
        assert service_id is not None
        final = self.root / str(service_id)
        try:
            shutil.rmtree(final, ignore_errors=True)  # a leftover of a crash, owned by no one
            os.replace(staged, final)
            exe = str(final / single_file) if single_file else ""
            return self.registry.update_details(service_id, install_dir=str(final),
                                                executable_path=exe)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            with contextlib.suppress(NotFound):
                self.registry.delete(service_id)
            raise

    def replace_upload(self, service_id: int, *, staged: Path,
                       single_file: str | None) -> ServiceView:
        """New files for an uploaded service; it goes back to INACTIVE until finalized again."""
        view = self._upload_service(service_id)
        assert view.standalone is not None
        final = self.root / str(service_id)
        old = self.root / f".old-{service_id}-{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.replace(final, old)
        try:
            os.replace(staged, final)
        except BaseException:
            if old.exists():
                os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
        exe = str(final / single_file) if single_file else ""
        self.registry.update_details(service_id, install_dir=str(final), executable_path=exe)
        self.registry.update(service_id, {"status": ServiceStatus.INACTIVE})
        return self.registry.get(service_id)

    def check_upload_target(self, service_id: int) -> None:
        self._upload_service(service_id)

    def check_stage_target(self, service_id: int) -> ServiceView:
        """A service that may take staged files: one created by an upload, or the web UI's
        placeholder (a STANDALONE service still INACTIVE, with no details yet)."""
        view = self.registry.get(service_id)
        if view.service.service_type != ServiceType.STANDALONE:
            raise InvalidInput("Service is not a standalone service")
        if view.standalone is None:
            if view.service.status != ServiceStatus.INACTIVE:
                raise InvalidInput("Service was not created by an upload")
        elif view.standalone.source != "upload":
            raise InvalidInput("Service was not created by an upload")
        return view

    def stage_upload(self, service_id: int, *, staged: Path,
                     single_file: str | None) -> ServiceView:
        """``replace_upload`` for ``check_stage_target``'s services: a placeholder becomes an
        uploaded service (source ``upload``, INACTIVE until finalized)."""
        view = self.check_stage_target(service_id)
        if view.standalone is None:
            self.registry.add_details(service_id, StandaloneDetails(source="upload"))
        return self.replace_upload(service_id, staged=staged, single_file=single_file)

    def finalize(self, service_id: int,
                 config: RunConfig) -> tuple[ServiceView, list[Interface]]:
        view = self._upload_service(service_id)
        details = view.standalone
        assert details is not None
        root = Path(details.install_dir)
        if not details.install_dir or not root.is_dir():
            raise InvalidInput("The service's upload is missing: upload the files again")
        exe = _executable_in_upload(root, service_id, config.executable_path)
        plain = details.executable_path and Path(details.executable_path).resolve() == exe
        if plain and exe.is_file() and not os.access(exe, os.X_OK):
            mode = exe.stat().st_mode
            os.chmod(exe, stat.S_IMODE(mode) | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        check_executable(exe, config.executable_path)
        workdir = ""
        if config.working_directory.strip():
            wd = relative_inside(root, config.working_directory.strip(), "working_directory")
            if not wd.is_dir():
                raise InvalidInput(f"working_directory '{config.working_directory}' is not a "
                                   "directory of the upload")
            workdir = str(wd)
        fields, interfaces = _check_common(config)
        self.registry.update_details(service_id, executable_path=str(exe),
                                     working_directory=workdir, **fields)
        self.registry.replace_interfaces(service_id, interfaces)
        changes: dict[str, Any] = {**(config.policy or {}), "status": ServiceStatus.ACTIVE}
        if config.capabilities:
            changes["capabilities"] = config.capabilities
        return self.registry.update(service_id, changes), suggested_interfaces()

    # -- details and delete ---------------------------------------------------------------------
    def details(self, service_id: int) -> ServiceView:
        view = self.registry.get(service_id)
        if view.service.service_type != ServiceType.STANDALONE or view.standalone is None:
            raise InvalidInput("Service is not a standalone service")
        return view

    def delete(self, service_id: int) -> None:
        self.details(service_id)
        self.registry.delete(service_id)

    def _upload_service(self, service_id: int) -> ServiceView:
        view = self.details(service_id)
        assert view.standalone is not None
        if view.standalone.source != "upload":
            raise InvalidInput("Service was not created by an upload")
        return view

    def _remove_owned_files(self, view: ServiceView) -> None:
        """Registry delete hook: remove the copies the node made (git clones, uploads)."""
        details = view.standalone
        if details is None or details.source not in ("git", "upload") or not details.install_dir:
            return
        path = Path(details.install_dir)
        if path.parent.resolve() == self.root.resolve():
            shutil.rmtree(path, ignore_errors=True)


def _tail_text(tail: deque[str]) -> str:
    lines = [ln for ln in tail if ln.strip()]
    return (": " + " | ".join(lines)) if lines else ""
