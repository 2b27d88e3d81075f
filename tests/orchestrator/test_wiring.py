"""orchestrator.wiring: the rules the node's compiler and the Python client share."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.errors import InvalidInput
from orchestrator.wiring import (
    DATA_OUTPUT,
    Cycle,
    Interface,
    can_input,
    can_output,
    carries_text,
    fed_once_key,
    normalize_mount,
    output_key,
    topological_order,
)


def test_order_places_each_node_after_its_sources_ties_in_given_order() -> None:
    assert topological_order([4, 3, 2, 1], [(1, 2), (3, 2)]) == [4, 3, 1, 2]
    assert topological_order(["a", "b", "c", "d"], [("a", "d"), ("b", "c")]) == \
        ["a", "b", "c", "d"]
    assert topological_order(["x"], []) == ["x"]


def test_a_cycle_names_its_members_only() -> None:
    with pytest.raises(Cycle) as err:
        topological_order([1, 2, 3, 4], [(1, 2), (2, 3), (3, 2), (3, 4)])
    assert err.value.members == [2, 3]  # 4 is only downstream of the cycle


def test_which_kinds_feed_and_take() -> None:
    assert can_output("STDOUT") and can_output("LOGS") and not can_output("STDIN")
    assert can_input("ENV") and can_input("ARG") and not can_input("STDERR")
    # A MOUNT by its function; unknown (the client's case): either.
    assert can_output("MOUNT", "OUTPUT") and not can_output("MOUNT", "INPUT")
    assert can_input("MOUNT", "") and can_input("MOUNT", "BOTH")
    assert not can_input("MOUNT", "OUTPUT")
    assert can_output("MOUNT") and can_input("MOUNT")


def test_output_keys_and_text() -> None:
    assert output_key("STDOUT") == "STDOUT"
    assert output_key("MOUNT", "/out") == "MOUNT:/out"
    assert carries_text("STDOUT") and not carries_text("MOUNT:/out")
    assert not carries_text(DATA_OUTPUT)


def test_what_one_connection_at_most_may_feed() -> None:
    assert fed_once_key("STDIN", "ignored") == ("STDIN", "")
    assert fed_once_key("ENV", "A") == ("ENV", "A") != fed_once_key("ENV", "B")
    assert fed_once_key("ARG", "-i") is None
    assert fed_once_key("MOUNT", "/in") is None
    assert fed_once_key(None) is None


def test_mount_paths_compare_without_a_trailing_slash() -> None:
    assert normalize_mount(" /data/ ") == "/data"
    assert normalize_mount("/") == "/"


def test_one_interface_type_from_a_row_and_from_a_client() -> None:
    row = SimpleNamespace(id=7, service_id=3, interface_type="MOUNT", path="/out",
                          mount_function="OUTPUT", description="results")
    stored = Interface.from_row(row)
    assert (stored.id, stored.service_id, stored.is_output, stored.output_key) == (
        7, 3, True, "MOUNT:/out")
    given = Interface.parse({"interface_type": "mount", "path": "/in"})
    assert (given.mount_function, given.is_input, given.id) == ("INPUT", True, None)
    assert given.to_dict() == {"interface_type": "MOUNT", "path": "/in",
                               "mount_function": "INPUT", "description": ""}
    assert given.key == ("MOUNT", "/in")


@pytest.mark.parametrize(("raw", "message"), [
    ({"interface_type": "SOCKET"}, "Invalid interface_type 'SOCKET'"),
    ({"interface_type": "ENV"}, "A ENV interface needs a path"),
    ({"interface_type": "MOUNT", "path": "rel"}, "MOUNT path must be absolute"),
    ({"interface_type": "MOUNT", "path": "/x", "mount_function": "SIDEWAYS"},
     "Invalid mount_function 'SIDEWAYS'"),
])
def test_a_bad_interface_is_refused_naming_the_field(raw: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Interface.parse(raw)
