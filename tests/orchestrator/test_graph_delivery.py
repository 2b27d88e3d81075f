"""Connections to the requesting node and interfaces named by type, in the compiler."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.graph import Delivery, EdgeSpec, Plan, ServiceInfo, compile_plan
from orchestrator.wiring import ANY_MOUNT_OUTPUT, DATA_OUTPUT, Interface
from tests.orchestrator.test_graph import OTHER, compile_, node


def to_requester(id_: int, source: int, *, interface_id: int | None = None,
                 interface_type: str | None = None, name: str | None = None,
                 target_type: str | None = None,
                 target_id: int | None = None) -> EdgeSpec:
    return EdgeSpec(id_, source, None, interface_id, target_id, interface_type, target_type,
                    name)


def test_an_output_to_the_requesting_node_is_a_delivery_not_an_edge() -> None:
    plan = compile_([node(1, 1), node(2, 2)],
                    [EdgeSpec(1, 1, 2, 11, 21),
                     to_requester(2, 2, interface_type="STDOUT", name="result.txt",
                                  target_type="STDIN")])
    assert plan.node(2).deliveries == (Delivery(2, "STDOUT", "result.txt"),)
    assert plan.node(2).upstream == (1,) and plan.node(1).deliveries == ()
    # Delivered and also wired onward: still a delivery.
    plan = compile_([node(1, 1), node(2, 2)],
                    [EdgeSpec(1, 1, 2, 11, 21), to_requester(2, 1, interface_id=11)])
    assert plan.node(1).deliveries == (Delivery(2, "STDOUT", None),)
    assert Plan.from_dict(plan.to_dict()) == plan


def test_a_lone_node_delivering_to_the_requester_compiles() -> None:
    plan = compile_([node(5, 3)], [to_requester(1, 5, interface_type="MOUNT")])
    assert plan.node(5).deliveries == (Delivery(1, "MOUNT:/out", None),)
    plan = compile_([node(4, 4)], [to_requester(1, 4, interface_type="MOUNT")])
    assert plan.node(4).deliveries == (Delivery(1, DATA_OUTPUT, None),)


def test_interfaces_named_by_type_resolve_to_the_one_of_that_type() -> None:
    # MOUNT out of "box" by type, into "box"'s MOUNT in by type, and "tr"'s STDIN.
    plan = compile_([node(1, 3), node(2, 3), node(3, 2)],
                    [EdgeSpec(1, 1, 2, None, None, "MOUNT", "MOUNT"),
                     EdgeSpec(2, 1, 3, None, None, "STDERR", "STDIN")])
    (inp,) = plan.node(2).inputs
    assert (inp.source_key, inp.target_type, inp.target_path) == ("MOUNT:/out", "MOUNT", "/in")
    (inp,) = plan.node(3).inputs
    assert (inp.source_key, inp.target_type) == ("STDERR", "STDIN")


def test_a_remote_service_named_by_type_is_resolved_where_it_runs() -> None:
    plan = compile_([node(1, 9, OTHER), node(2, 9, OTHER)],
                    [EdgeSpec(1, 1, 2, None, None, "MOUNT", "MOUNT"),
                     to_requester(2, 2, interface_type="MOUNT")],
                    is_known_peer=lambda p: p == OTHER)
    (inp,) = plan.node(2).inputs
    assert (inp.source_key, inp.target_type, inp.target_interface_id) == (
        ANY_MOUNT_OUTPUT, "MOUNT", None)
    assert plan.node(2).deliveries == (Delivery(2, ANY_MOUNT_OUTPUT, None),)


@pytest.mark.parametrize(("edges", "message"), [
    ([to_requester(1, 1, interface_id=11), to_requester(2, 1, interface_type="STDOUT")],
     "Connection 2: that output of node 1 (gen) is delivered to the requesting node already "
     "(connection 1)"),
    ([to_requester(1, 1, target_id=21)], "Connection 1 ends at the requesting node, whose one "
     "input is STDIN"),
    ([to_requester(1, 1, target_type="MOUNT")], "Connection 1 ends at the requesting node"),
    ([to_requester(1, 1, interface_type="STDIN")], "Connection 1: source interface type STDIN "
     "is not an output"),
    ([to_requester(1, 1, interface_type="MOUNT")], "Connection 1: node 1 (gen) has no MOUNT "
     "output"),
    ([to_requester(1, 1, interface_id=12, interface_type="STDOUT")],
     "Connection 1: source interface 12 is STDERR, not STDOUT"),
    ([EdgeSpec(1, 1, 2, None, None, "STDOUT", "ARG")], "Connection 1: node 2 (tr) has no ARG "
     "input"),
    ([EdgeSpec(1, 1, 2, None, None, "STDOUT", "STDOUT")], "Connection 1: target interface type "
     "STDOUT is not an input"),
    ([to_requester(1, 3)], "Connection 1: node 3 is not in this workflow"),
])
def test_bad_deliveries_and_types_are_refused_by_name(edges: list[EdgeSpec],
                                                        message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        compile_([node(1, 1), node(2, 2)], edges)
    assert err.value.message.startswith(message), err.value.message


def test_two_interfaces_of_one_type_need_an_id() -> None:
    two = ServiceInfo(1, "two", "DOCKER", (Interface("MOUNT", "/a", "OUTPUT", id=1, service_id=1),
                                           Interface("MOUNT", "/b", "OUTPUT", id=2, service_id=1)))
    with pytest.raises(InvalidInput) as err:
        compile_plan(1, "wf", [node(1, 1)], [to_requester(1, 1, interface_type="MOUNT")],
                     own_peer_id="a" * 40, service={1: two}.get, interface=lambda _i: None)
    assert "has 2 MOUNT outputs; name one by source_interface_id" in err.value.message
