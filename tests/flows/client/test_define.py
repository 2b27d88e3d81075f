"""The Python workflow definition, its file format and its resolution against service data."""

from __future__ import annotations

from typing import Any

import pytest

from flows.client.define import DefinitionError, Workflow, step
from flows.client.resolve import ServiceCatalog, resolve

PEER = "a" * 40
OTHER_PEER = "b" * 40


def iface(iid: int, sid: int, kind: str, path: str = "", function: str = "") -> dict[str, Any]:
    return {"id": iid, "service_id": sid, "interface_type": kind, "path": path,
            "mount_function": function, "description": ""}


def catalog() -> ServiceCatalog:
    """Services as GET /api/services and GET /api/services/{id}/interfaces describe them."""
    interfaces = {
        1: [iface(10, 1, "STDIN"), iface(11, 1, "STDOUT"), iface(12, 1, "STDERR"),
            iface(13, 1, "MOUNT", "/out", "OUTPUT")],
        2: [iface(20, 2, "STDIN"), iface(21, 2, "STDOUT"), iface(22, 2, "ENV", "GREETING"),
            iface(23, 2, "ARG", "--name"), iface(24, 2, "MOUNT", "/in", "INPUT"),
            iface(25, 2, "MOUNT", "/out", "OUTPUT")],
        3: [iface(30, 3, "STDIN"), iface(31, 3, "STDOUT")],
        4: [iface(40, 4, "STDOUT")],
        5: [iface(50, 5, "STDIN")],
    }
    names = {1: "generate", 2: "upper", 3: "count", 4: "upper-case", 5: "count"}
    services = [{"id": sid, "name": name, "interfaces": interfaces[sid]}
                for sid, name in names.items()]
    return ServiceCatalog(PEER, services, interfaces)


def pipeline() -> Workflow:
    with Workflow("pipeline", "three stages") as wf:
        gen = step("generate", timeout=30)
        up = step("upper", retry_count=2, env={"LANG": "C"}, args=["-x"])
        cnt = step(3, name="count")
        gen.stdout >> up.stdin
        up.stdout >> cnt.stdin
    return wf


# -- building ----------------------------------------------------------------------------------
def test_context_manager_and_builder_define_the_same_workflow() -> None:
    built = Workflow("pipeline", "three stages")
    gen = built.step("generate", timeout=30)
    up = built.step("upper", retry_count=2, env={"LANG": "C"}, args=["-x"])
    cnt = built.step(3, name="count")
    built.connect(gen.stdout, up.stdin)
    built.connect(up.stdout, cnt.stdin)
    assert built.to_dict() == pipeline().to_dict()
    assert pipeline().to_dict() == {
        "name": "pipeline", "description": "three stages",
        "nodes": {"generate": {"service": "generate", "timeout": 30},
                  "upper": {"service": "upper", "retry_count": 2, "env": {"LANG": "C"},
                            "args": ["-x"]},
                  "count": {"service": 3}},
        "edges": ["generate.stdout -> upper.stdin", "upper.stdout -> count.stdin"],
    }


def test_step_outside_a_with_block_is_an_error() -> None:
    with pytest.raises(DefinitionError, match="outside"):
        step("generate")


def test_repeated_service_gets_numbered_step_names() -> None:
    wf = Workflow("w")
    assert [wf.step("count").name, wf.step("count").name, wf.step("count").name] == \
        ["count", "count-2", "count-3"]
    with pytest.raises(DefinitionError, match="already has a step 'count'"):
        wf.step("upper", name="count")


def test_every_port_kind_wires_and_prints() -> None:
    wf = Workflow("w")
    a, b = wf.step("generate"), wf.step("upper")
    edges = [a.stdout >> b.env("GREETING"), a.stderr >> b.arg("--name"),
             a.mount("/out/") >> b.mount("/in"), a.logs >> b.stdin]
    assert [str(e) for e in edges] == ["generate.stdout -> upper.env(GREETING)",
                                       "generate.stderr -> upper.arg(--name)",
                                       "generate.mount(/out) -> upper.mount(/in)",
                                       "generate.logs -> upper.stdin"]


@pytest.mark.parametrize(("wire", "message"), [
    (lambda a, b: a.stdin >> b.stdin, "generate.stdin is an input"),
    (lambda a, b: a.env("X") >> b.stdin, r"generate.env\(X\) is an input"),
    (lambda a, b: a.stdout >> b.stdout, "upper.stdout is an output"),
    (lambda a, b: a.stdout >> b.logs, "upper.logs is an output"),
])
def test_wrong_directions_are_rejected_before_anything_is_sent(wire: Any, message: str) -> None:
    wf = Workflow("w")
    a, b = wf.step("generate"), wf.step("upper")
    with pytest.raises(DefinitionError, match=message):
        wire(a, b)
    assert wf.edges == []


def test_an_input_is_fed_once() -> None:
    wf = Workflow("w")
    a, b, c = wf.step("generate"), wf.step("upper"), wf.step("count")
    a.stdout >> c.stdin
    with pytest.raises(DefinitionError, match=r"count.stdin is already fed by generate.stdout"):
        b.stdout >> c.stdin
    a.stdout >> b.stdin  # one output may feed many inputs
    a.stdout >> c.env("X")
    assert len(wf.edges) == 3


def test_the_client_wires_by_the_nodes_rules() -> None:
    """The same rules as the node's compiler (orchestrator.wiring): an ENV is fed once per
    name, an ARG and a MOUNT directory may take several sources, and a text input refuses a
    file tree."""
    wf = Workflow("w")
    a, b, c = wf.step("generate"), wf.step("upper"), wf.step("count")
    a.stdout >> c.env("X")
    with pytest.raises(DefinitionError, match=r"count.env\(X\) is already fed"):
        b.stdout >> c.env("X")
    b.stdout >> c.env("Y")
    a.stdout >> c.arg("-i")
    b.stdout >> c.arg("-i")
    a.mount("/out") >> c.mount("/in")
    b.mount("/out") >> c.mount("/in")
    with pytest.raises(DefinitionError, match="a ENV input takes text; a MOUNT output is not"):
        a.mount("/out") >> c.env("Z")
    assert len(wf.edges) == 6


def test_cycles_are_rejected_naming_the_steps() -> None:
    wf = Workflow("w")
    a, b, c = wf.step("generate"), wf.step("upper"), wf.step("count")
    a.stdout >> b.stdin
    b.stdout >> c.stdin
    with pytest.raises(DefinitionError, match=r"cycle \(count -> generate -> upper -> count\)"):
        c.stdout >> a.stdin
    with pytest.raises(DefinitionError, match="cannot feed itself"):
        a.mount("/out") >> a.mount("/in")
    assert [s.name for s in wf.order()] == ["generate", "upper", "count"]


def test_empty_workflow_fails_validation_when_the_block_ends() -> None:
    with pytest.raises(DefinitionError, match="has no steps"), Workflow("empty"):
        pass


def test_bad_ports_and_config_are_rejected() -> None:
    wf = Workflow("w")
    a = wf.step("generate")
    with pytest.raises(DefinitionError, match="must be absolute"):
        a.mount("out")
    with pytest.raises(DefinitionError, match="not an environment variable name"):
        a.env("1X")
    with pytest.raises(DefinitionError, match="timeout must be a non-negative number"):
        wf.step("upper", timeout=-1)
    with pytest.raises(DefinitionError, match="args must be a list of strings"):
        wf.step("upper", args="--x")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="another workflow"):
        a.stdout >> Workflow("other").step("upper").stdin


def test_levels_lay_out_a_diamond() -> None:
    wf = Workflow("diamond")
    src, left, right, join = (wf.step(n) for n in ("generate", "upper", "count", "count"))
    src.stdout >> left.stdin
    src.stdout >> right.stdin
    left.stdout >> join.stdin
    right.stdout >> join.env("RIGHT")
    assert wf.levels() == {"generate": 0, "upper": 1, "count": 1, "count-2": 2}


# -- the file format ---------------------------------------------------------------------------
def test_file_format_round_trips() -> None:
    wf = pipeline()
    again = Workflow.from_dict(wf.to_dict())
    assert again.to_dict() == wf.to_dict()


def test_file_format_accepts_node_lists_and_edge_mappings() -> None:
    wf = Workflow.from_dict({
        "name": "w",
        "nodes": [{"name": "gen", "service": "generate"}, {"name": "up", "service": 2,
                                                           "timeout": 5}],
        "edges": [{"from": "gen.mount(/out)", "to": "up.mount(/in)"}, "gen.stdout->up.arg(--name)"],
    })
    assert wf.to_dict()["edges"] == ["gen.mount(/out) -> up.mount(/in)",
                                     "gen.stdout -> up.arg(--name)"]
    assert wf.steps["up"].config == {"timeout": 5}


@pytest.mark.parametrize(("data", "message"), [
    ([], "must be a mapping"),
    ({"nodes": {}}, "needs a 'name'"),
    ({"name": "w", "nodes": {"a": {"service": "x"}}, "edgez": []}, "unknown workflow keys: edgez"),
    ({"name": "w", "nodes": {"a": {"svc": "x"}}}, "node 'a' needs a 'service'"),
    ({"name": "w", "nodes": {"a": {"service": "x", "timout": 3}}}, "node 'a': unknown keys timout"),
    ({"name": "w", "nodes": {"a": "x"}, "edges": ["a.stdout => a.stdin"]}, "must look like"),
    ({"name": "w", "nodes": {"a": "x"}, "edges": ["a.stdout -> b.stdin"]},
     "no step named 'b' \\(steps: a\\)"),
    ({"name": "w", "nodes": {"a": "x", "b": "y"}, "edges": ["a.stdoot -> b.stdin"]},
     "unknown interface 'stdoot'"),
    ({"name": "w", "nodes": {"a": "x", "b": "y"}, "edges": ["a.stdout(1) -> b.stdin"]},
     "stdout takes no argument"),
    ({"name": "w", "nodes": {}}, "has no steps"),
    ({"name": "w", "nodes": {"a": "x", "b": "y"},
      "edges": ["a.stdout -> b.stdin", "b.stdout -> a.stdin"]}, "cycle"),
])
def test_file_format_errors_name_the_culprit(data: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Workflow.from_dict(data)


# -- resolution against the node's services ----------------------------------------------------
def test_resolve_gives_node_and_connection_bodies() -> None:
    resolved = resolve(pipeline(), catalog())
    assert [n.step for n in resolved.nodes] == ["generate", "upper", "count"]
    gen, up, cnt = (n.body for n in resolved.nodes)
    assert gen == {"node_type": "SERVICE", "peer_id": "", "service_id": 1,
                   "service_name": "generate", "config": {"timeout": 30},
                   "gui_props": {"label": "generate", "position": {"x": 0, "y": 0}}}
    assert up["config"] == {"retry_count": 2, "env": {"LANG": "C"}, "args": ["-x"]}
    assert cnt["service_id"] == 3 and cnt["gui_props"]["position"]["x"] > \
        up["gui_props"]["position"]["x"] > 0
    assert [(c.source_step, c.source_interface_id, c.target_step, c.target_interface_id)
            for c in resolved.connections] == [("generate", 11, "upper", 20),
                                               ("upper", 21, "count", 30)]


def test_resolve_finds_mount_env_and_arg_interfaces_by_path() -> None:
    wf = Workflow("w")
    a, b = wf.step("generate"), wf.step("upper")
    a.mount("/out") >> b.mount("/in/")
    a.stdout >> b.env("GREETING")
    a.stderr >> b.arg("--name")
    ids = [(c.source_interface_id, c.target_interface_id) for c in resolve(wf, catalog())
           .connections]
    assert ids == [(13, 24), (11, 22), (12, 23)]


def test_missing_service_lists_the_near_names() -> None:
    wf = Workflow("w")
    wf.step("uper")
    with pytest.raises(DefinitionError, match=r"no service named 'uper' on this node "
                       r"\(did you mean: upper, upper-case\)"):
        resolve(wf, catalog())
    wf2 = Workflow("w")
    wf2.step("zzzz")
    with pytest.raises(DefinitionError, match="services here: count, generate, upper"):
        resolve(wf2, catalog())
    wf3 = Workflow("w")
    wf3.step(99)
    with pytest.raises(DefinitionError, match="no service with id 99"):
        resolve(wf3, catalog())


def test_two_services_with_one_name_must_be_referred_to_by_id() -> None:
    wf = Workflow("w")
    wf.step("count")
    with pytest.raises(DefinitionError, match=r"2 services are named 'count' \(ids 3, 5\)"):
        resolve(wf, catalog())


def test_missing_interface_names_the_service_and_the_interface() -> None:
    wf = Workflow("w")
    a, b = wf.step(4, name="a"), wf.step("generate", name="b")
    a.stdout >> b.env("NOPE")
    with pytest.raises(DefinitionError, match=r"step 'b': service 'generate' \(id 1\) has no "
                       r"ENV NOPE interface \(it has: STDIN, STDOUT, STDERR, MOUNT /out\)"):
        resolve(wf, catalog())
    wf2 = Workflow("w")
    a, b = wf2.step(4, name="a"), wf2.step("upper", name="b")
    a.stdout >> b.mount("/out")
    with pytest.raises(DefinitionError, match=r"mount /out of service 'upper' .* is an OUTPUT "
                       r"mount, it cannot be an input"):
        resolve(wf2, catalog())


def test_remote_steps_need_an_id_and_interfaces() -> None:
    wf = Workflow("w")
    a = wf.step("generate")
    b = wf.step(7, name="remote", peer_id=OTHER_PEER,
                interfaces=[{"id": 70, "interface_type": "STDIN"}])
    a.stdout >> b.stdin
    resolved = resolve(wf, catalog())
    assert resolved.nodes[1].body["peer_id"] == OTHER_PEER
    assert resolved.nodes[1].body["service_id"] == 7
    assert resolved.connections[0].target_interface_id == 70

    named = Workflow("w")
    named.step("upper", peer_id=OTHER_PEER, interfaces=[])
    with pytest.raises(DefinitionError, match="must be given by id"):
        resolve(named, catalog())
    bare = Workflow("w")
    bare.step(7, peer_id=OTHER_PEER)
    with pytest.raises(DefinitionError, match="list the interfaces"):
        resolve(bare, catalog())
    own = Workflow("w")
    own.step("generate", peer_id=PEER)  # this node's own peer id: looked up locally
    assert resolve(own, catalog()).nodes[0].body["service_id"] == 1


# -- delivering results to the node that runs the workflow ------------------------------------
def test_a_delivery_round_trips_and_resolves_to_a_null_target() -> None:
    wf = pipeline()
    wf.deliver(wf.steps["count"].stdout, as_name=" count.txt ")
    wf.deliver(wf.steps["upper"].stdout)
    data = wf.to_dict()
    assert data["deliver"] == [{"from": "count.stdout", "as": "count.txt"}, "upper.stdout"]
    assert Workflow.from_dict(data).to_dict() == data
    resolved = resolve(wf, catalog())
    bodies = [c.body({"generate": 1, "upper": 2, "count": 3}) for c in resolved.connections]
    assert bodies[-2:] == [
        {"source_node_id": 3, "source_interface_id": 31, "target_node_id": None,
         "target_interface_id": None, "destination_file_name": "count.txt"},
        {"source_node_id": 2, "source_interface_id": 21, "target_node_id": None,
         "target_interface_id": None}]


@pytest.mark.parametrize(("deliver", "message"), [
    (lambda wf: wf.deliver(wf.steps["upper"].stdin), "cannot deliver upper.stdin: it is an "
     "input"),
    (lambda wf: wf.deliver(wf.steps["upper"].stdout, as_name="../x"),
     "cannot deliver upper.stdout: destination_file_name must be a plain file name"),
    (lambda wf: (wf.deliver(wf.steps["upper"].stdout), wf.deliver(wf.steps["upper"].stdout)),
     "upper.stdout is delivered already"),
    (lambda wf: wf.deliver(Workflow("other").step("x").stdout), "belongs to another workflow"),
])
def test_bad_deliveries_are_refused_before_anything_is_sent(deliver: Any, message: str) -> None:
    wf = pipeline()
    with pytest.raises(DefinitionError, match=message):
        deliver(wf)


@pytest.mark.parametrize(("deliver", "message"), [
    ("nope", "'deliver' must be a list"),
    ([{"to": "upper.stdout"}], "deliver item"),
    ([7], "deliver item"),
    (["zz.stdout"], "no step named 'zz'"),
])
def test_bad_deliver_entries_in_files_name_the_culprit(deliver: Any, message: str) -> None:
    data = {**pipeline().to_dict(), "deliver": deliver}
    with pytest.raises(DefinitionError, match=message):
        Workflow.from_dict(data)
