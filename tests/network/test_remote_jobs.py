"""Remote jobs between peers in one process: real QUIC transports on 127.0.0.1, real databases,
real artifact stores and real standalone processes; a peer killed mid-job is a child process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from executors.base import ArtifactKind, ArtifactRef, JobOutcome, JobResult
from flows.job_protocol import (
    StateEvent,
    WireError,
    request_from_wire,
    request_to_wire,
    result_from_wire,
    result_to_wire,
)
from network.identity import Identity
from network.transport import PeerTransport, TransportConfig
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.models import DataDetails, JobExecution, StandaloneDetails
from orchestrator.services.data_crypto import encrypt_file
from orchestrator.states import InterfaceType, RunState, ServiceStatus, ServiceType
from orchestrator.wiring import Interface
from tests.support.job_peer import JobPeer
from tests.support.processes import sleeper, sleeping
from tests.support.transports import Net, transports

pytestmark = pytest.mark.timeout(120)
# Async fixtures run on the session loop (pyproject); the async tests must share it.
on_session_loop = pytest.mark.asyncio(loop_scope="session")


class Peer(JobPeer):
    """The parts of a node that remote jobs use, with a blacklist and the states seen."""

    def __init__(self, root: Path, transport: PeerTransport) -> None:
        self.blocked: set[str] = set()
        self.states: list[StateEvent] = []
        super().__init__(transport, root, is_blacklisted=self.blocked.__contains__,
                         dispatcher_options={
                             "liveness_interval": 0.5, "liveness_timeout": 0.5,
                             "liveness_misses": 2,
                             "on_state": lambda _r, d: self.states.append(d)})

    @property
    def peer_id(self) -> str:
        return self.transport.peer_id

    def sh(self, name: str, script: str, *, status: ServiceStatus = ServiceStatus.ACTIVE,
           extra: tuple[Interface, ...] = ()) -> int:
        view = self.registry.create(
            name=name, service_type=ServiceType.STANDALONE, status=status,
            interfaces=[Interface(InterfaceType.STDIN), Interface(InterfaceType.STDOUT),
                        *extra],
            details=StandaloneDetails(service_id=0, executable_path="/bin/sh",
                                      arguments=["-c", script]))
        return int(view.service.id or 0)

    def rows(self) -> list[JobExecution]:
        with self.db.session() as s:
            return list(s.exec(select(JobExecution)))


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    async with transports(tmp_path) as n:
        yield n


@pytest.fixture
async def peers(net: Net, tmp_path: Path) -> AsyncIterator[list[Peer]]:
    made = []
    for name in ("a", "b", "c"):
        t = await net.add(name=name)
        p = Peer(tmp_path / f"node-{name}", t)
        await p.executor.start()
        made.append(p)
    try:
        yield made
    finally:
        for p in made:
            await p.executor.shutdown(timeout=10)
            p.db.close()


def request(peer: Peer, service_id: int, *, job_id: str = "rn-e1-j1-a1",
            inputs: tuple[JobInput, ...] = (), **kw: Any) -> JobRequest:
    return JobRequest(job_id=job_id, service_id=service_id, peer_id=peer.peer_id,
                      inputs=inputs, timeout=kw.pop("timeout", 30.0), **kw)


def stdin(ref: ArtifactRef) -> JobInput:
    return JobInput(interface_id=None, interface_type="STDIN", artifact=ref)


# -- the wire form ------------------------------------------------------------------------------
def test_request_and_result_round_trip_through_the_wire_form() -> None:
    ref = ArtifactRef("ab" * 32, 5, ArtifactKind.TAR)
    req = JobRequest(job_id="j", service_id=3, peer_id="b" * 40, env={"K": "v"}, args=("x",),
                     inputs=(JobInput(7, None, artifact=ref), JobInput(None, "ENV", "NAME",
                                                                       text="t"),
                             JobInput(8, None, artifact=ref, transient=True)),
                     entrypoint=("/bin/sh",), cmd=None, timeout=12.0)
    back = request_from_wire(request_to_wire(req, "a" * 40), peer_id="b" * 40)
    assert back.inputs[0].artifact == ArtifactRef("ab" * 32, 5, ArtifactKind.TAR, "a" * 40)
    assert back.inputs[1] == JobInput(None, "ENV", "NAME", text="t")
    assert not back.inputs[0].transient and back.inputs[2].transient  # clear DATA, kept briefly
    assert (back.env, back.args, back.entrypoint, back.cmd, back.timeout) == (
        {"K": "v"}, ("x",), ("/bin/sh",), None, 12.0)

    import datetime as dt
    now = dt.datetime.now(dt.UTC)
    result = JobResult("j", JobOutcome.COMPLETED, 0, now, now, {"STDOUT": ref, "#4": ref})
    got = result_from_wire(result_to_wire(result, "c" * 40), "j")
    assert got.outputs["#4"].peer_id == "c" * 40 and got.outcome is JobOutcome.COMPLETED
    assert got.started_at == now
    keyed = replace(result, job_key="sha256:" + "12" * 32)
    assert result_from_wire(result_to_wire(keyed, "c" * 40), "j").job_key == keyed.job_key


@pytest.mark.parametrize("key", [
    None, 5, "", "sha256:" + "12" * 31, "sha256:" + "AB" * 32, "md5:" + "12" * 32,
    "sha256:" + "12" * 32 + "\n", ["sha256:" + "12" * 32], "x" * 100_000])
def test_a_job_key_that_is_not_one_is_dropped(key: object) -> None:
    """The executing peer's key is its word: anything not shaped as a key is not kept."""
    import datetime as dt
    now = dt.datetime.now(dt.UTC)
    wire = result_to_wire(JobResult("j", JobOutcome.COMPLETED, 0, now, now), "c" * 40)
    assert result_from_wire({**wire, "job_key": key}, "j").job_key == ""


@pytest.mark.parametrize("raw", [
    {"service_id": 1},
    {"job_id": "j", "service_id": "1"},
    {"job_id": "j", "service_id": 1, "inputs": [{"artifact": {"sha256": "zz", "size": 1}}]},
    {"job_id": "j", "service_id": 1, "env": {"A": 1}},
    {"job_id": "j", "service_id": 1, "timeout": -1},
])
def test_malformed_requests_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        request_from_wire(raw, peer_id="b")


def test_an_encrypted_data_input_never_goes_on_the_wire() -> None:
    req = JobRequest("j", 1, "b", inputs=(JobInput(None, "STDIN", artifact=ArtifactRef(
        "ab" * 32, 1), data_service_id=4),))
    with pytest.raises(WireError):
        request_to_wire(req, "a")


# -- across peers ---------------------------------------------------------------------------------
@on_session_loop
async def test_job_chain_across_three_peers_moves_outputs_peer_to_peer(
        peers: list[Peer]) -> None:
    a, b, c = peers
    upper = b.sh("upper", "tr a-z A-Z; echo working >&2")
    rev = c.sh("rev", "rev")
    data = a.store.put_bytes(b"hello peers\n")
    logs: list[tuple[str, str]] = []

    first = await a.remote.dispatch(
        request(b, upper, inputs=(stdin(data),), wired_outputs=("STDOUT",)),
        on_log=lambda _j, stream, line: logs.append((stream, line)))
    assert first.outcome is JobOutcome.COMPLETED, first.error
    out = first.outputs["STDOUT"]
    assert out.peer_id == b.peer_id  # wired onward: stays on B
    assert not a.store.has(out.sha256)
    assert first.outputs["STDERR"].peer_id == ""  # a result: fetched to A
    assert a.store.read_bytes(first.outputs["STDERR"]) == b"working\n"
    assert ("stderr", "working") in logs
    assert any(s.status is RunState.RUNNING for s in a.states)

    second = await a.remote.dispatch(request(c, rev, job_id="rn-e1-j2-a1",
                                             inputs=(stdin(out),)))
    assert second.outcome is JobOutcome.COMPLETED, second.error
    assert a.store.read_bytes(second.outputs["STDOUT"]) == b"SREEP OLLEH\n"
    assert c.store.has(out.sha256)  # C fetched B's output from B, not through A
    assert not a.store.has(out.sha256)

    for peer in (b, c):
        rows = peer.rows()
        assert [(r.requester_peer_id, r.status, r.peer_id) for r in rows] == [
            (a.peer_id, "COMPLETED", peer.peer_id)]
    # Each executing peer keys the job it ran and tells the requester the same key.
    assert b.rows()[0].job_key == first.job_key and first.job_key.startswith("sha256:")
    assert c.rows()[0].job_key == second.job_key != first.job_key
    # The same job again (same service, command and input) has the same key.
    again = await a.remote.dispatch(
        request(b, upper, job_id="rn-e1-j3-a1", inputs=(stdin(data),), wired_outputs=("STDOUT",)))
    assert again.job_key == first.job_key
    # B recorded the input it read and its outputs, not their "#<id>" aliases.
    recorded = b.records.job_interfaces(int(b.rows()[0].id or 0))
    assert [(r.direction, r.interface_type, r.artifact_hash) for r in recorded] == [
        ("input", "STDIN", data.sha256), ("output", "STDOUT", out.sha256),
        ("output", "STDERR", first.outputs["STDERR"].sha256),
        ("output", "LOGS", first.outputs["LOGS"].sha256)]


@on_session_loop
async def test_jobs_are_refused_with_a_reason(peers: list[Peer], net: Net) -> None:
    a, b, _ = peers
    missing = await a.remote.dispatch(request(b, 999))
    assert missing.outcome is JobOutcome.FAILED
    assert "service 999 does not exist" in str(missing.error) and b.peer_id in str(missing.error)

    off = b.sh("off", "cat", status=ServiceStatus.INACTIVE)
    inactive = await a.remote.dispatch(request(b, off))
    assert "is not ACTIVE" in str(inactive.error)

    ok = b.sh("ok", "cat")
    b.blocked.add(a.peer_id)  # the job handler refuses even where the transport let it in
    refused = await a.remote.dispatch(request(b, ok))
    assert refused.outcome is JobOutcome.FAILED and "blacklisted" in str(refused.error)
    b.blocked.clear()

    net.blacklist(b.transport, a.peer_id)  # the transport refuses the requester outright
    cut = await a.remote.dispatch(request(b, ok, job_id="rn-e1-j9-a1"))
    assert cut.outcome is JobOutcome.FAILED and b.peer_id in str(cut.error)
    assert b.rows() == []  # nothing was recorded, nothing ran


@on_session_loop
async def test_cancel_stops_the_process_on_the_executing_peer(peers: list[Peer],
                                                              tmp_path: Path) -> None:
    a, b, _ = peers
    # The job of another peer cannot write outside its job directory: it is found by its
    # command line instead.
    duration = sleeper()
    job = b.sh("sleeper", f"exec sleep {duration}")
    req = request(b, job)
    running = asyncio.ensure_future(a.remote.dispatch(req))
    pids: list[int] = []
    for _ in range(200):
        if pids := sleeping(duration):
            break
        await asyncio.sleep(0.05)
    assert len(pids) == 1, pids
    pid = pids[0]
    assert await a.remote.cancel(req) is True
    async with asyncio.timeout(20):
        result = await running
    assert result.outcome is JobOutcome.CANCELLED
    assert [r.status for r in b.rows()] == ["CANCELLED"]
    assert b.jobs.running == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert await a.remote.cancel(req) is False  # nothing left to cancel


@on_session_loop
async def test_data_services_feed_remote_jobs_decrypted_by_their_owner(
        peers: list[Peer], tmp_path: Path) -> None:
    a, b, _ = peers
    plain = b"secret rows\n"
    (tmp_path / "plain").write_bytes(plain)

    def data_service(peer: Peer, name: str, policy: dict[str, Any] | None = None) -> int:
        enc = tmp_path / f"{name}.enc"
        encrypt_file(tmp_path / "plain", enc, "pass-" + name)
        view = peer.registry.create(name=name, service_type=ServiceType.DATA, details=DataDetails(
            service_id=0, file_path=str(enc), passphrase="pass-" + name), policy=policy)
        return int(view.service.id or 0)

    # A's DATA into B's job: A decrypts it for that job; B never sees the encrypted file.
    a_data = data_service(a, "a-data")
    encrypted = await a.local.data_source(a_data)
    cat = b.sh("cat", "cat")
    result = await a.remote.dispatch(request(b, cat, inputs=(JobInput(
        None, "STDIN", artifact=encrypted, data_service_id=a_data),)))
    assert result.outcome is JobOutcome.COMPLETED, result.error
    assert a.store.read_bytes(result.outputs["STDOUT"]) == plain
    assert not b.store.has(encrypted.sha256)

    # B's DATA as a workflow node of A: private by default, so B refuses A...
    private = data_service(b, "b-private")
    refused = await a.remote.dispatch(request(b, private, job_id="rn-e1-j4-a1"))
    assert refused.outcome is JobOutcome.FAILED
    assert "access_denied" in (refused.error or "")
    # ...and where its owner admits A, B decrypts it and answers with the plain artifact.
    b_data = data_service(b, "b-data", {"access": "peers", "allowed_peers": [a.peer_id]})
    got = await a.remote.dispatch(request(b, b_data, job_id="rn-e1-j5-a1"))
    assert got.outcome is JobOutcome.COMPLETED, got.error
    assert a.store.read_bytes(got.outputs["DATA"]) == plain
    assert got.outputs["STDOUT"].sha256 == got.outputs["DATA"].sha256


# -- a peer that dies mid-job -------------------------------------------------------------------
def _serve_forever_job(tls_dir: str, ready: Any) -> None:
    """Child-process entry: a peer that accepts a job_run and never answers (it gets killed)."""

    async def main() -> None:
        t = PeerTransport(Identity.generate(), TransportConfig(
            host="127.0.0.1", port=0, tls_dir=Path(tls_dir)))

        async def run(req: Any) -> dict[str, Any]:
            await req.emit({"event": "state", "status": "RUNNING"})
            await asyncio.Event().wait()
            return {}

        t.register("job_run", run)
        await t.start()
        ready.put((t.peer_id, t.port))
        await asyncio.Event().wait()

    asyncio.run(main())


@on_session_loop
async def test_a_peer_killed_mid_job_fails_the_job_naming_it(peers: list[Peer], net: Net,
                                                             tmp_path: Path) -> None:
    a = peers[0]
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    child = ctx.Process(target=_serve_forever_job, args=(str(tmp_path / "dead"), ready),
                        daemon=True)
    child.start()
    try:
        peer_id, port = await asyncio.to_thread(ready.get, True, 60)
        net.addresses[peer_id] = [("127.0.0.1", port)]
        req = JobRequest("rn-e1-j1-a1", 1, peer_id, timeout=300.0)
        running = asyncio.ensure_future(a.remote.dispatch(req))
        for _ in range(200):
            if a.states:
                break
            await asyncio.sleep(0.05)
        assert a.states, "the job never started"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        async with asyncio.timeout(30):  # far below the job's 300 s timeout
            result = await running
        assert result.outcome is JobOutcome.FAILED
        assert peer_id in str(result.error) and "stopped answering" in str(result.error)
    finally:
        if child.is_alive():
            child.kill()
        child.join(10)
