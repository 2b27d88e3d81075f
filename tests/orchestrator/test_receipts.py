"""Receipts: signed by the peer that ran the job, checked here and by an independent DSSE
verifier (securesystemslib), and refused when tampered with, signed by another key, or chained
out of order."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from network.identity import Identity
from orchestrator.receipts import (
    PAYLOAD_TYPE,
    JobFacts,
    ReceiptError,
    check_claims,
    digest,
    sign,
    statement,
    verify,
    verify_chain,
)

OUT, IN = "ab" * 32, "cd" * 32


def facts(**over: Any) -> JobFacts:
    base: dict[str, Any] = {
        "job_key": "sha256:" + "11" * 32, "service_digest": "sha256:" + "22" * 32,
        "outputs": {"STDOUT": OUT}, "inputs": {"STDIN": IN}, "command": ["tr", "a-z", "A-Z"],
        "env_names": ["SECRET_TOKEN"], "args": ["-v"], "exit_code": 0,
        "logs": {"stderr": "33" * 32}, "started_at": "2026-12-03T10:00:00+00:00",
        "ended_at": "2026-12-03T10:00:01+00:00"}
    base.update(over)
    return JobFacts(**base)


def receipt(identity: Identity, **over: Any) -> dict[str, Any]:
    return sign(statement(facts(**over), identity.peer_id), identity)


def payload_of(envelope: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return doc


def test_a_receipt_says_what_ran_and_checks() -> None:
    peer = Identity.generate()
    envelope = receipt(peer)
    got = verify(envelope, public_key=peer.public_key)
    assert got.peer_id == peer.peer_id and got.subjects == {"STDOUT": OUT}
    assert got.job_key == "sha256:" + "11" * 32
    check_claims(got, outputs={"STDOUT": OUT}, job_key=got.job_key)
    doc = payload_of(envelope)
    params = doc["predicate"]["buildDefinition"]["externalParameters"]
    assert params == {"service": "sha256:" + "22" * 32, "command": ["tr", "a-z", "A-Z"],
                      "environment": ["SECRET_TOKEN"], "arguments": ["-v"]}
    assert doc["predicate"]["runDetails"]["builder"]["id"] == f"peer:{peer.peer_id}"
    # Offline, with only the key the receipt names.
    assert verify(envelope).peer_id == peer.peer_id


def test_an_independent_dsse_verifier_accepts_it() -> None:
    peer = Identity.generate()
    envelope = receipt(peer)
    key = SSlibKey(envelope["signatures"][0]["keyid"], "ed25519", "ed25519",
                   {"public": peer.public_key_hex})
    parsed = Envelope.from_dict(copy.deepcopy(envelope))
    assert parsed.payload_type == PAYLOAD_TYPE
    assert key.keyid in parsed.verify([key], 1)
    # And refuses the same tampering ours refuses.
    bad = copy.deepcopy(envelope)
    doc = payload_of(bad)
    doc["subject"][0]["digest"]["sha256"] = "ee" * 32
    bad["payload"] = base64.b64encode(json.dumps(doc).encode()).decode()
    with pytest.raises(Exception):  # noqa: B017 - the library's own error type
        Envelope.from_dict(bad).verify([key], 1)


def test_a_tampered_output_digest_is_refused() -> None:
    peer = Identity.generate()
    envelope = receipt(peer)
    doc = payload_of(envelope)
    doc["subject"][0]["digest"]["sha256"] = "ee" * 32
    envelope["payload"] = base64.b64encode(json.dumps(doc).encode()).decode()
    with pytest.raises(ReceiptError, match="no valid signature"):
        verify(envelope, public_key=peer.public_key)
    # A genuine receipt for other outputs does not cover these.
    other = verify(receipt(peer, outputs={"STDOUT": "ee" * 32}))
    with pytest.raises(ReceiptError, match="outputs"):
        check_claims(other, outputs={"STDOUT": OUT}, job_key="")


def test_a_receipt_signed_by_another_key_is_refused() -> None:
    peer, impostor = Identity.generate(), Identity.generate()
    forged = receipt(impostor)
    with pytest.raises(ReceiptError, match=f"peer {peer.peer_id}"):
        verify(forged, public_key=peer.public_key)
    # Signed by the impostor but naming the peer as its builder: the key decides who built it.
    doc = statement(facts(), peer.peer_id)
    with pytest.raises(ReceiptError, match="names builder"):
        verify(sign(doc, impostor))


@pytest.mark.parametrize("envelope", [
    None, [], "x", {}, {"payloadType": "text/plain", "payload": "", "signatures": []},
    {"payloadType": PAYLOAD_TYPE, "payload": "!!!", "signatures": [{"keyid": "a", "sig": ""}]},
    {"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": []},
    {"payloadType": PAYLOAD_TYPE, "payload": "e30=", "signatures": ["x"] * 50},
    {"payloadType": PAYLOAD_TYPE, "payload": "A" * 400_000, "signatures": [{}]},
])
def test_what_is_not_a_receipt_is_refused_by_name(envelope: object) -> None:
    with pytest.raises(ReceiptError):
        verify(envelope)


def test_a_signed_payload_that_is_no_job_statement_is_refused() -> None:
    peer = Identity.generate()
    with pytest.raises(ReceiptError, match="not a job statement"):
        verify(sign({"_type": "something else"}, peer))


def test_a_chain_names_only_receipts_before_it() -> None:
    a, b = Identity.generate(), Identity.generate()
    first = receipt(a)
    second = receipt(b, previous=[digest(first)])
    chain = verify_chain([first, second], keys={a.peer_id: a.public_key,
                                                 b.peer_id: b.public_key})
    assert [r.peer_id for r in chain] == [a.peer_id, b.peer_id]
    assert chain[1].previous == [digest(first)]
    with pytest.raises(ReceiptError, match="not before it"):
        verify_chain([second, first])
    with pytest.raises(ReceiptError, match="whose key was not given"):
        verify_chain([first, second], keys={a.peer_id: a.public_key})


def test_remote_network_verify_checks_files_offline(tmp_path: Path) -> None:
    a, b = Identity.generate(), Identity.generate()
    first = receipt(a)
    second = receipt(b, previous=[digest(first)])

    def run(doc: object, *extra: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "receipts.json"
        path.write_text(json.dumps(doc))
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", "verify", str(path),
                               *extra], capture_output=True, text=True, timeout=60)

    ok = run({"receipts": [{"receipt": first}, {"receipt": second}]})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok 0: peer {a.peer_id}" in ok.stdout and f"ok 1: peer {b.peer_id}" in ok.stdout
    assert run(first, "--key", a.public_key_hex).returncode == 0
    wrong_key = run(first, "--key", b.public_key_hex)
    assert wrong_key.returncode == 1 and "whose key was not given" in wrong_key.stdout
    tampered = copy.deepcopy(first)
    tampered["payload"] = base64.b64encode(b'{"_type": "x"}').decode()
    refused = run([tampered])
    assert refused.returncode == 1 and refused.stdout.startswith("refused: no valid signature")
    assert run([second, first]).returncode == 1
