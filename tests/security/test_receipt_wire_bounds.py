"""What a stranger may put in the fields that carry receipts and cached results: bounded,
checked, refused by name (pure decoding, no sockets)."""

from __future__ import annotations

import pytest

from flows.job_protocol.wire import (
    WireError,
    key_from_wire,
    refs_from_json,
    request_from_wire,
    result_from_wire,
)

PEER = "a" * 40
DIGEST = "sha256:" + "12" * 32


def request(**extra: object) -> dict[str, object]:
    return {"job_id": "j1", "service_id": 1, "timeout": 10, **extra}


def test_previous_receipts_are_bounded_and_must_be_digests() -> None:
    assert request_from_wire(request(previous_receipts=[DIGEST]),
                             peer_id=PEER).previous_receipts == (DIGEST,)
    assert request_from_wire(request(), peer_id=PEER).previous_receipts == ()
    for bad in ([DIGEST] * 65, ["sha256:zz"], [DIGEST.upper()], DIGEST, [1], [DIGEST + "\n"]):
        with pytest.raises(WireError, match="previous_receipts"):
            request_from_wire(request(previous_receipts=bad), peer_id=PEER)


def test_a_receipt_that_is_not_an_object_is_no_receipt() -> None:
    base = {"outcome": "COMPLETED", "exit_code": 0, "outputs": {}}
    for junk in ("x" * 10, [1, 2], 7, None):
        assert result_from_wire({**base, "receipt": junk}, "j").receipt is None
    assert result_from_wire({**base, "receipt": {"payloadType": "x"}}, "j").receipt == {
        "payloadType": "x"}  # kept to be checked (and refused) by orchestrator.receipts


def test_job_keys_and_cached_outputs_from_strangers_are_checked() -> None:
    assert key_from_wire({"job_key": DIGEST}) == DIGEST
    for bad in ({}, {"job_key": "sha256:1"}, {"job_key": ["x"]}, "x", None):
        with pytest.raises(WireError):
            key_from_wire(bad)
    ref = {"sha256": "ab" * 32, "size": 3, "kind": "file", "peer_id": "someone-else"}
    # A provider's outputs are held by the provider, whatever its answer says.
    assert refs_from_json({"STDOUT": ref}, holder=PEER)["STDOUT"].peer_id == PEER
    with pytest.raises(WireError):
        refs_from_json({f"K{i}": ref for i in range(257)})
    for bad in ([ref], {"STDOUT": {**ref, "sha256": "../../etc"}}, {"STDOUT": {**ref,
                                                                                "size": -1}}):
        with pytest.raises(WireError):
            refs_from_json(bad)
