"""A workflow through a node under attack by strangers, against the same workflow on it quiet.

Two real node processes on 127.0.0.1: N, the node under attack, and R, an honest requester
bootstrapped to N (same topic). N offers a standalone ``/bin/cat`` service; R's workflow is a
chain of ``--jobs`` jobs of that service on N (remote jobs over QUIC), a line of data flowing
through them. The workflow's time is the time from ``POST /api/workflows/{id}/execute`` on R to
its execution's status being terminal (polled every 20 ms).

- quiet phase: ``--rounds`` workflows, one after the other, nothing else touching N;
- hostile phase: the same workflow, over and over (at least ``--rounds`` times), while two
  strangers, each with a fresh Ed25519 key, attack N for ``--attack-seconds``:
  - streams: one peer opens ``--connections`` QUIC connections to N (the identity exchange done,
    as any peer can) and ``--streams`` streams on them; on each it sends a ``ping`` request and
    then junk, at most ``--stream-bytes`` a stream and ``--attack-mib`` in all, and never reads
    an answer (QUIC datagrams of ``--datagram-bytes``, as loopback allows);
  - DHT: a kademlia node bootstrapped to N's DHT port stores on N up to ``--dht-records`` signed
    peer records of fresh keys, each padded to about ``--record-bytes`` where the node's own
    record decoder takes such a record (plain ones where not), and after each
    ``network.topic.MAX_MEMBERS`` of them a topic membership value listing those forged peers
    (each entry signed by its fresh key where the membership format has signed entries).

Each attacker is a child process of this script (``--attacker``) with its own deadline, so it
cannot take this process's CPU time or hang it. N's resident memory (the node process) is sampled
every 50 ms throughout. Printed: both medians and their ratio, N's peak RSS in each phase and
after the attack, what the attackers sent and what N took of it, whether every hostile-phase
workflow completed, and whether N still answers ``GET /api/peers``. Errors are caught and
reported; every wait has a timeout; everything started is stopped.

    .venv/bin/python bench/hostile_load.py [--rounds 5] [--attack-seconds 20] [--jobs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import queue
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.node_process import ApiClient, NodeProcess, side_by_side  # noqa: E402

TOPIC = "bench-hostile"
MIB = 1024 * 1024
POLL = 0.02
READY = "READY"
# Unacknowledged stream bytes the stream attacker keeps in flight on each connection.
INFLIGHT = 2 * MIB
RESULT = "RESULT "


# -- the attackers (child processes) -----------------------------------------------------------
class CountingTransport:
    """A datagram transport that counts the bytes it sends."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += len(data)
        self.inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class AttackerHost:
    """What a QUIC connection needs from its owner: a fresh identity, and nothing served."""

    def __init__(self) -> None:
        from network.identity import Identity

        self.identity = Identity.generate()
        self.lost = 0

    def is_blacklisted(self, peer_id: str) -> bool:
        return False

    def admit(self, conn: Any) -> str | None:
        return None

    def refusal(self, conn: Any, peer_id: str) -> str | None:
        return None

    def connection_verified(self, conn: Any) -> None:
        pass

    def connection_lost(self, conn: Any) -> None:
        self.lost += 1

    def stream_opened(self, conn: Any, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class HostileStream:
    conn: Any
    writer: asyncio.StreamWriter
    stream_id: int
    written: int = 0
    stopped: bool = False


def acked(conn: Any, stream_id: int) -> int:
    """Bytes of a stream the peer has acknowledged (aioquic's sender keeps the offset)."""
    with contextlib.suppress(Exception):
        stream = conn._quic._streams.get(stream_id)
        if stream is not None:
            return int(getattr(stream.sender, "_buffer_start", 0))
    return 0


async def attack_streams(args: argparse.Namespace) -> dict[str, Any]:
    from network import quic
    from network.certs import ensure_self_signed
    from network.messages import Envelope, encode

    host_name, port = args.target.rsplit(":", 1)
    host = AttackerHost()
    report: dict[str, Any] = {"peer_id": host.identity.peer_id, "connections": 0,
                              "connect_errors": [], "streams": 0, "written": 0, "acked": 0,
                              "udp_bytes": 0, "stopped_streams": 0, "closed_connections": 0}
    with tempfile.TemporaryDirectory(prefix="rn-bench-hostile-q-") as tmp:
        cert, key = ensure_self_signed(Path(tmp), common_name="rn-p2p-stranger", stem="p2p")
        config = dataclasses.replace(
            quic.configuration(is_client=True, cert_path=cert, key_path=key, idle_timeout=30.0),
            max_datagram_size=args.datagram_bytes)
        conns: list[Any] = []
        counters: list[CountingTransport] = []
        streams: list[HostileStream] = []
        try:
            for _ in range(args.connections):
                try:
                    async with asyncio.timeout(5):
                        conn = await quic.dial(host_name, int(port), config, owner=host,
                                               handshake_timeout=5.0)
                        counter = CountingTransport(conn._transport)
                        conn._transport = counter
                        counters.append(counter)
                        await conn.client_handshake(None)
                    conns.append(conn)
                except TimeoutError:
                    report["connect_errors"].append("no QUIC connection within 5 s")
                except Exception as exc:  # a refusal is a result, not a crash
                    report["connect_errors"].append(f"{type(exc).__name__}: {exc}"[:200])
            report["connections"] = len(conns)
            per_conn = -(-args.streams // max(len(conns), 1))
            for conn in conns:
                for _ in range(min(per_conn, args.streams - len(streams))):
                    try:
                        _reader, writer = await conn.create_stream()
                        request = encode(Envelope.new("ping", {},
                                                      source_peer_id=host.identity.peer_id))
                        writer.write(request)
                        streams.append(HostileStream(conn, writer,
                                                     int(writer.get_extra_info("stream_id"))))
                    except Exception:
                        report["stopped_streams"] += 1
            report["streams"] = len(streams)
            print(READY, flush=True)
            chunk = secrets.token_bytes(64 * 1024)
            budget = int(args.attack_mib * MIB)
            deadline = time.monotonic() + args.seconds
            total = 0
            groups = [[s for s in streams if s.conn is conn] for conn in conns]
            sweep = 0
            while streams and time.monotonic() < deadline and total < budget:
                progressed = False
                for group in groups:
                    if not group:
                        continue
                    conn = group[0].conn
                    if not conn.is_open:
                        for s in group:
                            s.stopped = True
                        continue
                    # What the node has not acknowledged stays small, as a careful sender
                    # keeps it: what piles up is on the node's side.
                    inflight = sum(s.written - acked(conn, s.stream_id) for s in group
                                   if not s.stopped)
                    start = sweep % len(group)
                    for s in group[start:] + group[:start]:
                        if inflight >= INFLIGHT or total >= budget:
                            break
                        if s.stopped or s.written >= args.stream_bytes:
                            continue
                        try:
                            s.writer.write(chunk)
                        except Exception:
                            s.stopped = True
                            report["stopped_streams"] += 1
                            continue
                        s.written += len(chunk)
                        total += len(chunk)
                        inflight += len(chunk)
                        progressed = True
                sweep += 1
                await asyncio.sleep(0 if progressed else 0.002)
            report["seconds"] = round(args.seconds - max(deadline - time.monotonic(), 0), 2)
            # Let what was written be delivered (bounded), then take the counts.
            settle = time.monotonic() + 2.0
            while time.monotonic() < settle and any(
                    s.written > acked(s.conn, s.stream_id) for s in streams
                    if s.conn.is_open and not s.stopped):
                await asyncio.sleep(0.05)
            report["written"] = sum(s.written for s in streams)
            report["acked"] = sum(min(acked(s.conn, s.stream_id), s.written) for s in streams)
            report["closed_connections"] = sum(1 for c in conns if not c.is_open)
        finally:
            report["udp_bytes"] = sum(c.sent for c in counters)
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.close_with("done")
            await asyncio.sleep(0.1)
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn._transport.close()
    return report


def forged_record(identity: Any, now: float, pad: int) -> bytes:
    """A peer record signed by ``identity`` (a fresh key), in the topic, padded by ``pad``."""
    from network.records import PeerRecord, encode_record, next_seq

    capabilities: dict[str, Any] = {"platform": "linux", "cpu_cores": 1}
    if pad:
        capabilities["note"] = "x" * pad
    record = PeerRecord(
        peer_id=identity.peer_id, public_key=identity.public_key_hex, seq=next_seq(0, now),
        timestamp=round(now, 3), dht_node_id=secrets.token_hex(20),
        quic_addresses=(("127.0.0.1", 9),), capabilities=capabilities, topic=TOPIC)
    return encode_record(record, identity)


def topic_value(identities: list[Any], now: float) -> bytes:
    """A topic membership value listing ``identities``, in the membership format of this tree:
    entries signed by each member where the format has them, bare peer ids where not."""
    from network import topic as topics

    sign = getattr(topics, "sign_entry", None)
    if sign is not None:
        members = topics.Members(TOPIC, {i.peer_id: sign(i, TOPIC, now) for i in identities})
    else:
        members = topics.Members(TOPIC, {i.peer_id: int(now) for i in identities})
    return topics.encode(members)


async def attack_dht(args: argparse.Namespace) -> dict[str, Any]:
    from kademlia.network import Server
    from kademlia.utils import digest

    from network import topic as topics
    from network.identity import Identity
    from network.records import RecordError, decode_record

    host_name, port = args.target.rsplit(":", 1)
    address = (host_name, int(port))
    report: dict[str, Any] = {"records_sent": 0, "records_kept": 0, "topic_sent": 0,
                              "topic_kept": 0, "unanswered": 0, "udp_bytes": 0, "error": "",
                              "topic_error": "", "record_bytes": 0}
    server = Server(ksize=20, alpha=3)
    await server.listen(0, interface="127.0.0.1")
    counter = CountingTransport(server.protocol.transport)
    server.protocol.transport = counter
    try:
        found = await asyncio.wait_for(server.bootstrap([address]), timeout=10)
        report["bootstrap_contacts"] = len(found or [])
        print(READY, flush=True)
        deadline = time.monotonic() + args.seconds
        forged: list[Identity] = []
        pending: set[asyncio.Task[tuple[str, bool, bool]]] = set()

        async def store(kind: str, key: bytes, value: bytes) -> tuple[str, bool, bool]:
            ok, answer = await server.protocol.store(address, server.node.id, key, value)
            return kind, bool(ok), bool(ok and answer)

        def tally(done: set[asyncio.Task[tuple[str, bool, bool]]]) -> None:
            for task in done:
                if task.cancelled() or task.exception() is not None:
                    report["unanswered"] += 1
                    continue
                kind, answered, kept = task.result()
                report["unanswered"] += 0 if answered else 1
                report[f"{kind}_kept"] += 1 if kept else 0

        sent = 0
        pad = max(args.record_bytes - 700, 0)
        while sent < args.dht_records and time.monotonic() < deadline:
            if len(pending) >= args.dht_concurrency:
                done, pending = await asyncio.wait(pending, timeout=max(
                    deadline - time.monotonic(), 0.01), return_when=asyncio.FIRST_COMPLETED)
                tally(done)
                continue
            identity = Identity.generate()
            now = time.time()
            try:
                value = forged_record(identity, now, pad)
                if pad:
                    # The node's own decoder says whether a padded record is one it takes;
                    # if not, the flood goes on with plain ones.
                    try:
                        decode_record(value)
                    except RecordError:
                        pad = 0
                        value = forged_record(identity, now, pad)
            except Exception as exc:
                report["error"] = f"{type(exc).__name__}: {exc}"[:200]
                break
            report["record_bytes"] = len(value)
            pending.add(asyncio.ensure_future(store("records", digest(identity.peer_id),
                                                    value)))
            report["records_sent"] += 1
            sent += 1
            forged.append(identity)
            del forged[:-topics.MAX_MEMBERS]
            if sent % topics.MAX_MEMBERS == 0 and not report["topic_error"]:
                try:
                    member_value = topic_value(forged, now)
                except Exception as exc:  # the membership format is not one known here
                    report["topic_error"] = f"{type(exc).__name__}: {exc}"[:200]
                    continue
                pending.add(asyncio.ensure_future(store("topic", digest(TOPIC), member_value)))
                report["topic_sent"] += 1
        if pending:
            done, rest = await asyncio.wait(pending, timeout=6)
            tally(done)
            for task in rest:
                task.cancel()
            report["unanswered"] += len(rest)
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        report["udp_bytes"] = counter.sent
        server.stop()
    return report


def attacker_main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.CRITICAL)
    attack = attack_streams if args.attacker == "streams" else attack_dht
    try:
        report = asyncio.run(asyncio.wait_for(attack(args), timeout=args.seconds + 30))
    except BaseException as exc:
        report = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    print(RESULT + json.dumps(report), flush=True)


class Attacker:
    """An attacker child process: started, waited for (bounded), its report read back."""

    def __init__(self, name: str, argv: list[str], seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.report: dict[str, Any] = {}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--attacker", name, *argv],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next_line(self, deadline: float) -> str | None:
        try:
            return self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            return None

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._next_line(deadline)
            if line is None:
                return False
            if line == READY:
                return True
            if line.startswith(RESULT):
                self.report = json.loads(line[len(RESULT):])
                return False
        return False

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.seconds + 40
        while not self.report and time.monotonic() < deadline:
            line = self._next_line(deadline)
            if line is None:
                break
            if line.startswith(RESULT):
                with contextlib.suppress(ValueError):
                    self.report = json.loads(line[len(RESULT):])
        self.stop()
        return self.report or {"error": "no report (the attacker was stopped)"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


# -- the measuring side ------------------------------------------------------------------------
class RssSampler:
    """Samples a process's resident memory in a thread; the peak since the last ``reset``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.last = 0
        self.error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rss = self.process.memory_info().rss
            except psutil.Error as exc:
                self.error = f"{type(exc).__name__}"
                return
            with self._lock:
                self.last = rss
                self.peak = max(self.peak, rss)

    def reset(self) -> None:
        with self._lock:
            self.peak = self.last

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


@dataclass
class RunResult:
    seconds: float
    status: str
    error: str = ""


@dataclass
class Phase:
    runs: list[RunResult] = field(default_factory=list)
    peak_rss: int = 0

    @property
    def completed(self) -> list[float]:
        return [r.seconds for r in self.runs if r.status == "COMPLETED"]

    @property
    def median(self) -> float | None:
        done = self.completed
        return statistics.median(done) if done else None

    @property
    def all_completed(self) -> bool:
        return bool(self.runs) and all(r.status == "COMPLETED" for r in self.runs)


def run_workflow(client: ApiClient, wf: int, timeout: float) -> RunResult:
    start = time.monotonic()
    try:
        r = client.post(f"/api/workflows/{wf}/execute", timeout=timeout)
        if r.status_code != 202:
            return RunResult(time.monotonic() - start, f"HTTP {r.status_code}", r.text[:200])
        eid = int(r.json()["execution_id"])
        deadline = start + timeout
        while time.monotonic() < deadline:
            status = client.get(f"/api/workflow-executions/{eid}/status",
                                timeout=max(deadline - time.monotonic(), 1)).json()
            if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return RunResult(time.monotonic() - start, status["status"],
                                 str(status.get("error") or "")[:300])
            time.sleep(POLL)
        return RunResult(time.monotonic() - start, "TIMED OUT", f"not finished in {timeout:g}s")
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return RunResult(time.monotonic() - start, "ERROR", f"{type(exc).__name__}: {exc}"[:300])


def create_service(n: ApiClient) -> tuple[int, dict[str, int]]:
    r = n.post("/api/services/standalone/from-local", json={
        "service_name": "hostile-bench-cat", "executable_path": "/bin/cat", "arguments": [],
        "custom_interfaces": [{"interface_type": "STDIN"}, {"interface_type": "STDOUT"}]})
    if r.status_code not in (200, 201):
        raise RuntimeError(f"creating the service on N: HTTP {r.status_code} {r.text[:300]}")
    sid = int(r.json()["service"]["id"])
    listed = n.get(f"/api/services/{sid}/interfaces").json()["interfaces"]
    return sid, {i["interface_type"]: int(i["id"]) for i in listed}


def create_workflow(r_client: ApiClient, sid: int, ifaces: dict[str, int], peer: str,
                    jobs: int) -> int:
    wf = int(r_client.post("/api/workflows", json={"name": "hostile-bench"}).json()["id"])
    ids = []
    for i in range(jobs):
        config = {"stdin": "hello through a node among strangers\n"} if i == 0 else {}
        resp = r_client.post(f"/api/workflows/{wf}/nodes",
                             json={"service_id": sid, "config": config, "peer_id": peer})
        if resp.status_code != 201:
            raise RuntimeError(f"adding a workflow node on R: HTTP {resp.status_code} "
                               f"{resp.text[:300]}")
        ids.append(int(resp.json()["id"]))
    for a, b in itertools.pairwise(ids):
        resp = r_client.post(f"/api/workflows/{wf}/connections", json={
            "source_node_id": a, "source_interface_id": ifaces["STDOUT"],
            "target_node_id": b, "target_interface_id": ifaces["STDIN"]})
        if resp.status_code != 201:
            raise RuntimeError(f"connecting workflow nodes on R: HTTP {resp.status_code} "
                               f"{resp.text[:300]}")
    return wf


def wait_for(condition: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            if condition():
                return
        time.sleep(0.3)
    raise TimeoutError(f"{what}: not within {limit:g}s")


def peers_status(client: ApiClient) -> str:
    try:
        return f"HTTP {client.get('/api/peers', timeout=15).status_code}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def quiet_phase(args: argparse.Namespace, r_client: ApiClient, wf: int,
                rss: RssSampler) -> Phase:
    phase = Phase()
    rss.reset()
    for _ in range(args.rounds):
        phase.runs.append(run_workflow(r_client, wf, args.workflow_timeout))
    phase.peak_rss = rss.peak
    return phase


def n_alive(n: NodeProcess, rss: RssSampler) -> bool:
    return n.proc is not None and n.proc.poll() is None and not rss.error


def hostile_phase(args: argparse.Namespace, n: NodeProcess, r_client: ApiClient, wf: int,
                  rss: RssSampler) -> tuple[Phase, dict[str, dict[str, Any]], int]:
    phase = Phase()
    common = ["--seconds", str(args.attack_seconds)]
    attackers = [
        Attacker("streams", [*common, "--target", f"127.0.0.1:{n.quic_port}",
                             "--connections", str(args.connections),
                             "--streams", str(args.streams),
                             "--stream-bytes", str(args.stream_bytes),
                             "--attack-mib", str(args.attack_mib),
                             "--datagram-bytes", str(args.datagram_bytes)], args.attack_seconds),
        Attacker("dht", [*common, "--target", f"127.0.0.1:{n.dht_port}",
                         "--dht-records", str(args.dht_records),
                         "--dht-concurrency", str(args.dht_concurrency),
                         "--record-bytes", str(args.record_bytes)], args.attack_seconds),
    ]
    reports: dict[str, dict[str, Any]] = {}
    not_ready: set[str] = set()
    try:
        for a in attackers:
            if not a.wait_ready():
                not_ready.add(a.name)
        rss.reset()
        started = time.monotonic()
        limit = args.rounds * 20
        # The workflow runs while the attack lasts, at least --rounds times.
        while len(phase.runs) < limit and n_alive(n, rss) and (
                len(phase.runs) < args.rounds
                or (time.monotonic() - started < args.attack_seconds
                    and any(a.running for a in attackers))):
            phase.runs.append(run_workflow(r_client, wf, args.workflow_timeout))
        phase.peak_rss = rss.peak
    finally:
        for a in attackers:
            reports[a.name] = a.finish()
            if a.name in not_ready and not reports[a.name].get("error"):
                reports[a.name]["error"] = "not ready within 30 s"
    phase.peak_rss = max(phase.peak_rss, rss.peak)
    time.sleep(2.0)
    return phase, reports, rss.last


def print_report(args: argparse.Namespace, base_rss: int, quiet: Phase, hostile: Phase,
                 after_rss: int, reports: dict[str, dict[str, Any]], peers: str) -> None:
    print(f"\nworkflow: {args.jobs} remote /bin/cat jobs on N, requested by R; "
          f"attack {args.attack_seconds:g} s")
    for name, phase in (("quiet", quiet), ("hostile", hostile)):
        times = ", ".join(f"{r.seconds * 1000:.0f}" if r.status == "COMPLETED" else r.status
                          for r in phase.runs)
        med = phase.median
        print(f"{name:8} median workflow time: "
              f"{'n/a' if med is None else f'{med * 1000:.1f} ms'} "
              f"({len(phase.completed)} of {len(phase.runs)} completed; runs ms: {times})")
    if quiet.median and hostile.median:
        print(f"ratio hostile/quiet: {hostile.median / quiet.median:.2f}")
    else:
        print("ratio hostile/quiet: n/a (a phase has no completed workflow)")
    print(f"N peak RSS: before {mib(base_rss)}, quiet {mib(quiet.peak_rss)}, "
          f"hostile {mib(hostile.peak_rss)}, 2 s after the attack {mib(after_rss)}")
    s = reports.get("streams", {})
    if s.get("error") and "written" not in s:
        print(f"stream attacker: failed: {s['error']}")
    else:
        print(f"stream attacker: {s.get('connections', 0)} of {args.connections} connections "
              f"(identity exchange done), {s.get('streams', 0)} streams; wrote "
              f"{mib(s.get('written', 0))} on streams in {s.get('seconds', 0)} s, "
              f"{mib(s.get('acked', 0))} acknowledged "
              f"by N, {mib(s.get('udp_bytes', 0))} of UDP datagrams; "
              f"{s.get('stopped_streams', 0)} streams stopped and "
              f"{s.get('closed_connections', 0)} connections closed by N"
              + (f"; connect errors: {s['connect_errors'][:2]}" if s.get("connect_errors")
                 else "") + (f"; error: {s['error']}" if s.get("error") else ""))
    d = reports.get("dht", {})
    print(f"DHT attacker: {d.get('records_sent', 0)} records of {d.get('record_bytes', 0)} "
          f"bytes sent, "
          f"{d.get('records_kept', 0)} kept by N; {d.get('topic_sent', 0)} topic values sent, "
          f"{d.get('topic_kept', 0)} kept; {d.get('unanswered', 0)} unanswered; "
          f"{mib(d.get('udp_bytes', 0))} of UDP datagrams"
          + (f"; error: {d['error']}" if d.get("error") else "")
          + (f"; topic values: {d['topic_error']}" if d.get("topic_error") else ""))
    total = int(s.get("udp_bytes", 0)) + int(d.get("udp_bytes", 0))
    print(f"attackers sent {mib(total)} in all")
    failed = [r for r in hostile.runs if r.status != "COMPLETED"]
    print(f"every hostile-phase workflow completed: {'yes' if hostile.all_completed else 'NO'}"
          + (f" ({len(failed)} did not; first: {failed[0].status} {failed[0].error})"
             if failed else ""))
    print(f"N GET /api/peers after the attack: {peers}")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    env = {"RN_LOG_LEVEL": "WARNING", "RN_DHT_REFRESH_SECONDS": f"{args.dht_refresh:g}"}
    with tempfile.TemporaryDirectory(prefix="rn-bench-hostile-") as tmp:
        root = Path(tmp)
        n = NodeProcess(root / "n", env={**env, "RN_PREFECT_WARMUP": "false"},
                        extra_args=["--topic", TOPIC])
        r = NodeProcess(root / "r", env=env,
                        extra_args=["--topic", TOPIC, "--bootstrap", f"127.0.0.1:{n.dht_port}"])
        clients: list[ApiClient] = []
        rss: RssSampler | None = None
        try:
            side_by_side([n, r], "start")
            n_client, r_client = n.client(), r.client()
            clients += [n_client, r_client]
            n_peer = n_client.get("/api/node/status").json()["peer_id"]
            wait_for(lambda: n_peer in {p["peer_id"] for p in
                                        r_client.get("/api/peers").json()["peers"]},
                     120, "R lists N")
            sid, ifaces = create_service(n_client)
            wf = create_workflow(r_client, sid, ifaces, n_peer, args.jobs)
            rss = RssSampler(n.pid)
            for _ in range(3):  # the first starts Prefect beside R and R's connection to N
                warm = run_workflow(r_client, wf, max(args.workflow_timeout, 300))
                if warm.status == "COMPLETED":
                    break
                print(f"the warm-up workflow ended {warm.status}: {warm.error}")
            else:
                for name, node in (("N", n), ("R", r)):
                    tail = "\n  ".join(node.log().splitlines()[-15:])
                    print(f"{name}'s log, last lines:\n  {tail}")
                return 1
            time.sleep(0.5)
            base_rss = rss.last
            quiet = quiet_phase(args, r_client, wf, rss)
            hostile, reports, after_rss = hostile_phase(args, n, r_client, wf, rss)
            print_report(args, base_rss, quiet, hostile, after_rss, reports,
                         peers_status(n_client))
            if rss.error or n.proc is None or n.proc.poll() is not None:
                print(f"N exited during the bench (RSS sampling: {rss.error or 'ok'})")
            return 0
        except Exception as exc:
            print(f"bench failed: {type(exc).__name__}: {exc}")
            return 1
        finally:
            if rss is not None:
                rss.stop()
            for c in clients:
                c.close()
            side_by_side([n, r], "stop")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="workflows in the quiet phase, and at least in the hostile one")
    parser.add_argument("--jobs", type=int, default=3, help="jobs in the workflow's chain")
    parser.add_argument("--attack-seconds", type=float, default=20.0)
    parser.add_argument("--workflow-timeout", type=float, default=120.0)
    parser.add_argument("--dht-refresh", type=float, default=1.0,
                        help="the nodes' DHT refresh interval, s")
    parser.add_argument("--connections", type=int, default=4,
                        help="QUIC connections of the stream attacker")
    parser.add_argument("--streams", type=int, default=256,
                        help="streams the stream attacker opens, over its connections")
    parser.add_argument("--stream-bytes", type=int, default=4 * MIB,
                        help="junk bytes at most per stream")
    parser.add_argument("--attack-mib", type=float, default=512.0,
                        help="junk MiB at most in all, over every stream")
    parser.add_argument("--datagram-bytes", type=int, default=16000,
                        help="the stream attacker's QUIC datagram size (loopback takes large "
                             "ones, so the attack moves more bytes per packet; 1200 fits any "
                             "path)")
    parser.add_argument("--dht-records", type=int, default=20000,
                        help="signed peer records of fresh keys stored on N at most")
    parser.add_argument("--dht-concurrency", type=int, default=64,
                        help="DHT stores in flight at once")
    parser.add_argument("--record-bytes", type=int, default=3500,
                        help="about how large each forged record is (at most 4096)")
    parser.add_argument("--attacker", choices=("streams", "dht"), help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("rounds", "jobs", "connections", "streams", "dht_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.attack_seconds <= 600:
        parser.error("--attack-seconds must be in (0, 600]")
    return args


if __name__ == "__main__":
    parsed = parse()
    if parsed.attacker:
        attacker_main(parsed)
    else:
        sys.exit(main(parsed))
