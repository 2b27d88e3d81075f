"""Workflow templates: Jinja2 files in ``templates/`` that render to a workflow definition.

A template renders to the YAML file format of ``flows.client.define`` (name, description, nodes,
edges). Parameters are Jinja2 variables; one a template uses without a ``default`` is
required, and leaving it out is an error that names it. Extra filters for templates:
``as_list`` (a list, or a comma-separated string, as a list) and ``step_names`` (unique step
names for a list of service names), ``q`` (a value as a YAML/JSON scalar, quoted).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml

from flows.client.define import DefinitionError, Workflow

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
SUFFIXES = (".yaml.j2", ".yml.j2", ".json.j2", ".j2")


def as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def step_names(services: Any) -> list[str]:
    """A step name per service: the service's name made safe, numbered when repeated."""
    names: list[str] = []
    for service in as_list(services):
        base = re.sub(r"[^A-Za-z0-9_-]", "-", str(service)) or "step"
        if not base[0].isalpha():
            base = f"s-{base}"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def quote(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def environment(search_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(search_dir)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["as_list"] = as_list
    env.filters["step_names"] = step_names
    env.filters["q"] = quote
    return env


def find_template(name_or_path: str | Path) -> Path:
    """A template file by path, or by name in ``templates/`` (``chain`` -> chain.yaml.j2)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for suffix in ("", *SUFFIXES):
        candidate = TEMPLATES_DIR / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    raise DefinitionError(f"no workflow template '{name_or_path}' (templates: "
                          + ", ".join(available()) + ")")


def available() -> list[str]:
    """Names of the workflow templates shipped in ``templates/``."""
    names = []
    for path in sorted(TEMPLATES_DIR.glob("*.j2")):
        name = path.name
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                names.append(name[: -len(suffix)])
                break
    return names


def parameters(name_or_path: str | Path) -> set[str]:
    """The variables a template reads (required or defaulted)."""
    path = find_template(name_or_path)
    env = environment(path.parent)
    return set(jinja2.meta.find_undeclared_variables(env.parse(path.read_text())))


def render(name_or_path: str | Path, params: dict[str, Any] | None = None) -> str:
    path = find_template(name_or_path)
    env = environment(path.parent)
    try:
        return env.get_template(path.name).render(**(params or {}))
    except jinja2.UndefinedError as exc:
        missing = re.search(r"'([^']+)' is undefined", str(exc))
        what = f"parameter '{missing.group(1)}'" if missing else str(exc)
        raise DefinitionError(f"template {path.name}: {what} is required "
                              "(give it with --set KEY=VALUE)") from exc
    except jinja2.TemplateError as exc:
        raise DefinitionError(f"template {path.name}: {exc}") from exc


def render_definition(name_or_path: str | Path,
                      params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rendered template, parsed (YAML, of which JSON is a part)."""
    text = render(name_or_path, params)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DefinitionError(f"template {Path(name_or_path).name} rendered invalid YAML: "
                              f"{exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError(f"template {Path(name_or_path).name} did not render a mapping")
    return data


def render_workflow(name_or_path: str | Path, params: dict[str, Any] | None = None) -> Workflow:
    return Workflow.from_dict(render_definition(name_or_path, params))


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings to parameters; values read as YAML scalars/lists (3 -> int)."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise DefinitionError(f"--set {item!r}: write KEY=VALUE with KEY a plain name")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        params[key] = raw if value is None else value
    return params
