"""Interface detection: what a Docker service reads and writes, from what describes it.

Pure functions over data: an image config (the ``Config`` of ``docker inspect``), a Dockerfile's
text, a compose service's mapping. Each returns suggestions; ``suggest`` merges them after the
four streams every service has (STDIN, STDOUT, STDERR, LOGS), first one of a (type, path) wins.

Rules:
- Env ``K=V`` / Dockerfile ``ENV`` / compose ``environment`` -> ENV ``K`` (runtime plumbing such
  as PATH or HOME is skipped).
- Volumes / ``VOLUME`` / compose ``volumes`` -> MOUNT at the container path; relative paths are
  resolved against the working directory (``WorkingDir`` / ``WORKDIR`` / ``working_dir``). A
  path that names outputs (out, output, results, ...) is OUTPUT, a read-only one INPUT, the rest
  INPUT as well.
- ExposedPorts / ``EXPOSE`` / compose ``ports`` -> ENV ``PORT`` for the first port and
  ``PORT_<n>`` for the others.
- Dockerfile ``ARG NAME[=default]`` -> ARG ``NAME``.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.states import InterfaceType
from orchestrator.wiring import Interface

SKIPPED_ENV = frozenset({
    "PATH", "HOME", "HOSTNAME", "TERM", "SHLVL", "PWD", "OLDPWD", "USER", "SHELL", "LANG",
    "LANGUAGE", "DEBIAN_FRONTEND", "container",
})
_OUTPUT_WORDS = re.compile(r"(^|[/_.-])(out|output|outputs|result|results|export|exports|"
                           r"artifacts?|dist|reports?)($|[/_.-])", re.IGNORECASE)


STANDARD = (
    Interface(InterfaceType.STDIN, description="Standard input"),
    Interface(InterfaceType.STDOUT, description="Standard output"),
    Interface(InterfaceType.STDERR, description="Standard error"),
    Interface(InterfaceType.LOGS, description="Combined log output"),
)


def suggest(*sources: Iterable[Interface]) -> list[Interface]:
    """The standard streams, then every source's suggestions, without duplicates."""
    seen: set[tuple[str, str]] = set()
    out: list[Interface] = []
    for item in (*STANDARD, *(s for source in sources for s in source)):
        if item.key not in seen:
            seen.add(item.key)
            out.append(item)
    return out


# -- helpers shared by the sources -------------------------------------------------------------
def _env(name: str, origin: str) -> Interface | None:
    name = name.strip()
    if not name or name in SKIPPED_ENV or name.startswith("LC_") or not _valid_env_name(name):
        return None
    return Interface(InterfaceType.ENV, name, "", f"Detected environment variable ({origin})")


def _valid_env_name(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) is not None


def _mount(path: str, workdir: str, origin: str, *, read_only: bool = False) -> Interface | None:
    path = path.strip().strip('"').strip("'")
    if not path:
        return None
    if not path.startswith("/"):
        path = posixpath.join(workdir or "/", path)
    path = posixpath.normpath(path)
    if path == "/":
        return None
    function = "INPUT" if read_only or not _OUTPUT_WORDS.search(path) else "OUTPUT"
    return Interface(InterfaceType.MOUNT, path, function, f"Detected volume mount ({origin})")


def _ports(ports: Iterable[str], origin: str) -> list[Interface]:
    out = []
    for index, port in enumerate(p for p in ports if p):
        name = "PORT" if index == 0 else f"PORT_{port.split('/')[0]}"
        out.append(Interface(InterfaceType.ENV, name, "",
                              f"Detected exposed port {port} ({origin})"))
    return out


# -- image config ------------------------------------------------------------------------------
def from_image_config(config: Mapping[str, Any] | None) -> list[Interface]:
    """From an image's ``Config`` (``image.attrs["Config"]``): Env, Volumes, ExposedPorts."""
    if not config:
        return []
    origin = "image"
    workdir = str(config.get("WorkingDir") or "")
    out: list[Interface] = []
    for entry in config.get("Env") or []:
        item = _env(str(entry).partition("=")[0], origin)
        if item:
            out.append(item)
    for path in sorted(config.get("Volumes") or {}):
        mount = _mount(str(path), workdir, origin)
        if mount:
            out.append(mount)
    out.extend(_ports(sorted(config.get("ExposedPorts") or {}, key=_port_sort), origin))
    return out


def _port_sort(port: str) -> tuple[int, str]:
    number = port.split("/")[0]
    return (int(number) if number.isdigit() else 1 << 30, port)


# -- Dockerfile --------------------------------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    escape = "\\"
    lines = text.splitlines()
    for line in lines[:5]:
        m = re.match(r"^\s*#\s*escape\s*=\s*(\S)\s*$", line, re.IGNORECASE)
        if m:
            escape = m.group(1)
    out: list[tuple[str, str]] = []
    current = ""
    for raw in lines:
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith(escape):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        word, _, rest = current.strip().partition(" ")
        if word:
            out.append((word.upper(), rest.strip()))
        current = ""
    if current.strip():
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _words(args: str) -> list[str]:
    """A JSON array or whitespace/quote-separated words."""
    if args.startswith("["):
        try:
            value = json.loads(args)
            if isinstance(value, list):
                return [str(v) for v in value]
        except ValueError:
            pass
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _env_pairs(args: str) -> list[str]:
    """Variable names of an ENV instruction (``K=V K2=V2`` or the legacy ``K V``)."""
    words = _words(args)
    if not words:
        return []
    if "=" not in words[0]:
        return [words[0]]
    return [w.partition("=")[0] for w in words if "=" in w]


@dataclass
class _Stage:
    items: list[Interface] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    workdir: str = "/"

    def copy(self) -> _Stage:
        return _Stage(list(self.items), list(self.ports), self.workdir)


def from_dockerfile(text: str | None) -> list[Interface]:
    """From a Dockerfile: the final stage's ENV, VOLUME, EXPOSE and the ARGs it declares
    (a stage built ``FROM`` an earlier one inherits what that one declared)."""
    if not text:
        return []
    origin = "Dockerfile"
    stages: dict[str, _Stage] = {}
    stage: _Stage | None = None
    for instr, args in dockerfile_instructions(text):
        if instr == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            base = words[0].lower() if words else ""
            stage = stages[base].copy() if base in stages else _Stage()
            if len(words) >= 3 and words[1].lower() == "as":
                stages[words[2].lower()] = stage
        elif instr == "ARG":
            for word in _words(args):
                name, _, default = word.partition("=")
                if name and _valid_env_name(name):
                    desc = f"Build argument {name}" + (f" (default: {default})" if default else "")
                    item = Interface(InterfaceType.ARG, name, "", f"{desc} ({origin})")
                    if stage is not None:  # ARGs before the first FROM only feed FROM lines
                        stage.items.append(item)
        elif stage is None:
            continue
        elif instr == "ENV":
            stage.items.extend(s for s in (_env(n, origin) for n in _env_pairs(args)) if s)
        elif instr == "VOLUME":
            stage.items.extend(
                s for s in (_mount(p, stage.workdir, origin) for p in _words(args)) if s)
        elif instr == "EXPOSE":
            stage.ports.extend(p if "/" in p else f"{p}/tcp" for p in _words(args))
        elif instr == "WORKDIR":
            path = args.strip().strip('"')
            if path:
                stage.workdir = posixpath.normpath(posixpath.join(stage.workdir, path))
    if stage is None:
        return []
    return [*stage.items, *_ports(stage.ports, origin)]


# -- compose -----------------------------------------------------------------------------------
def compose_service(doc: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The compose service to offer: the first with a ``build`` section, else the first with an
    ``image``. Raises ValueError when there is none."""
    services = (doc or {}).get("services") if isinstance(doc, Mapping) else None
    if not isinstance(services, Mapping) or not services:
        raise ValueError("the compose file defines no services")
    items = [(str(k), v) for k, v in services.items() if isinstance(v, Mapping)]
    for name, svc in items:
        if svc.get("build"):
            return name, dict(svc)
    for name, svc in items:
        if svc.get("image"):
            return name, dict(svc)
    raise ValueError("no compose service has a build section or an image")


def from_compose(service: Mapping[str, Any] | None) -> list[Interface]:
    """From one compose service: environment, volumes and ports."""
    if not service:
        return []
    origin = "compose"
    workdir = str(service.get("working_dir") or "/")
    out: list[Interface] = []
    env = service.get("environment") or {}
    names = list(env) if isinstance(env, Mapping) else [str(e).partition("=")[0] for e in env]
    out.extend(s for s in (_env(str(n), origin) for n in names) if s)
    for volume in service.get("volumes") or []:
        target, read_only = _compose_volume(volume)
        if target:
            mount = _mount(target, workdir, origin, read_only=read_only)
            if mount:
                out.append(mount)
    ports = [p for p in (_compose_port(p) for p in service.get("ports") or []) if p]
    out.extend(_ports(ports, origin))
    return out


def _compose_volume(volume: Any) -> tuple[str, bool]:
    if isinstance(volume, Mapping):
        return str(volume.get("target") or ""), bool(volume.get("read_only"))
    parts = str(volume).split(":")
    if len(parts) == 1:
        return parts[0], False
    mode = parts[2] if len(parts) >= 3 else ""
    return parts[1], "ro" in mode.split(",")


def _compose_port(port: Any) -> str:
    """The container side of a compose port entry, as ``<port>/<proto>``."""
    if isinstance(port, Mapping):
        target = str(port.get("target") or "")
        return f"{target}/{port.get('protocol') or 'tcp'}" if target else ""
    text = str(port)
    text, _, proto = text.partition("/")
    container = text.rsplit(":", 1)[-1]
    return f"{container}/{proto or 'tcp'}" if container else ""
