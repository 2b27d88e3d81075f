"""The workflow compiler, without I/O: plans, wiring rules and the messages of rejections."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.graph import (
    Defaults,
    EdgeSpec,
    NodeSpec,
    Plan,
    ServiceInfo,
    compile_plan,
)
from orchestrator.wiring import Interface

ME = "a" * 40
OTHER = "b" * 40


def iface(id_: int, svc: int, kind: str, path: str = "", fn: str = "") -> Interface:
    return Interface(kind, path, fn, id=id_, service_id=svc)


# Service 1 "gen": STDOUT(11), STDERR(12). Service 2 "tr": STDIN(21), STDOUT(22), ENV(23).
# Service 3 "box": MOUNT in (31), MOUNT out (32), ARG (33). Service 4: DATA.
SERVICES = {
    1: ServiceInfo(1, "gen", "STANDALONE", (iface(11, 1, "STDOUT"), iface(12, 1, "STDERR"))),
    2: ServiceInfo(2, "tr", "STANDALONE", (iface(21, 2, "STDIN"), iface(22, 2, "STDOUT"),
                                           iface(23, 2, "ENV", "WORD")), timeout=42),
    3: ServiceInfo(3, "box", "DOCKER", (iface(31, 3, "MOUNT", "/in", "INPUT"),
                                        iface(32, 3, "MOUNT", "/out", "OUTPUT"),
                                        iface(33, 3, "ARG", "--name"))),
    4: ServiceInfo(4, "secret", "DATA", ()),
}
IFACES = {i.id: i for s in SERVICES.values() for i in s.interfaces}


def compile_(nodes: list[NodeSpec], edges: list[EdgeSpec], **kw: object) -> Plan:
    return compile_plan(7, "wf", nodes, edges, own_peer_id=ME, service=SERVICES.get,
                        interface=IFACES.get, defaults=Defaults(timeout=300, retry_count=1),
                        **kw)  # type: ignore[arg-type]


def node(id_: int, svc: int, peer: str = "", **config: object) -> NodeSpec:
    return NodeSpec(id_, peer, svc, config=config)


def test_chain_in_topological_order_with_inputs_and_config() -> None:
    nodes = [node(3, 2), node(1, 1), node(2, 2, timeout=5, retry_count=3, env={"A": "1"},
                                        cmd="sh -c 'echo hi'")]
    edges = [EdgeSpec(10, 1, 2, 11, 21), EdgeSpec(11, 2, 3, 22, 21)]
    plan = compile_(nodes, edges)
    assert [n.node_id for n in plan.nodes] == [1, 2, 3]
    second = plan.node(2)
    assert second.upstream == (1,)
    (inp,) = second.inputs
    assert (inp.source_key, inp.target_type, inp.connection_id) == ("STDOUT", "STDIN", 10)
    assert (second.timeout, second.retry_count) == (5.0, 3)
    assert second.cmd == ("sh", "-c", "echo hi")
    assert second.env == (("A", "1"),)
    # Defaults: the service's own timeout, then the node-wide one; retry from the defaults.
    assert plan.node(3).timeout == 42.0 and plan.node(3).retry_count == 1
    assert plan.node(1).timeout == 300.0
    # Outputs not wired onward are final results.
    finals = {(n.node_id, o.key): o.final for n in plan.nodes for o in n.outputs}
    assert finals[(1, "STDOUT")] is False and finals[(3, "STDOUT")] is True
    assert finals[(1, "STDERR")] is True


def test_plan_round_trips_through_json_dict() -> None:
    nodes = [node(1, 1), node(2, 3, entrypoint=["/bin/sh"])]
    plan = compile_(nodes, [EdgeSpec(1, 1, 2, 11, 31)])
    assert Plan.from_dict(plan.to_dict()) == plan


def test_mount_and_arg_and_env_targets() -> None:
    nodes = [node(1, 1), node(2, 3), node(3, 2), node(4, 3)]
    edges = [EdgeSpec(1, 1, 2, 11, 31), EdgeSpec(2, 1, 2, 11, 33), EdgeSpec(3, 1, 3, 11, 23),
             EdgeSpec(4, 2, 4, 32, 31)]
    plan = compile_(nodes, edges)
    kinds = {(i.connection_id, i.target_type, i.target_path) for n in plan.nodes
             for i in n.inputs}
    assert kinds == {(1, "MOUNT", "/in"), (2, "ARG", "--name"), (3, "ENV", "WORD"),
                     (4, "MOUNT", "/in")}
    assert plan.node(4).inputs[0].source_key == "MOUNT:/out"


def test_diamond_orders_join_last() -> None:
    nodes = [node(1, 1), node(2, 2), node(3, 2), node(4, 3)]
    edges = [EdgeSpec(1, 1, 2, 11, 21), EdgeSpec(2, 1, 3, 11, 21),
             EdgeSpec(3, 2, 4, 22, 31), EdgeSpec(4, 3, 4, 22, 31)]
    plan = compile_(nodes, edges)
    assert [n.node_id for n in plan.nodes] == [1, 2, 3, 4]
    assert plan.node(4).upstream == (2, 3)
    assert plan.downstream(1) == {2, 3, 4}
    assert plan.downstream(2) == {4}


def test_no_nodes() -> None:
    with pytest.raises(InvalidInput, match="no nodes"):
        compile_([], [])


def test_cycle_names_its_nodes_only() -> None:
    nodes = [node(1, 2), node(2, 2), node(3, 2), node(4, 2)]
    edges = [EdgeSpec(1, 1, 2, 22, 21), EdgeSpec(2, 2, 3, 22, 21), EdgeSpec(3, 3, 2, 22, 23),
             EdgeSpec(4, 3, 4, 22, 21)]
    with pytest.raises(InvalidInput) as err:
        compile_(nodes, edges)
    assert "cycle" in err.value.message
    assert "node 2 (tr)" in err.value.message and "node 3 (tr)" in err.value.message
    assert "node 1" not in err.value.message and "node 4" not in err.value.message


def test_output_to_output_rejected() -> None:
    with pytest.raises(InvalidInput, match=r"Connection 5: target interface 22 \(STDOUT\)"):
        compile_([node(1, 1), node(2, 2)], [EdgeSpec(5, 1, 2, 11, 22)])


def test_input_to_input_rejected() -> None:
    with pytest.raises(InvalidInput, match=r"Connection 5: source interface 21 \(STDIN\)"):
        compile_([node(1, 2), node(2, 2)], [EdgeSpec(5, 1, 2, 21, 21)])


def test_missing_service_rejected() -> None:
    with pytest.raises(InvalidInput, match="Node 9: service 99 does not exist"):
        compile_([node(9, 99)], [])


def test_missing_interface_rejected() -> None:
    with pytest.raises(InvalidInput, match="Connection 5: source interface 777 does not exist"):
        compile_([node(1, 1), node(2, 2)], [EdgeSpec(5, 1, 2, 777, 21)])


def test_interface_of_another_service_rejected() -> None:
    with pytest.raises(InvalidInput, match="target interface 31 belongs to service 3"):
        compile_([node(1, 1), node(2, 2)], [EdgeSpec(5, 1, 2, 11, 31)])


def test_unknown_peer_rejected_and_known_peer_accepted() -> None:
    with pytest.raises(InvalidInput, match=f"Node 2: peer {OTHER} is not known"):
        compile_([node(1, 1), node(2, 55, peer=OTHER)], [EdgeSpec(5, 1, 2, 11, 900)])
    plan = compile_([node(1, 1), node(2, 55, peer=OTHER)], [EdgeSpec(5, 1, 2, 11, 900)],
                    is_known_peer=lambda p: p == OTHER)
    remote = plan.node(2)
    assert not remote.local and remote.peer_id == OTHER
    # A remote peer's interface is taken as given and resolved by that peer.
    assert remote.inputs[0].target_type is None and remote.inputs[0].target_interface_id == 900


def test_two_sources_into_one_stdin_rejected() -> None:
    nodes = [node(1, 1), node(2, 1), node(3, 2)]
    with pytest.raises(InvalidInput, match=r"STDIN of node 3 .* already has a source"):
        compile_(nodes, [EdgeSpec(1, 1, 3, 11, 21), EdgeSpec(2, 2, 3, 11, 21)])


def test_mount_output_into_env_rejected() -> None:
    with pytest.raises(InvalidInput, match="ENV input takes text"):
        compile_([node(1, 3), node(2, 2)], [EdgeSpec(5, 1, 2, 32, 23)])


def test_data_service_is_a_source() -> None:
    plan = compile_([node(1, 4), node(2, 3)], [EdgeSpec(1, 1, 2, None, 31)])
    assert plan.node(2).inputs[0].source_key == "DATA"
    with pytest.raises(InvalidInput, match="DATA service and takes no input"):
        compile_([node(1, 1), node(2, 4)], [EdgeSpec(1, 1, 2, 11, None)])


def test_default_ends_are_stdout_to_stdin() -> None:
    plan = compile_([node(1, 1), node(2, 2)], [EdgeSpec(1, 1, 2)])
    inp = plan.node(2).inputs[0]
    assert (inp.source_key, inp.target_type) == ("STDOUT", "STDIN")
