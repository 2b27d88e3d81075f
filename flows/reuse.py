"""Taking a completed job's outputs instead of running the job again.

Two cases share this: a resumed execution takes the jobs of the execution it carries on from
that completed (``Reuse.from_job``), and a workflow node with ``cache`` takes a result of the
same job key (``Reuse.lookup``): this node's own records first, then the peers that published a
provider record for the key in the DHT. Either way the result is taken only with a receipt that
checks (signed by a peer the requester accepts, for exactly these outputs and this key) and
only when every output is still held: here, or on its holder, fetched by hash.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from executors.base import ArtifactRef
from flows.job_protocol.wire import WireError, refs_from_json
from network.peer_errors import PeerError
from orchestrator.execution_store import ExecutionStore
from orchestrator.models import JobExecution
from orchestrator.receipts import ReceiptError, Verified, check_claims, verify
from orchestrator.states import RunState

log = logging.getLogger("remote_network.reuse")

# Provider records read for one key, and receipts asked for, at most.
MAX_PROVIDERS = 8
Fetch = Callable[[ArtifactRef], Awaitable[ArtifactRef]]


class ResultSource(Protocol):
    """Where cached results of other peers are found: the DHT's provider records, and the
    providers themselves."""

    async def providers(self, job_key: str) -> list[str]: ...

    async def cached_result(self, peer_id: str, job_key: str) -> dict[str, Any] | None: ...


class CachedResults:
    """``ResultSource`` over the DHT's provider records and the job protocol's
    ``job_result``."""

    def __init__(self, dht: Any, dispatcher: Any) -> None:
        self.dht = dht
        self.dispatcher = dispatcher

    async def providers(self, job_key: str) -> list[str]:
        if self.dht.server is None:
            return []
        own = self.dispatcher.own_peer_id
        return [p for p in await self.dht.providers(job_key) if p != own]

    async def cached_result(self, peer_id: str, job_key: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.dispatcher.cached_result(peer_id, job_key)
        return result


@dataclass(frozen=True, slots=True)
class Found:
    """A result to take: its receipt (checked), its outputs (here now), where it came from."""

    receipt: dict[str, Any]
    verified: Verified
    outputs: dict[str, ArtifactRef]
    exit_code: int | None
    source: str  # "job 12 of execution 3", "peer <id>"

    @property
    def job_key(self) -> str:
        return self.verified.job_key


class Reuse:
    def __init__(self, store: ExecutionStore, artifacts: Any, *, own_peer_id: str,
                 fetch: Fetch | None = None, results: ResultSource | None = None) -> None:
        self.store = store
        self.artifacts = artifacts
        self.own_peer_id = own_peer_id
        self.fetch = fetch
        self.results = results

    def _signer(self, peer_id: str) -> str:
        return peer_id or self.own_peer_id

    async def from_job(self, job: JobExecution, *, accepted: Collection[str] | None = None,
                       probe: bool = False) -> Found | None:
        """The outputs of a completed job of ours, if its receipt checks (signed by the peer
        that ran it, or one of ``accepted``) and its outputs are still held."""
        if job.status != RunState.COMPLETED or job.receipt is None or job.output_refs is None:
            return None
        signers = set(accepted) if accepted is not None else {self._signer(job.peer_id)}
        try:
            outputs = refs_from_json(job.output_refs)
            verified = self._check(job.receipt, outputs, job.job_key, signers)
        except (WireError, ReceiptError) as exc:
            log.warning("job %s is not reused: %s", job.id, exc)
            return None
        held = await self._held(outputs, probe=probe)
        if held is None:
            return None
        where = (f"job {job.id} of execution {job.workflow_execution_id}"
                 if job.workflow_execution_id is not None else f"job {job.id}")
        return Found(job.receipt, verified, held, job.exit_code, where)

    async def lookup(self, job_key: str, accepted: Collection[str], *,
                     probe: bool = False) -> Found | None:
        """A result for ``job_key`` signed by one of ``accepted``: from this node's records,
        else from a peer whose provider record names the key. ``probe``: only whether there
        is one (nothing is fetched; outputs held elsewhere are taken at their holder's
        word)."""
        for job in self.store.completed_with_key(job_key):
            if self._signer(job.peer_id) not in accepted:
                continue
            found = await self.from_job(job, accepted=accepted, probe=probe)
            if found is not None:
                return found
        if self.results is None:
            return None
        try:
            providers = await self.results.providers(job_key)
        except Exception as exc:  # the DHT is an optimisation here, never a failure
            log.info("no provider lookup for %s: %s", job_key[:19], exc)
            return None
        for peer_id in [p for p in providers if p in accepted][:MAX_PROVIDERS]:
            found = await self._from_provider(peer_id, job_key, accepted, probe)
            if found is not None:
                return found
        return None

    async def _from_provider(self, peer_id: str, job_key: str, accepted: Collection[str],
                             probe: bool) -> Found | None:
        assert self.results is not None
        try:
            answer = await self.results.cached_result(peer_id, job_key)
        except PeerError as exc:
            log.info("provider %s of %s did not answer: %s", peer_id, job_key[:19], exc)
            return None
        if not answer or not isinstance(answer.get("receipt"), dict):
            return None
        try:
            outputs = refs_from_json(answer.get("outputs"), holder=peer_id)
            verified = self._check(answer["receipt"], outputs, job_key, {peer_id} & set(accepted))
        except (WireError, ReceiptError) as exc:
            log.warning("cached result of %s from peer %s refused: %s", job_key[:19], peer_id,
                        exc)
            return None
        held = await self._held(outputs, probe=probe)
        if held is None:
            return None
        exit_code = answer.get("exit_code")
        return Found(answer["receipt"], verified, held,
                     exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool)
                     else None, f"peer {peer_id}")

    @staticmethod
    def _check(receipt: object, outputs: Mapping[str, ArtifactRef], job_key: str,
               signers: Collection[str]) -> Verified:
        verified = verify(receipt)
        if verified.peer_id not in signers:
            raise ReceiptError(f"signed by peer {verified.peer_id}, not one accepted")
        check_claims(verified, outputs={k: r.sha256 for k, r in outputs.items()
                                        if not k.startswith("#")}, job_key=job_key)
        return verified

    async def _held(self, outputs: Mapping[str, ArtifactRef], *,
                    probe: bool = False) -> dict[str, ArtifactRef] | None:
        """The outputs, each here (fetched by hash from its holder when it was not; with
        ``probe``, left there), or None when one is gone."""
        here: dict[str, ArtifactRef] = {}
        out = {}
        for key, ref in outputs.items():
            if ref.sha256 not in here:
                local = await self._here(ref, probe)
                if local is None:
                    return None
                here[ref.sha256] = local
            out[key] = here[ref.sha256]
        return out

    async def _here(self, ref: ArtifactRef, probe: bool) -> ArtifactRef | None:
        local = replace(ref, peer_id="")
        if ref.peer_id in ("", self.own_peer_id):
            here = self.artifacts.has(ref.sha256) if probe else self.artifacts.keep(ref.sha256)
            return local if here else None
        if self.fetch is None:
            return None
        if probe:
            return ref
        try:
            return await self.fetch(ref)
        except PeerError as exc:
            log.info("output %s is no longer held by %s: %s", ref.sha256[:12], ref.peer_id, exc)
            return None
