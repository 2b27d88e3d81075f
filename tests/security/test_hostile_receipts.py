"""A peer that lies in its receipt: the requester refuses the job, naming the peer, and fetches
none of its outputs. Two in-process peers over real QUIC on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from executors.base import JobOutcome, JobResult
from flows.reuse import Reuse
from network.identity import Identity
from orchestrator.execution_store import ExecutionStore
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.models import StandaloneDetails
from orchestrator.receipts import sign
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import Interface
from tests.support.job_peer import JobPeer
from tests.support.transports import Net, transports

on_session_loop = pytest.mark.asyncio(loop_scope="session")
OUTPUT = b"THE OUTPUT\n"


class Peer(JobPeer):
    def sh(self, script: str) -> int:
        view = self.registry.create(
            name="sh", service_type=ServiceType.STANDALONE,
            interfaces=[Interface(InterfaceType.STDIN), Interface(InterfaceType.STDOUT)],
            details=StandaloneDetails(service_id=0, executable_path="/bin/sh",
                                      arguments=["-c", script]))
        return int(view.service.id or 0)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer]]:
    net: Net
    async with transports(tmp_path) as net:
        made = []
        for name in ("a", "b"):
            peer = Peer(await net.add(name=name), tmp_path / f"node-{name}")
            await peer.start()
            made.append(peer)
        try:
            yield made[0], made[1]
        finally:
            for peer in made:
                await peer.stop()


def payload(envelope: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(envelope["payload"])))


def with_payload(envelope: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The same signature over another payload (a tampered receipt)."""
    return {**envelope, "payload": base64.b64encode(json.dumps(doc).encode()).decode()}


def lie(b: Peer, change: Callable[[JobResult], JobResult]) -> None:
    """B's dispatcher seals as before, then ``change`` rewrites what it answers."""
    honest = b.local.seal

    async def seal(request: JobRequest, result: JobResult) -> JobResult:
        return change(await honest(request, result))

    b.local.seal = seal  # type: ignore[method-assign]


def tampered_subject(result: JobResult) -> JobResult:
    assert result.receipt is not None
    doc = payload(result.receipt)
    doc["subject"][0]["digest"]["sha256"] = "ee" * 32
    return replace(result, receipt=with_payload(result.receipt, doc))


def signed_by_another(result: JobResult) -> JobResult:
    assert result.receipt is not None
    stranger = Identity.generate()
    doc = payload(result.receipt)
    doc["predicate"]["runDetails"]["builder"]["id"] = f"peer:{stranger.peer_id}"
    return replace(result, receipt=sign(doc, stranger))


def no_receipt(result: JobResult) -> JobResult:
    return replace(result, receipt=None)


def other_outputs(result: JobResult) -> JobResult:
    """An honest receipt, but the answer lists an output it does not cover."""
    extra = replace(result.outputs["STDOUT"], sha256="dd" * 32)
    return replace(result, outputs={**result.outputs, "MOUNT:/secret": extra})


@on_session_loop
@pytest.mark.timeout(120)
@pytest.mark.parametrize("change, why", [
    (tampered_subject, "no valid signature"),
    (signed_by_another, "not by the peer that ran the job"),
    (no_receipt, "no receipt"),
    (other_outputs, "outputs are not the job's outputs"),
])
async def test_a_receipt_that_does_not_check_fails_the_job_and_fetches_nothing(
        pair: tuple[Peer, Peer], change: Callable[[JobResult], JobResult], why: str) -> None:
    a, b = pair
    sid = b.sh("tr a-z A-Z")
    lie(b, change)
    data = a.store.put_bytes(b"the output\n")
    result = await a.remote.dispatch(JobRequest(
        "rn-e1-j1-a1", sid, b.transport.peer_id, (JobInput(None, "STDIN", artifact=data),),
        timeout=30.0))
    assert result.outcome is JobOutcome.FAILED
    assert result.error is not None and b.transport.peer_id in result.error
    assert "receipt refused" in result.error and why in result.error, result.error
    # B made the output; none of it came here.
    made = hashlib.sha256(OUTPUT).hexdigest()
    assert b.store.has(made) and not a.store.has(made)


@on_session_loop
@pytest.mark.timeout(120)
async def test_a_cached_result_is_taken_only_with_a_receipt_that_covers_it(
        pair: tuple[Peer, Peer]) -> None:
    """A provider's answer is checked like a job's: another peer's signature, or outputs its
    receipt does not name, and the asker takes nothing (the job runs instead)."""
    a, b = pair
    sid = b.sh("tr a-z A-Z")
    data = a.store.put_bytes(b"the output\n")
    request = JobRequest("rn-e1-j1-a1", sid, b.transport.peer_id,
                         (JobInput(None, "STDIN", artifact=data),), timeout=30.0)
    done = await a.remote.dispatch(replace(request, wired_outputs=("STDOUT", "STDERR",
                                                                   "LOGS")))
    assert done.outcome is JobOutcome.COMPLETED and done.receipt is not None
    key = await a.remote.job_key(request)
    assert key == done.job_key  # the dry run names the key the run had
    made = hashlib.sha256(OUTPUT).hexdigest()
    assert not a.store.has(made)  # kept on B (wired onward)
    answers: list[dict[str, Any] | None] = []

    class Source:
        async def providers(self, _key: str) -> list[str]:
            return [b.transport.peer_id]

        async def cached_result(self, peer: str, job_key: str) -> dict[str, Any] | None:
            answer = await a.remote.cached_result(peer, job_key)
            return answers.pop(0)(answer) if answers else answer  # type: ignore[operator]

    reuse = Reuse(ExecutionStore(a.db, a.bus, own_peer_id=a.transport.peer_id), a.store,
                  own_peer_id=a.transport.peer_id, fetch=a.remote.fetch, results=Source())
    # Not a peer accepted for it: not even asked.
    assert await reuse.lookup(key, ["c" * 40]) is None
    # Outputs the receipt does not cover, and a receipt by someone else.
    answers[:] = [lambda raw: {**raw, "outputs": {**raw["outputs"], "STDOUT": {
        **raw["outputs"]["STDOUT"], "sha256": "dd" * 32}}}]
    assert await reuse.lookup(key, [b.transport.peer_id]) is None
    stranger = Identity.generate()
    answers[:] = [lambda raw: {**raw, "receipt": sign(payload(raw["receipt"]), stranger)}]
    assert await reuse.lookup(key, [b.transport.peer_id]) is None
    assert not a.store.has(made)
    # The honest answer is taken, its outputs fetched by hash.
    found = await reuse.lookup(key, [b.transport.peer_id])
    assert found is not None and found.verified.digest.startswith("sha256:")
    assert a.store.has(made) and a.store.read_bytes(found.outputs["STDOUT"]) == OUTPUT
