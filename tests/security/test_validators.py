"""Validators of what strangers send match the whole value."""

from __future__ import annotations


def test_validators_of_strangers_values_refuse_a_trailing_newline() -> None:
    """Python's ``$`` matches before a final newline: the validators anchor with ``\\Z``."""
    from network.bulk import valid_sha256
    from network.messages import _TYPE
    from orchestrator.service_policy import PEER_ID
    from orchestrator.services.uploads import SESSION_ID_RE, SHA256_RE

    sha = "ab" * 32
    assert valid_sha256(sha) == sha and valid_sha256(sha + "\n") is None
    for pattern, good in ((_TYPE, "ping"), (PEER_ID, "a" * 40), (SESSION_ID_RE, "s-1"),
                          (SHA256_RE, sha)):
        assert pattern.match(good) and not pattern.match(good + "\n")
