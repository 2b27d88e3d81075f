"""The one seam between the workflow engine and whatever runs a job.

A ``JobRequest`` names a service *on the executing peer* and carries the job's inputs as artifact
references (or text), addressed by that peer's interface ids. ``LocalDispatcher`` runs it on this
node's executor; the network adds a ``RemoteDispatcher`` sibling that sends the same request to the
peer that owns the service. Both answer with an ``executors.base.JobResult`` whose ``outputs`` hold
the executor's keys ("STDOUT", "STDERR", "LOGS", "MOUNT:<path>") and, for each output interface of
the service, the alias ``"#<interface id>"`` (so a requester that does not know a remote service's
interfaces can still find an output by the id its connection names).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from executors.base import (
    ArtifactRef,
    DockerTarget,
    Executor,
    JobOutcome,
    JobResult,
    JobSpec,
    LogSink,
    MountInput,
    StandaloneTarget,
)
from network.identity import Identity
from orchestrator.content_identity import JobIdentity, job_identity
from orchestrator.errors import InvalidInput, NotFound, OperationFailed
from orchestrator.job_request import JobRequest
from orchestrator.peer_policy import PeerPolicy, Refused, Terms
from orchestrator.receipts import job_facts, sign, statement
from orchestrator.registry import ServiceRegistry, ServiceView
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import Interface


class DispatchError(Exception):
    """The job could not be handed to anything that runs it (one line, safe to show)."""


class JobDispatcher(Protocol):
    async def dispatch(self, request: JobRequest, *,
                       on_log: LogSink | None = None) -> JobResult: ...

    async def cancel(self, request: JobRequest) -> bool: ...

    async def data_source(self, service_id: int) -> ArtifactRef: ...

    async def job_key(self, request: JobRequest) -> str:
        """The key of the job, as the peer that would run it resolves it; nothing runs."""
        ...


def interface_info(view: ServiceView) -> list[Interface]:
    """The service's interfaces, as the wiring rules see them."""
    return [Interface.from_row(i) for i in view.interfaces]


def _words(value: str) -> list[str] | None:
    return shlex.split(value) if value.strip() else None


class LocalDispatcher:
    """Runs jobs of this node's services on this node's executor.

    A job comes with its ``Terms`` (limits, isolation, readable paths) when another peer asked
    for it (``PeerPolicy.admit``); without, it is a job of this node's own workflow and gets
    ``PeerPolicy.own_terms``. Every result carries the job's key; a completed one, a receipt
    signed by ``signer`` (this node's identity).
    """

    def __init__(self, registry: ServiceRegistry, executor: Executor | None, artifacts: Any,
                 *, scratch_dir: Path, policy: PeerPolicy | None = None,
                 signer: Identity | None = None,
                 on_sealed: Callable[[str], None] | None = None) -> None:
        self.registry = registry
        self.executor = executor
        self.artifacts = artifacts
        self.scratch_dir = scratch_dir
        self.policy = policy or PeerPolicy()
        self.signer = signer
        # Told the key of each job this node signed a receipt of (its provider record).
        self.on_sealed = on_sealed

    def _view(self, service_id: int) -> ServiceView:
        try:
            return self.registry.snapshot(service_id)
        except NotFound:
            raise DispatchError(f"service {service_id} does not exist on this node") from None

    def _clear_digest(self, service_id: int) -> str:
        view = self._view(service_id)
        return view.data.file_hash if view.data is not None else ""

    async def identity_of(self, request: JobRequest) -> JobIdentity:
        """What decides the outputs of ``request`` (its key: ``.key``), without running it."""
        view = self._view(request.service_id)
        return await asyncio.to_thread(job_identity, view, request,
                                       clear_digest=self._clear_digest)

    async def job_key(self, request: JobRequest) -> str:
        return (await self.identity_of(request)).key

    async def seal(self, request: JobRequest, result: JobResult) -> JobResult:
        """``result`` with the job's key and, when it completed, this node's receipt."""
        identity = await self.identity_of(request)
        receipt = None
        if result.outcome is JobOutcome.COMPLETED and self.signer is not None:
            facts = job_facts(identity, result, request.previous_receipts)
            receipt = sign(statement(facts, self.signer.peer_id), self.signer)
            if self.on_sealed is not None:
                self.on_sealed(identity.key)
        return replace(result, job_key=identity.key, receipt=receipt)

    async def data_source(self, service_id: int) -> ArtifactRef:
        """The encrypted file of a DATA service, as an artifact (still encrypted)."""
        view = self._view(service_id)
        if view.data is None or not view.data.file_path:
            raise DispatchError(f"DATA service {service_id} has no file")
        path = Path(view.data.file_path)
        if not path.is_file():
            raise DispatchError(f"the file of DATA service '{view.service.name}' is missing")
        ref: ArtifactRef = await asyncio.to_thread(self.artifacts.put_file, path)
        return ref

    async def _decrypted(self, data_service_id: int, ref: ArtifactRef, *,
                         ephemeral: bool = False) -> ArtifactRef:
        from orchestrator.services.data_crypto import decrypt_file

        view = self._view(data_service_id)
        if view.data is None:
            raise DispatchError(f"service {data_service_id} is not a DATA service")
        passphrase = view.data.passphrase
        self.scratch_dir.mkdir(parents=True, exist_ok=True)

        def work() -> ArtifactRef:
            with tempfile.TemporaryDirectory(dir=self.scratch_dir) as tmp:
                plain = Path(tmp) / "data"
                try:
                    decrypt_file(self.artifacts.path(ref.sha256), plain, passphrase)
                except Exception:
                    raise DispatchError(f"cannot decrypt the file of DATA service "
                                        f"'{view.service.name}'") from None
                out: ArtifactRef = self.artifacts.put_file(plain, ephemeral=ephemeral)
                return out

        return await asyncio.to_thread(work)

    async def decrypt_data(self, data_service_id: int, ref: ArtifactRef, *,
                           ephemeral: bool = False) -> ArtifactRef:
        """The plain bytes of this node's DATA service file ``ref``, as an artifact: one that
        stays (a DATA job's output), or, ``ephemeral``, one for ``release`` once used."""
        return await self._decrypted(data_service_id, ref, ephemeral=ephemeral)

    async def build_spec(self, request: JobRequest, clear: list[str],
                         terms: Terms | None = None) -> tuple[JobSpec, ServiceView]:
        """The executor's spec of a job. DATA inputs are decrypted into the store for the job
        alone: their digests are added to ``clear``, for ``release`` once the job has ended."""
        view = self._view(request.service_id)
        svc = view.service
        if terms is None:
            try:
                terms = self.policy.own_terms(view, request)
            except Refused as exc:
                raise DispatchError(str(exc)) from None
        kind = ServiceType(svc.service_type)
        if kind is ServiceType.DOCKER and view.docker is not None:
            d = view.docker
            image = f"{d.image_name}:{d.image_tag}" if d.image_name else d.image_id
            target: DockerTarget | StandaloneTarget = DockerTarget(
                image=image,
                entrypoint=list(request.entrypoint) if request.entrypoint else _words(
                    d.entrypoint),
                cmd=list(request.cmd) if request.cmd else _words(d.cmd))
        elif kind is ServiceType.STANDALONE and view.standalone is not None:
            s = view.standalone
            executable = s.executable_path
            arguments = list(s.arguments or [])
            if request.entrypoint:
                executable, *arguments = request.entrypoint
            if request.cmd:
                arguments = list(request.cmd)
            target = StandaloneTarget(executable=executable, arguments=arguments,
                                      working_directory=s.working_directory or "",
                                      environment=dict(s.environment_variables or {}),
                                      run_as_user=s.run_as_user or "")
        else:
            raise DispatchError(f"service '{svc.name}' ({svc.service_type}) cannot run as a job")

        ifaces = {i.id: i for i in interface_info(view)}
        env = dict(request.env)
        args = list(request.args)
        stdin: ArtifactRef | bytes | None = (request.stdin_text.encode()
                                            if request.stdin_text is not None else None)
        mounts: list[MountInput] = []
        for inp in request.inputs:
            kind_, path = inp.interface_type, inp.path
            if kind_ is None:
                iface = ifaces.get(inp.interface_id or -1)
                if iface is None or not iface.is_input:
                    raise InvalidInput(f"interface {inp.interface_id} is not an input of "
                                       f"service '{svc.name}'")
                kind_, path = iface.interface_type, iface.path
            artifact = inp.artifact
            if artifact is not None and inp.data_service_id is not None:
                artifact = await self._decrypted(inp.data_service_id, artifact, ephemeral=True)
                clear.append(artifact.sha256)
            if kind_ in (InterfaceType.ENV, InterfaceType.ARG):
                text = inp.text
                if text is None and artifact is not None:
                    data = await asyncio.to_thread(self.artifacts.read_bytes, artifact)
                    text = data.decode(errors="replace")
                text = (text or "").rstrip("\n")
                if kind_ == InterfaceType.ENV:
                    env[path] = text
                else:
                    args.extend([path, text] if path.startswith("-") else [text])
            elif kind_ == InterfaceType.STDIN:
                stdin = artifact if artifact is not None else (inp.text or "").encode()
            elif kind_ == InterfaceType.MOUNT:
                if artifact is None:
                    artifact = await asyncio.to_thread(self.artifacts.put_bytes,
                                                       (inp.text or "").encode())
                mounts.append(MountInput(path, artifact))
        output_mounts = [i.path for i in ifaces.values()
                         if i.interface_type == InterfaceType.MOUNT and i.is_output]
        spec = JobSpec(job_id=request.job_id, target=target, env=env, args=args, stdin=stdin,
                       input_mounts=mounts, output_mounts=output_mounts,
                       timeout=request.timeout, limits=terms.limits,
                       isolation=terms.isolation, readable_paths=terms.readable_paths)
        return spec, view

    async def dispatch(self, request: JobRequest, *, on_log: LogSink | None = None,
                       terms: Terms | None = None) -> JobResult:
        """Run the job; ``terms``: those ``PeerPolicy.admit`` gave another peer's job."""
        if self.executor is None or self.artifacts is None:
            raise DispatchError("no executor on this node")
        clear: list[str] = []
        try:
            try:
                spec, view = await self.build_spec(request, clear, terms)
            except InvalidInput as exc:
                raise DispatchError(exc.message) from None
            except OperationFailed as exc:
                raise DispatchError(exc.message) from None
            result = await self.executor.run(spec, on_log=on_log)
        finally:
            for digest in clear:  # the clear bytes of DATA inputs: not kept past the job
                self.artifacts.release(digest)
        aliases = {f"#{i.id}": result.outputs[i.output_key] for i in interface_info(view)
                   if i.is_output and i.output_key in result.outputs}
        return await self.seal(request, replace(result, outputs={**result.outputs, **aliases}))

    async def cancel(self, request: JobRequest) -> bool:
        if self.executor is None:
            return False
        with contextlib.suppress(Exception):
            return await self.executor.cancel(request.job_id)
        return False
