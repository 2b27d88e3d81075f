"""A job as the workflow engine asks for it: one service on one peer, its inputs and options.

The same request travels to this node's executor (``flows.dispatch.LocalDispatcher``) and, in its
wire form, to another peer (``flows.job_protocol``); the executing peer's policy
(``orchestrator.peer_policy``) decides what of it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from executors.base import ArtifactRef


@dataclass(frozen=True, slots=True)
class JobInput:
    """One input of a job: an artifact (or text) for one interface of the executing service."""

    interface_id: int | None
    interface_type: str | None  # None: look it up by interface_id on the executing peer
    path: str = ""
    artifact: ArtifactRef | None = None
    text: str | None = None
    # Set when ``artifact`` is the encrypted file of this DATA service: the executing peer
    # decrypts it for the job and for nothing else.
    data_service_id: int | None = None
    # Set when ``artifact`` is the requester's DATA, decrypted for this job: the executing peer
    # names it in no record, so it keeps the bytes no longer than the job needs them.
    transient: bool = False


@dataclass(frozen=True, slots=True)
class JobRequest:
    job_id: str  # unique on the executing peer: names containers and process groups
    service_id: int
    peer_id: str
    inputs: tuple[JobInput, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    stdin_text: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    timeout: float = 300.0
    # Output keys wired onward to other jobs: a remote job keeps them on its peer (the downstream
    # peer fetches them from there); its other outputs are fetched back to the requester.
    wired_outputs: tuple[str, ...] = ()
    # Output keys delivered to the requesting node: fetched back even when wired onward too.
    delivered_outputs: tuple[str, ...] = ()
    # Digests ("sha256:<hex>") of the receipts of the upstream jobs whose outputs this one
    # reads: the executing peer names them in its receipt, which chains an execution's receipts.
    previous_receipts: tuple[str, ...] = ()
