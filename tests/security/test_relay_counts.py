"""A relay's keepalive answer is a stranger's word: its byte counts are taken only as whole
numbers in range, and shown, never trusted for anything else."""

from __future__ import annotations

import pytest

from orchestrator.relay import relay_byte_count


@pytest.mark.parametrize(("answer", "expected"), [
    ({"ingress_bytes": 1234}, 1234),
    ({"ingress_bytes": 0}, 0),
    ({"ingress_bytes": 2**63 - 1}, 2**63 - 1),
    ({"ingress_bytes": 2**63}, 0),
    ({"ingress_bytes": -5}, 0),
    ({"ingress_bytes": 1.5}, 0),
    ({"ingress_bytes": True}, 0),
    ({"ingress_bytes": "99"}, 0),
    ({"ingress_bytes": [1]}, 0),
    ({}, 0),
    ("not a dict", 0),
    (None, 0),
])
def test_only_whole_counts_in_range_are_taken(answer: object, expected: int) -> None:
    assert relay_byte_count(answer, "ingress_bytes") == expected
