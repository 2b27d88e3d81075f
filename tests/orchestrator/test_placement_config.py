"""Workflow nodes placed by content digest, and the cache flags: what the compiler accepts,
and the order attempts take over the peers that offer the service (no I/O)."""

from __future__ import annotations

import pytest

from flows.placement import Candidate, order, pick, placed_on
from orchestrator.errors import InvalidInput
from orchestrator.graph import Defaults, EdgeSpec, NodeSpec, Plan, compile_plan
from orchestrator.workflows import validate_node_config

OWN = "0" * 40
B, C, D = "b" * 40, "c" * 40, "d" * 40
DIGEST = "sha256:" + "12" * 32


def compile_nodes(nodes: list[NodeSpec], edges: list[EdgeSpec] = (),  # type: ignore[assignment]
                  defaults: Defaults = Defaults()) -> Plan:
    return compile_plan(1, "wf", nodes, list(edges), own_peer_id=OWN,
                        service=lambda _sid: None, interface=lambda _iid: None,
                        is_known_peer=lambda p: p in (B, C, D), defaults=defaults)


def test_a_placed_node_needs_no_service_and_gets_an_attempt_per_peer() -> None:
    plan = compile_nodes([
        NodeSpec(1, "", None, config={"service_digest": DIGEST, "placement": [C, B]}),
        NodeSpec(2, "", None, config={"service_digest": DIGEST, "placement": "any",
                                      "retry_count": 5})])
    listed, anywhere = plan.nodes
    assert (listed.placement, listed.placed_any, listed.content_digest) == ((C, B), False,
                                                                            DIGEST)
    assert listed.retry_count == 1 and listed.peer_id == "" and listed.placed
    assert anywhere.placed_any and anywhere.retry_count == 5
    assert listed.accepted_signers == (C, B)
    # The plan round-trips through the execution row.
    assert Plan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("config, message", [
    ({"placement": "any"}, "service_digest"),
    ({"placement": "any", "service_digest": "sha256:xyz"}, "service_digest"),
    ({"placement": [], "service_digest": DIGEST}, "placement"),
    ({"placement": ["not a peer"], "service_digest": DIGEST}, "placement"),
    ({"placement": [B] * 17, "service_digest": DIGEST}, "placement"),
    ({"placement": {"peer": B}, "service_digest": DIGEST}, "placement"),
    ({"cache": "yes"}, "cache"),
    ({"cache_peers": ["x"]}, "cache_peers"),
    ({"cache_peers": B}, "cache_peers"),
])
def test_wrong_placement_and_cache_configs_are_refused_when_saved(config: dict[str, object],
                                                                  message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_node_config(config)


def test_a_placed_nodes_connections_name_interfaces_by_type() -> None:
    placed = NodeSpec(2, "", None, config={"service_digest": DIGEST, "placement": "any"})
    source = NodeSpec(1, B, 7)
    with pytest.raises(InvalidInput, match="by type"):
        compile_nodes([source, placed], [EdgeSpec(1, 1, 2, target_interface_id=40)])
    plan = compile_nodes([source, placed], [EdgeSpec(1, 1, 2, source_interface_type="STDOUT",
                                                     target_interface_type="STDIN")])
    assert plan.node(2).inputs[0].target_type == "STDIN"


def test_cache_is_off_unless_the_node_or_the_workflow_says_so() -> None:
    nodes = [NodeSpec(1, B, 7), NodeSpec(2, B, 8, config={"cache": True, "cache_peers": [C]}),
             NodeSpec(3, B, 9, config={"cache": False})]
    off, on, no = compile_nodes(nodes).nodes
    assert (off.cache, on.cache, no.cache) == (False, True, False)
    assert on.accepted_signers == (C,) and off.accepted_signers == (B,)
    everywhere = compile_nodes(nodes, defaults=Defaults(cache=True)).nodes
    assert [n.cache for n in everywhere] == [True, True, False]


def test_attempts_go_to_the_offering_peers_in_order_and_cycle() -> None:
    offers = [Candidate(C, 5), Candidate(B, 9), Candidate(B, 3), Candidate(D, 1)]
    assert order(offers, (D, C, "e" * 40)) == [Candidate(D, 1), Candidate(C, 5)]
    anywhere = order(offers, ())
    assert anywhere == [Candidate(B, 3), Candidate(C, 5), Candidate(D, 1)]
    assert [pick(anywhere, n).peer_id for n in (1, 2, 3, 4)] == [B, C, D, B]
    node = compile_nodes([NodeSpec(1, "", None, config={"service_digest": DIGEST,
                                                        "placement": "any"})]).nodes[0]
    on_c = placed_on(node, Candidate(C, 5, "upper"))
    assert (on_c.peer_id, on_c.service_id, on_c.local, on_c.service_name) == (C, 5, False,
                                                                               "upper")
