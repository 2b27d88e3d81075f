"""Workflow templates and workflow files: rendering, parameters and loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.client.define import DefinitionError
from flows.client.files import load
from flows.client.templates import (
    available,
    parameters,
    parse_params,
    render,
    render_definition,
    render_workflow,
)

REPO = Path(__file__).resolve().parents[3]


def test_shipped_templates_are_listed_with_their_parameters() -> None:
    assert {"chain", "fan_out"} <= set(available())
    assert {"services", "name", "timeout", "retry_count"} <= parameters("chain")
    assert {"source", "workers", "port", "worker_port"} <= parameters("fan_out")


def test_chain_renders_a_linear_pipeline() -> None:
    wf = render_workflow("chain", {"services": "generate, upper,count", "timeout": 30,
                                   "retry_count": 1})
    assert wf.to_dict() == {
        "name": "chain: generate -> upper -> count",
        "description": "each step's stdout feeds the next step's stdin: generate -> upper -> count",
        "nodes": {name: {"service": name, "timeout": 30, "retry_count": 1}
                  for name in ("generate", "upper", "count")},
        "edges": ["generate.stdout -> upper.stdin", "upper.stdout -> count.stdin"],
    }


def test_chain_with_a_repeated_service_and_a_single_step() -> None:
    wf = render_workflow("chain", {"services": ["upper", "upper", "9 lives"], "name": "x"})
    assert list(wf.steps) == ["upper", "upper-2", "s-9-lives"]
    assert wf.steps["s-9-lives"].service == "9 lives"
    assert [str(e) for e in wf.edges] == ["upper.stdout -> upper-2.stdin",
                                          "upper-2.stdout -> s-9-lives.stdin"]
    single = render_workflow("chain", {"services": "generate"})
    assert list(single.steps) == ["generate"] and single.edges == []


def test_fan_out_feeds_every_worker_from_the_source() -> None:
    wf = render_workflow("fan_out", {"source": "gen", "workers": "a,b,a", "name": "fan"})
    assert wf.name == "fan"
    assert [str(e) for e in wf.edges] == ["gen.stdout -> a.stdin", "gen.stdout -> b.stdin",
                                          "gen.stdout -> a-2.stdin"]
    assert wf.levels() == {"gen": 0, "a": 1, "b": 1, "a-2": 1}
    mounts = render_workflow("fan_out", {"source": "gen", "workers": ["a"], "port": "mount(/out)",
                                         "worker_port": "mount(/in)"})
    assert [str(e) for e in mounts.edges] == ["gen.mount(/out) -> a.mount(/in)"]


def test_values_with_quotes_and_colons_stay_intact() -> None:
    tricky = 'we said: "hi" # not a comment'
    data = render_definition("chain", {"services": [tricky], "name": tricky})
    assert data["name"] == tricky
    assert data["nodes"]["we-said---hi----not-a-comment"]["service"] == tricky


def test_missing_parameter_is_named() -> None:
    with pytest.raises(DefinitionError, match="parameter 'services' is required"):
        render("chain", {})
    with pytest.raises(DefinitionError, match="parameter 'workers' is required"):
        render("fan_out", {"source": "gen"})


def test_unknown_template_lists_the_shipped_ones() -> None:
    with pytest.raises(DefinitionError, match=r"no workflow template 'nope' \(templates: .*chain"):
        render("nope")


def test_parse_params_reads_yaml_scalars() -> None:
    assert parse_params(["n=3", "name=my flow", "workers=[a, b]", "x=", "on=true",
                         "expr=a=b"]) == {"n": 3, "name": "my flow", "workers": ["a", "b"],
                                          "x": "", "on": True, "expr": "a=b"}
    with pytest.raises(DefinitionError, match="KEY=VALUE"):
        parse_params(["novalue"])
    with pytest.raises(DefinitionError, match="KEY=VALUE"):
        parse_params(["bad key=1"])


# -- workflow files ----------------------------------------------------------------------------
def test_template_file_outside_templates_dir(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml.j2"
    path.write_text("name: {{ name | q }}\nnodes:\n  only: {service: {{ svc | q }}}\n")
    loaded = load(path, {"name": "mine", "svc": "generate"})
    assert loaded.workflow.to_dict()["nodes"] == {"only": {"service": "generate"}}
    assert loaded.setup is None


def test_yaml_and_json_files_load_the_same_workflow(tmp_path: Path) -> None:
    yaml_wf = load(REPO / "examples" / "text_pipeline.yaml").workflow
    json_path = tmp_path / "pipeline.json"
    json_path.write_text(json.dumps(yaml_wf.to_dict()))
    assert load(json_path).workflow.to_dict() == yaml_wf.to_dict()
    with pytest.raises(DefinitionError, match=r"--set applies to \.j2 templates only"):
        load(json_path, {"x": 1})
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DefinitionError, match=r"bad\.yaml: cannot parse"):
        load(tmp_path / "bad.yaml")
    (tmp_path / "w.txt").write_text("")
    with pytest.raises(DefinitionError, match=r"use a \.yaml"):
        load(tmp_path / "w.txt")


def test_python_examples_define_workflow_and_setup() -> None:
    text = load(REPO / "examples" / "text_pipeline.py")
    assert text.workflow.name == "text-pipeline" and callable(text.setup)
    # The YAML example is the same pipeline as the Python one.
    assert text.workflow.to_dict() == load(REPO / "examples" / "text_pipeline.yaml").workflow \
        .to_dict()
    fan = load(REPO / "examples" / "fan_out.py")
    assert fan.workflow.name == "word-counts"
    assert sorted(fan.workflow.levels().values()) == [0, 1, 1, 1]


def test_python_file_without_workflow_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.py"
    path.write_text("x = 1\n")
    with pytest.raises(DefinitionError, match="must define 'workflow'"):
        load(path)
    with pytest.raises(DefinitionError, match="no such file"):
        load(tmp_path / "absent.yaml")
