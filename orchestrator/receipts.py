"""Signed receipts: what a peer claims to have run, in a form anyone can check offline.

A receipt is an in-toto Statement v1 in a DSSE envelope, signed with the Ed25519 key of the
peer that ran the job:

- ``subject``: the job's outputs, each named by its interface and its sha256;
- ``predicate`` (SLSA-provenance-style): ``buildDefinition.externalParameters`` holds the
  service's content digest, the command, the names of the environment variables (never their
  values) and the arguments; ``resolvedDependencies`` the inputs' digests and the receipts of
  the jobs whose outputs it read (the chain); ``runDetails.builder.id`` is ``peer:<peer id>``,
  ``metadata`` the job key and the start and end times, ``byproducts`` the exit code and the
  digests of the logs.
- ``signatures[].keyid`` is the signer's public key (hex), so a receipt names the key that
  checks it, and its peer id is that key's hash: the builder must be that peer.

Everything here is pure: building (``statement``), signing (``sign``), reading a stranger's
envelope within bounds (``verify``), and checking a chain (``verify_chain``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from executors.base import JobResult
from network.bulk import valid_sha256
from network.identity import Identity, peer_id_for
from network.identity import verify as verify_signature
from orchestrator.content_identity import JobIdentity

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:remote-network:job:v1"
# A job request's text is at most 1 MiB (its arguments are in the receipt), base64 in here.
MAX_ENVELOPE_BYTES = 2 * 1024 * 1024
MAX_SIGNATURES = 4


class ReceiptError(ValueError):
    """A receipt that is not one, or does not say what it must; the message says why."""


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What a receipt says of one job."""

    job_key: str
    service_digest: str
    outputs: Mapping[str, str]          # interface -> sha256 (hex)
    inputs: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] = ()
    env_names: Sequence[str] = ()
    args: Sequence[str] = ()
    exit_code: int | None = None
    logs: Mapping[str, str] = field(default_factory=dict)   # stream -> sha256
    started_at: str = ""
    ended_at: str = ""
    previous: Sequence[str] = ()        # digests of upstream receipts ("sha256:<hex>")


LOG_STREAMS = {"STDOUT": "stdout", "STDERR": "stderr"}


def job_facts(identity: JobIdentity, result: JobResult,
              previous: Sequence[str] = ()) -> JobFacts:
    """What the receipt of a completed job says: its resolved identity and how it ended."""
    outputs = {k: ref.sha256 for k, ref in result.outputs.items() if not k.startswith("#")}
    return JobFacts(
        job_key=identity.key, service_digest=identity.service, outputs=outputs,
        inputs=dict(identity.inputs), command=identity.command,
        env_names=sorted(identity.env), args=identity.args, exit_code=result.exit_code,
        logs={stream: outputs[k] for k, stream in LOG_STREAMS.items() if k in outputs},
        started_at=result.started_at.isoformat(), ended_at=result.ended_at.isoformat(),
        previous=tuple(previous))


def statement(facts: JobFacts, builder_peer_id: str) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha}}
                    for name, sha in sorted(facts.outputs.items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "service": facts.service_digest, "command": list(facts.command),
                    "environment": sorted(facts.env_names), "arguments": list(facts.args)},
                "resolvedDependencies": [
                    *({"name": name, "digest": {"sha256": sha}}
                      for name, sha in sorted(facts.inputs.items())),
                    *({"name": "receipt", "digest": {"sha256": d.removeprefix("sha256:")}}
                      for d in sorted(facts.previous))],
            },
            "runDetails": {
                "builder": {"id": f"peer:{builder_peer_id}"},
                "metadata": {"invocationId": facts.job_key, "startedOn": facts.started_at,
                             "finishedOn": facts.ended_at},
                "byproducts": [
                    {"name": "exit_code", "content": facts.exit_code},
                    *({"name": f"log:{stream}", "digest": {"sha256": sha}}
                      for stream, sha in sorted(facts.logs.items()))],
            },
        },
    }


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(doc: dict[str, Any], identity: Identity) -> dict[str, Any]:
    """The statement ``doc`` in a DSSE envelope signed by ``identity``."""
    payload = _canonical(doc)
    signature = identity.sign(pae(PAYLOAD_TYPE, payload))
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": identity.public_key_hex,
                            "sig": base64.b64encode(signature).decode()}]}


def digest(envelope: Mapping[str, Any]) -> str:
    """The receipt's own digest, as a later receipt of the chain names it."""
    return "sha256:" + hashlib.sha256(_canonical(dict(envelope))).hexdigest()


@dataclass(frozen=True, slots=True)
class Verified:
    """A receipt whose signature checked: who signed it, and what it says."""

    peer_id: str
    public_key: str
    statement: dict[str, Any]
    digest: str

    @property
    def subjects(self) -> dict[str, str]:
        return {s["name"]: s["digest"]["sha256"] for s in self.statement["subject"]}

    @property
    def job_key(self) -> str:
        return str(self.statement["predicate"]["runDetails"]["metadata"]["invocationId"])

    @property
    def previous(self) -> list[str]:
        deps = self.statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        return ["sha256:" + d["digest"]["sha256"] for d in deps if d.get("name") == "receipt"]


def verify(envelope: object, *, public_key: bytes | None = None) -> Verified:
    """Check a receipt, as a stranger may have sent anything: its shape and size, a signature
    by ``public_key`` (by the key it names, when None), and that its builder is that key's
    peer. ReceiptError says what is wrong."""
    if not isinstance(envelope, dict):
        raise ReceiptError("a receipt is a DSSE envelope (an object)")
    if len(_canonical(envelope)) > MAX_ENVELOPE_BYTES:
        raise ReceiptError(f"receipt is over {MAX_ENVELOPE_BYTES} bytes")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise ReceiptError(f"payloadType is not {PAYLOAD_TYPE}")
    try:
        payload = base64.b64decode(str(envelope.get("payload") or ""), validate=True)
    except (binascii.Error, ValueError):
        raise ReceiptError("payload is not base64") from None
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not 0 < len(signatures) <= MAX_SIGNATURES:
        raise ReceiptError(f"a receipt has 1 to {MAX_SIGNATURES} signatures")
    message = pae(PAYLOAD_TYPE, payload)
    signer = None
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        keyid = entry.get("keyid")
        if valid_sha256(keyid) is None:  # an Ed25519 key in hex: 64 lowercase hex digits
            continue
        key = bytes.fromhex(keyid)
        if public_key is not None and key != public_key:
            continue
        try:
            sig = base64.b64decode(str(entry.get("sig") or ""), validate=True)
        except (binascii.Error, ValueError):
            continue
        if verify_signature(key, message, sig):
            signer = key
            break
    if signer is None:
        raise ReceiptError("no valid signature by " + (
            f"peer {peer_id_for(public_key)}" if public_key is not None else "the key it names"))
    try:
        doc = json.loads(payload)
    except ValueError:
        raise ReceiptError("payload is not JSON") from None
    _check_statement(doc)
    peer_id = peer_id_for(signer)
    builder = doc["predicate"]["runDetails"]["builder"]["id"]
    if builder != f"peer:{peer_id}":
        raise ReceiptError(f"signed by peer {peer_id} but names builder {builder!r}")
    return Verified(peer_id, signer.hex(), doc, digest(envelope))


def _check_statement(doc: Any) -> None:
    try:
        ok = (doc["_type"] == STATEMENT_TYPE and doc["predicateType"] == PREDICATE_TYPE
              and isinstance(doc["subject"], list)
              and all(isinstance(s["name"], str) and valid_sha256(s["digest"]["sha256"])
                      for s in doc["subject"])
              and isinstance(doc["predicate"]["runDetails"]["builder"]["id"], str)
              and isinstance(doc["predicate"]["runDetails"]["metadata"]["invocationId"], str)
              and all(valid_sha256(d["digest"]["sha256"])
                      for d in doc["predicate"]["buildDefinition"]["resolvedDependencies"]))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise ReceiptError("payload is not a job statement")


def check_claims(receipt: Verified, *, outputs: Mapping[str, str], job_key: str) -> None:
    """The receipt covers exactly these outputs (interface -> sha256) of this job."""
    if receipt.subjects != dict(outputs):
        raise ReceiptError("the receipt's outputs are not the job's outputs")
    if job_key and receipt.job_key != job_key:
        raise ReceiptError("the receipt is for another job key")


def result_receipt(result: JobResult, peer_id: str) -> Verified:
    """The receipt of a completed ``result`` from ``peer_id``: signed by that peer, for
    exactly its outputs and its job key. ReceiptError says why not (none counts)."""
    if result.receipt is None:
        raise ReceiptError("no receipt")
    receipt = verify(result.receipt)
    if receipt.peer_id != peer_id:
        raise ReceiptError(f"signed by peer {receipt.peer_id}, not by the peer that ran the job")
    outputs = {k: ref.sha256 for k, ref in result.outputs.items() if not k.startswith("#")}
    check_claims(receipt, outputs=outputs, job_key=result.job_key)
    return receipt


def verify_chain(envelopes: Iterable[object], *,
                 keys: Mapping[str, bytes] | None = None) -> list[Verified]:
    """Check receipts given in execution order: each signed (by ``keys[peer id]`` where given),
    and each previous receipt it names is one earlier in the list."""
    seen: set[str] = set()
    out = []
    for i, envelope in enumerate(envelopes):
        receipt = verify(envelope)
        if keys is not None:
            expected = keys.get(receipt.peer_id)
            if expected is None or expected.hex() != receipt.public_key:
                raise ReceiptError(f"receipt {i} is signed by peer {receipt.peer_id}, "
                                   "whose key was not given")
        missing = [d for d in receipt.previous if d not in seen]
        if missing:
            raise ReceiptError(f"receipt {i} names a previous receipt not before it: "
                               f"{missing[0]}")
        seen.add(receipt.digest)
        out.append(receipt)
    return out
