"""Read a workflow from a file: YAML or JSON, a Jinja2 template, or a Python module.

- ``.yaml``/``.yml``/``.json``: the file format of ``flows.client.define`` (name, nodes, edges);
- ``.j2``: a template rendered with parameters first (``flows.client.templates``);
- ``.py``: a module that defines ``workflow`` (a ``Workflow``) at module level, and may define
  ``setup(client)``, called before the workflow is registered (to create its services, say).
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.client.define import DefinitionError, Workflow
from flows.client.templates import render_workflow


@dataclass
class Loaded:
    workflow: Workflow
    setup: Callable[[Any], Any] | None = None


def load(path: Path, params: dict[str, Any] | None = None) -> Loaded:
    if not path.is_file():
        raise DefinitionError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(".j2"):
        return Loaded(render_workflow(path, params))
    if params:
        raise DefinitionError(f"{path.name}: --set applies to .j2 templates only")
    if name.endswith((".yaml", ".yml", ".json")):
        return Loaded(Workflow.from_dict(read_mapping(path)))
    if name.endswith(".py"):
        return load_python(path)
    raise DefinitionError(f"{path.name}: use a .yaml, .yml, .json, .j2 or .py file")


def read_mapping(path: Path) -> Any:
    text = path.read_text()
    try:
        return json.loads(text) if path.name.lower().endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise DefinitionError(f"{path.name}: cannot parse: {exc}") from exc


def load_python(path: Path) -> Loaded:
    namespace = runpy.run_path(str(path), run_name=f"workflow_file_{path.stem}")
    workflow = namespace.get("workflow")
    if not isinstance(workflow, Workflow):
        raise DefinitionError(f"{path.name} must define 'workflow' "
                              "(a flows.client.define.Workflow) at module level")
    setup = namespace.get("setup")
    if setup is not None and not callable(setup):
        raise DefinitionError(f"{path.name}: 'setup' must be a function taking the client")
    workflow.validate()
    return Loaded(workflow, setup)
