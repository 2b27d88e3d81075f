"""A hostile peer against a real node: it may run a service only as its owner defined it, only
where the service's access admits it, and within the node's bounds.

The stranger is a fresh Ed25519 key on a transport of its own (as anyone could make); the owner
creates the services through the node's real HTTPS API. Each test shows the attack doing no
harm (no marker file, no variable set, no clear byte received, the API still answering), not
only that an error came back.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from network.identity import Identity
from network.peer_errors import PeerError
from network.transport import PeerTransport, TransportConfig
from tests.support.node_process import ApiClient, NodeProcess
from tests.support.upload_client import UploadSocket
from tests.support.workflows import interface_ids

pytestmark = [pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="session")]


class Owner:
    def __init__(self, node: NodeProcess, client: ApiClient, peer_id: str) -> None:
        self.node, self.client, self.peer_id = node, client, peer_id

    def standalone(self, name: str, executable: str, arguments: list[str],
                   interfaces: list[dict[str, str]], **policy: Any) -> tuple[int, dict[str, int]]:
        r = self.client.post("/api/services/standalone/from-local", json={
            "service_name": name, "executable_path": executable, "arguments": arguments,
            "custom_interfaces": interfaces, **policy})
        assert r.status_code in (200, 201), r.text
        sid = int(r.json()["service"]["id"])
        return sid, interface_ids(self.client, sid)


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    """One node, with at most one job of a peer at once and no queue."""
    node = NodeProcess(tmp_path_factory.mktemp("policy-node"), env={
        "RN_PREFECT_WARMUP": "false"}, extra_args=[
        "--remote-jobs-per-peer", "1", "--remote-jobs-queue", "0"])
    node.start()
    client = node.client()
    try:
        yield Owner(node, client, client.get("/api/node/status").json()["peer_id"])
    finally:
        client.close()
        node.stop()


@pytest.fixture
async def stranger(owner: Owner, tmp_path: Path) -> AsyncIterator[PeerTransport]:
    address = [("127.0.0.1", owner.node.quic_port)]
    t = PeerTransport(Identity.generate(), TransportConfig(
        host="127.0.0.1", port=0, tls_dir=tmp_path / "stranger-tls", request_timeout=30,
        connect_timeout=5, handshake_timeout=5),
        resolver=lambda p: address if p == owner.peer_id else [],
        is_blacklisted=lambda _p: False)
    await t.start()
    try:
        yield t
    finally:
        await t.stop()


async def job_run(t: PeerTransport, owner: Owner, service_id: int, *,
                  job_id: str = "attack", on_event: Any = None,
                  **fields: Any) -> dict[str, Any]:
    data = {"job_id": job_id, "service_id": service_id, "inputs": [], "env": {}, "args": [],
            "stdin_text": None, "entrypoint": None, "cmd": None, "timeout": 30.0, **fields}
    answer: dict[str, Any] = await t.request(owner.peer_id, "job_run", data, timeout=60,
                                             on_event=on_event)
    return answer


async def refused(t: PeerTransport, owner: Owner, service_id: int, code: str,
                  **fields: Any) -> str:
    with pytest.raises(PeerError) as err:
        await job_run(t, owner, service_id, **fields)
    assert f"{code}:" in str(err.value), str(err.value)
    return str(err.value)


async def stdout_of(t: PeerTransport, owner: Owner, answer: dict[str, Any],
                    dest: Path) -> bytes:
    assert answer["outcome"] == "COMPLETED", answer
    ref = answer["outputs"]["STDOUT"]
    await t.fetch_bulk(owner.peer_id, ref["sha256"], dest, prefer_tcp=False)
    return dest.read_bytes()


def still_serving(owner: Owner) -> None:
    assert owner.client.get("/api/services").status_code == 200


# -- the command is the owner's ----------------------------------------------------------------
async def test_a_stranger_cannot_choose_the_executable(owner: Owner, stranger: PeerTransport,
                                                       tmp_path: Path) -> None:
    marker = tmp_path / "entrypoint-marker"
    sid, _ = owner.standalone("cat-entry", "/bin/cat", [], [{"interface_type": "STDIN"},
                                                            {"interface_type": "STDOUT"}])
    await refused(stranger, owner, sid, "entrypoint_not_allowed",
                  entrypoint=["/bin/sh", "-c", f"touch {marker}"])
    await asyncio.sleep(0.5)
    assert not marker.exists()
    # The service still runs as its owner defined it.
    answer = await job_run(stranger, owner, sid, job_id="honest", stdin_text="as defined\n")
    assert await stdout_of(stranger, owner, answer, tmp_path / "out") == b"as defined\n"
    still_serving(owner)


async def test_arguments_only_where_the_owner_allowed_them(
        owner: Owner, stranger: PeerTransport, tmp_path: Path) -> None:
    marker = tmp_path / "cmd-marker"
    sid, _ = owner.standalone("sh-fixed", "/bin/sh", ["-c", "cat"],
                              [{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}])
    await refused(stranger, owner, sid, "command_not_allowed",
                  cmd=["-c", f"touch {marker}"])
    await refused(stranger, owner, sid, "command_not_allowed", args=[f"-c touch {marker}"])
    await asyncio.sleep(0.5)
    assert not marker.exists()
    echo, _ = owner.standalone("echo-args", "/bin/echo", [], [{"interface_type": "STDOUT"}],
                               allow_args=True)
    answer = await job_run(stranger, owner, echo, job_id="args", cmd=["chosen", "words"])
    assert await stdout_of(stranger, owner, answer, tmp_path / "out") == b"chosen words\n"


async def test_inputs_reach_the_job_only_by_declared_interfaces(
        owner: Owner, stranger: PeerTransport, tmp_path: Path) -> None:
    outside = tmp_path / "mounted-outside"
    sid, ids = owner.standalone("env-dump", "/usr/bin/env", [], [
        {"interface_type": "STDIN"}, {"interface_type": "STDOUT"},
        {"interface_type": "ENV", "path": "GREETING"}])
    for inp in ({"interface_id": None, "interface_type": "ENV", "path": "LD_PRELOAD",
                 "text": "/tmp/evil.so"},
                {"interface_id": ids["GREETING"], "interface_type": "ENV", "path": "PATH",
                 "text": "/tmp/evil"},
                {"interface_id": None, "interface_type": "MOUNT", "path": str(outside),
                 "text": "planted"}):
        await refused(stranger, owner, sid, "unknown_interface", inputs=[inp])
    for name in ("LD_PRELOAD", "PATH", "UNDECLARED"):
        await refused(stranger, owner, sid, "env_not_allowed", env={name: "/tmp/evil"})
    assert not outside.exists()
    # By its id, the declared ENV gets the stranger's value, under the service's name only.
    answer = await job_run(stranger, owner, sid, job_id="env", inputs=[
        {"interface_id": ids["GREETING"], "interface_type": None, "path": "", "text": "hi"}])
    env = (await stdout_of(stranger, owner, answer, tmp_path / "env")).decode()
    assert "GREETING=hi" in env.splitlines()
    assert "LD_PRELOAD" not in env and "/tmp/evil" not in env
    # Named by type alone, an input is the service's one input of that type, under the
    # service's name: a type it lacks, or a type with a path of the stranger's, is refused.
    for inp in ({"interface_id": None, "interface_type": "MOUNT", "path": "", "text": "x"},
                {"interface_id": None, "interface_type": "ARG", "path": "", "text": "x"},
                {"interface_id": None, "interface_type": "ENV", "path": "LD_PRELOAD",
                 "text": "/tmp/evil.so"},
                {"interface_id": None, "interface_type": "STDOUT", "path": "", "text": "x"}):
        await refused(stranger, owner, sid, "unknown_interface", inputs=[inp])
    answer = await job_run(stranger, owner, sid, job_id="env-by-type", inputs=[
        {"interface_id": None, "interface_type": "ENV", "path": "", "text": "typed"}])
    env = (await stdout_of(stranger, owner, answer, tmp_path / "env-typed")).decode()
    assert "GREETING=typed" in env.splitlines() and "/tmp/evil" not in env
    still_serving(owner)


# -- who may use a service --------------------------------------------------------------------
async def search(t: PeerTransport, owner: Owner) -> set[str]:
    answer = await t.request(owner.peer_id, "service_search", {"query": ""}, timeout=30)
    return {s["name"] for s in answer["services"]}


async def test_private_and_peers_only_services_refuse_and_hide_from_a_stranger(
        owner: Owner, stranger: PeerTransport, tmp_path: Path) -> None:
    marker = tmp_path / "private-marker"
    ifaces = [{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}]
    private, _ = owner.standalone("touch-private", "/bin/sh", ["-c", f"touch {marker}"],
                                  ifaces, access="private")
    friend = "f" * 40
    only, _ = owner.standalone("echo-friends", "/bin/echo", ["for friends"],
                               ifaces, access="peers", allowed_peers=[friend])
    shown = owner.client.get(f"/api/services/{only}").json()["service"]
    assert (shown["access"], shown["allowed_peers"]) == ("peers", [friend])
    public, _ = owner.standalone("cat-public", "/bin/cat", [], ifaces)
    await refused(stranger, owner, private, "access_denied")
    await refused(stranger, owner, only, "access_denied")
    await asyncio.sleep(0.5)
    assert not marker.exists()
    names = await search(stranger, owner)
    assert "cat-public" in names and not {"touch-private", "echo-friends"} & names

    # The owner admits the stranger: the service is shown and runs for it.
    r = owner.client.put(f"/api/services/{only}", json={
        "allowed_peers": [friend, stranger.peer_id]})
    assert r.status_code == 200, r.text
    assert "echo-friends" in await search(stranger, owner)
    answer = await job_run(stranger, owner, only, job_id="admitted")
    assert await stdout_of(stranger, owner, answer, tmp_path / "out") == b"for friends\n"
    assert public


async def test_bad_policy_values_are_refused_and_change_nothing(owner: Owner) -> None:
    sid, _ = owner.standalone("policy-target", "/bin/cat", [], [{"interface_type": "STDIN"}])
    before = owner.client.get(f"/api/services/{sid}").json()["service"]
    assert (before["access"], before["allow_args"], before["allow_command"]) == (
        "public", False, True)
    for body in ('{"access": "everyone"}', '{"allowed_peers": ["not-a-peer"]}',
                 '{"allow_args": "yes"}', '{"limits": {"memory_mb": -5}}',
                 '{"limits": {"cpus": 1e999}}', '{"limits": {"disk_gb": 1}}',
                 '{"name": "renamed", "limits": {"timeout_max_seconds": 0}}'):
        r = owner.client.put(f"/api/services/{sid}", content=body,
                             headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (body, r.text)
        assert "error" in r.json()
    after = owner.client.get(f"/api/services/{sid}").json()["service"]
    assert {k: after[k] for k in before if k != "updated_at"} == {
        k: before[k] for k in before if k != "updated_at"}
    r = owner.client.put(f"/api/services/{sid}", json={"limits": {"memory_mb": 64}})
    assert r.status_code == 200, r.text
    assert r.json()["service"]["limits"]["memory_mb"] == 64
    assert r.json()["service"]["effective_limits"]["memory_mb"] == 64


async def test_a_data_service_gives_no_clear_byte_to_a_stranger(
        owner: Owner, stranger: PeerTransport, tmp_path: Path) -> None:
    secret = b"CLEAR-SECRET-" + os.urandom(2000).hex().encode()
    async with UploadSocket(owner.client) as ws:
        done = await ws.upload(secret, file_name="secret.bin", upload_type="data")
    assert done["type"] == "FILE_UPLOAD_COMPLETE", done
    sid = int(done["payload"]["service_id"])
    shown = owner.client.get(f"/api/services/{sid}").json()["service"]
    assert shown["access"] == "private"
    await refused(stranger, owner, sid, "access_denied")
    assert "secret.bin" not in str(await search(stranger, owner))
    # Nothing the stranger can fetch by hash holds the clear bytes: no clear artifact was made.
    import hashlib
    clear = hashlib.sha256(secret).hexdigest()
    assert not (owner.node.data_dir / "artifacts" / clear[:2] / clear).exists()
    with pytest.raises(PeerError):
        await stranger.fetch_bulk(owner.peer_id, clear, tmp_path / "got", prefer_tcp=False)
    assert not (tmp_path / "got").exists() or secret not in (tmp_path / "got").read_bytes()


# -- bounds ------------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [1e308, -1.0, 0, 10**400, 86401.0])
async def test_timeouts_that_are_not_finite_positive_and_bounded_are_refused(
        owner: Owner, stranger: PeerTransport, tmp_path: Path, timeout: float) -> None:
    marker = tmp_path / "timeout-marker"
    sid, _ = owner.standalone(f"touch-t{abs(hash(timeout)) % 10**6}", "/bin/sh",
                              ["-c", f"touch {marker}"], [{"interface_type": "STDOUT"}])
    await refused(stranger, owner, sid, "bad_timeout", timeout=timeout)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinite_timeouts_never_reach_a_job(
        owner: Owner, stranger: PeerTransport, tmp_path: Path, text: str) -> None:
    """JSON cannot carry them: sent as Python floats, the node refuses the request."""
    marker = tmp_path / "nan-marker"
    sid, _ = owner.standalone(f"touch-{text}", "/bin/sh", ["-c", f"touch {marker}"],
                              [{"interface_type": "STDOUT"}])
    with pytest.raises((PeerError, ValueError)):
        await job_run(stranger, owner, sid, timeout=float(text.replace("Infinity", "inf")))
    await asyncio.sleep(0.3)
    assert not marker.exists()
    still_serving(owner)


async def test_a_request_is_bounded(owner: Owner, stranger: PeerTransport) -> None:
    sid, _ = owner.standalone("cat-bounded", "/bin/cat", [], [{"interface_type": "STDIN"}])
    before = owner.client.get("/api/job-executions").status_code
    many = [{"interface_id": None, "interface_type": "STDIN", "text": "x"}] * 65
    await refused(stranger, owner, sid, "bad_request", inputs=many)
    await refused(stranger, owner, sid, "bad_request", job_id="j" * 500)
    assert before in (200, 404)
    still_serving(owner)


async def test_one_job_at_once_per_peer_the_second_is_busy(
        owner: Owner, stranger: PeerTransport, tmp_path: Path) -> None:
    running = asyncio.Event()

    async def on_event(data: dict[str, Any]) -> None:
        if data.get("event") == "state" and data.get("status") == "RUNNING":
            running.set()

    sid, _ = owner.standalone("slow", "/bin/sleep", ["60"], [{"interface_type": "STDOUT"}])
    first = asyncio.ensure_future(job_run(stranger, owner, sid, job_id="first",
                                          on_event=on_event))
    try:
        await asyncio.wait_for(running.wait(), 60)
        await refused(stranger, owner, sid, "busy", job_id="second")
    finally:
        await stranger.request(owner.peer_id, "job_cancel", {"job_id": "first"}, timeout=30)
        answer = await asyncio.wait_for(first, 60)
    assert answer["outcome"] == "CANCELLED", answer
    # Its place is free again.
    quick, _ = owner.standalone("quick", "/bin/echo", ["ok"], [{"interface_type": "STDOUT"}])
    assert (await job_run(stranger, owner, quick, job_id="third"))["outcome"] == "COMPLETED"


# -- a stranger's job cannot reach the node ---------------------------------------------------
async def test_a_strangers_job_reaches_neither_the_nodes_files_nor_the_network(
        owner: Owner, stranger: PeerTransport, tmp_path: Path) -> None:
    """The owner offers a script that reads the path it is given, writes where it is told and
    dials where it is told: the stranger names the node's key, a host path and a listener on
    127.0.0.1. The job runs as the unprivileged user, and none of it works."""
    marker = tmp_path / "job-marker"
    accepted = 0

    async def count(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        w.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    dial = ("import socket, sys\n"
            "try:\n"
            "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\n"
            "    print('dialled')\n"
            "except OSError:\n"
            "    print('no network')\n")
    script = ('id -u; cat "$TARGET" 2>/dev/null; ls "$DATA" 2>/dev/null; '
              'touch "$MARK" 2>/dev/null; python3 -c "$DIAL" "$PORT"; true')
    sid, ids = owner.standalone("reach-out", "/bin/sh", ["-c", script], [
        {"interface_type": "STDOUT"}, {"interface_type": "ENV", "path": "TARGET"},
        {"interface_type": "ENV", "path": "DATA"}, {"interface_type": "ENV", "path": "MARK"},
        {"interface_type": "ENV", "path": "DIAL"}, {"interface_type": "ENV", "path": "PORT"}])
    values = {"TARGET": str(owner.node.data_dir / "identity.key"),
              "DATA": str(owner.node.data_dir), "MARK": str(marker), "DIAL": dial,
              "PORT": str(port)}
    try:
        answer = await job_run(stranger, owner, sid, job_id="reach", inputs=[
            {"interface_id": ids[name], "interface_type": None, "path": "", "text": text}
            for name, text in values.items()])
        out = (await stdout_of(stranger, owner, answer, tmp_path / "out")).decode()
    finally:
        listener.close()
        await listener.wait_closed()
    lines = out.splitlines()
    assert lines[0] == "65534", out  # nobody: the node runs as root
    assert lines[-1] == "no network" and accepted == 0, out
    key = (owner.node.data_dir / "identity.key").read_bytes()
    assert key and key.decode(errors="replace").strip() not in out
    assert not {"identity.key", "jwt.secret", "node.db"} & set(lines), out
    assert not marker.exists()
    still_serving(owner)
