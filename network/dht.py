"""The node's DHT loop on top of ``network.kademlia_ext``: publish, discover.

``DhtNode`` bootstraps from the configured peers, publishes this node's signed record under its
peer id and its membership of the topic (on change and every ``refresh_interval``), reads the
topic (signed member entries only), fetches and verifies each member's record and hands it to
``on_record``. Records stored on us by their owners count as sightings too, so small networks
converge without waiting. Every round ends with expiry (stored values, the record book, the
caller's ``on_round``), whether or not the round succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kademlia.utils import digest

from network import topic as topics
from network.identity import Identity
from network.kademlia_ext import (
    DEFAULT_MAX_VALUES,
    DEFAULT_PER_SOURCE,
    RecordServer,
    ValidatingStorage,
    quiet_library_logs,
)
from network.records import (
    MAX_SERVICE_DIGESTS,
    NatFacts,
    PeerRecord,
    RecordBook,
    RecordError,
    RecordTooLarge,
    StaleRecord,
    encode_record,
    next_seq,
)

log = logging.getLogger("remote_network.dht")

Address = tuple[str, int]
RECEIVE_BUFFER = 1 << 20
# Distinct dropped values whose reason is logged (once each) before the memory of them resets.
MAX_DROPPED_LOGGED = 1024


def parse_address(text: str) -> Address:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError when it is neither."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not a host:port address: {text!r}")
    return host, int(port_text)


# Job keys whose provider records this node keeps announcing (the most recent results).
MAX_PROVIDED = 64


def provider_topic(job_key: str) -> str:
    """The DHT topic whose members hold a result of ``job_key``."""
    return f"job:{job_key}"


@dataclass(frozen=True)
class DhtConfig:
    host: str
    port: int
    topic: str
    bootstrap: tuple[Address, ...] = ()
    rpc_timeout: float = 2.0
    refresh_interval: float = 30.0
    ksize: int = 20
    alpha: int = 3
    # Bounds on what others store here: keys in all, keys one source (address) may bring, and
    # topic members one source may bring.
    max_values: int = DEFAULT_MAX_VALUES
    values_per_source: int = DEFAULT_PER_SOURCE
    members_per_source: int = topics.MAX_PER_SOURCE

    @property
    def topic_ttl(self) -> float:
        """Members not re-announced for this long drop out of the topic value."""
        return max(4 * self.refresh_interval, 10.0)

    @property
    def record_ttl(self) -> float:
        """A stored record not renewed for this long after we received it expires."""
        return max(4 * self.refresh_interval, 10.0)


@dataclass(frozen=True)
class LocalFacts:
    """What this node says about itself, besides its identity (the record's variable part)."""

    quic_addresses: tuple[Address, ...] = ()
    api_port: int = 0
    is_relay: bool = False
    nat: NatFacts = field(default_factory=NatFacts)
    capabilities: dict[str, Any] | None = None
    files_count: int = 0
    apps_count: int = 0
    service_digests: tuple[str, ...] = ()


def dht_node_id(identity: Identity) -> bytes:
    """A stable kademlia node id derived from the node key (distinct from the peer id)."""
    return hashlib.sha1(b"remote-network-dht:" + identity.public_key).digest()


# -- the node's DHT loop -----------------------------------------------------------------------
FactsProvider = Callable[[], Awaitable[LocalFacts]]


class DhtNode:
    def __init__(self, identity: Identity, config: DhtConfig, *, facts: FactsProvider,
                 on_record: Callable[[PeerRecord], None],
                 on_round: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.config = config
        self.facts = facts
        self.on_record = on_record
        self.on_round = on_round
        self.clock = clock
        self.node_id = dht_node_id(identity)
        self.book = RecordBook(capacity=config.max_values, ttl=config.record_ttl, clock=clock)
        self.storage = ValidatingStorage(topic_ttl=config.topic_ttl, ttl=config.record_ttl,
                                         max_values=config.max_values,
                                         per_source=config.values_per_source,
                                         members_per_source=config.members_per_source,
                                         on_record=self._held, clock=clock)
        self.server: RecordServer | None = None
        self.observed_ip: str | None = None
        self.seq = 0
        self.published: LocalFacts | None = None
        self.published_at = 0.0
        self.last_publish_reached = False
        self.rounds = 0
        self._wake = asyncio.Event()
        self._republish = False
        self._task: asyncio.Task[None] | None = None
        self._dropped_logged: set[tuple[str, int]] = set()
        # Job keys this node holds a result of (provider records), newest last.
        self._provided: OrderedDict[str, None] = OrderedDict()

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    @property
    def address(self) -> Address | None:
        if self.server is None or self.server.transport is None:
            return None
        host, port = self.server.transport.get_extra_info("sockname")[:2]
        return host, port

    @property
    def contacts(self) -> int:
        if self.server is None or self.server.protocol is None:
            return 0
        return sum(len(b) for b in self.server.protocol.router.buckets)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        quiet_library_logs()
        self.server = RecordServer(node_id=self.node_id, storage=self.storage,
                                   rpc_timeout=self.config.rpc_timeout, ksize=self.config.ksize,
                                   alpha=self.config.alpha, on_new_contact=self._new_contact)
        await self.server.listen(self.config.port, interface=self.config.host)
        sock = self.server.transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            # Lookups fan out to many peers at once; absorb the burst of answers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        log.info("DHT node %s listening on %s:%s", self.node_id_hex[:16], *self.address or ())
        self._task = asyncio.create_task(self._run(), name="dht-loop")

    async def stop(self, *, announce: bool = True) -> None:
        """Stop the loop; publish an offline record first (bounded by the RPC timeout)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if announce and self.server is not None and self.contacts:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publish(online=False),
                                       timeout=self.config.rpc_timeout * 2 + 1)
        if self.server is not None:
            self.server.stop()
            if self.server.protocol is not None:
                self.server.protocol.close()
            self.server = None

    def request_republish(self) -> None:
        """Publish soon, even if nothing seems changed (e.g. after a service change)."""
        self._republish = True
        self._wake.set()

    def _new_contact(self) -> None:
        # A first neighbour after publishing to nobody: publish again so it learns about us.
        if not self.last_publish_reached:
            self.request_republish()

    def _held(self, record: PeerRecord, value: bytes) -> None:
        """A verified record stored on us by its owner or a neighbour: take it as a sighting."""
        if record.peer_id == self.identity.peer_id:
            return
        try:
            self.book.accept(value)
        except RecordError:
            return  # we already hold a newer one
        self.on_record(record)

    # -- the loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self.bootstrap()
        except Exception:  # the round retries while we know nobody
            log.exception("DHT bootstrap failed")
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("DHT round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.refresh_interval)
            # Let a burst of changes settle into one publication.
            await asyncio.sleep(0.05)

    async def bootstrap(self) -> int:
        """Contact the bootstrap peers; returns how many answered."""
        assert self.server is not None
        addrs = await self._resolve(self.config.bootstrap)
        own = self.address
        addrs = [a for a in addrs if a != own]
        if not addrs:
            return 0
        found = await self.server.bootstrap(addrs)
        if found and self.observed_ip is None:
            answer = await self.server.protocol.stun(addrs[0])
            if answer[0] and isinstance(answer[1], list | tuple):
                self.observed_ip = str(answer[1][0])
        log.info("DHT bootstrap: %d of %d peers answered", len(found or []), len(addrs))
        return len(found or [])

    async def round(self) -> None:
        """Publish when due, discover, then expire (whether or not the rest succeeded)."""
        try:
            if not self.contacts and self.config.bootstrap:
                await self.bootstrap()
            facts = await self.facts()
            due = self.clock() - self.published_at >= self.config.refresh_interval * 0.9
            if self._republish or due or facts != self.published:
                self._republish = False
                await self.publish(facts=facts)
            await self.discover()
            self.rounds += 1
        finally:
            self.expire()

    def expire(self) -> None:
        """Drop what has expired here: stored values, book entries, then the caller's own."""
        try:
            self.storage.expire()
            self.book.expire()
        except Exception:
            log.exception("DHT expiry failed")
        if self.on_round is not None:
            try:
                self.on_round()
            except Exception:
                log.exception("DHT round hook failed")

    async def publish(self, *, facts: LocalFacts | None = None, online: bool = True) -> bool:
        """Sign and store this node's record and topic membership. True when a peer took it."""
        assert self.server is not None
        facts = facts or self.published or await self.facts()
        now = self.clock()
        self.seq = next_seq(self.seq, now)
        record = self.build_record(facts, seq=self.seq, now=now, online=online)
        while True:
            try:
                value = encode_record(record, self.identity)
                break
            except RecordTooLarge:
                if not record.service_digests:
                    raise
                # The digests are a summary: as many as fit.
                record = replace(record, service_digests=record.service_digests[:-1])
        pid = self.identity.peer_id
        self.server.store_here(pid, value)
        reached = bool(await self.server.set(pid, value))
        if online:
            member_value = topics.encode(topics.announcement(self.identity, self.config.topic,
                                                             now))
            self.server.store_here(self.config.topic, member_value)
            reached = bool(await self.server.set(self.config.topic, member_value)) and reached
            await asyncio.gather(*(self._announce(provider_topic(k)) for k in self._provided),
                                 return_exceptions=True)
        self.published, self.published_at = facts, now
        self.last_publish_reached = reached
        log.debug("published record seq %d (reached peers: %s)", self.seq, reached)
        return reached

    def build_record(self, facts: LocalFacts, *, seq: int, now: float,
                     online: bool = True) -> PeerRecord:
        return PeerRecord(
            peer_id=self.identity.peer_id,
            public_key=self.identity.public_key_hex,
            seq=seq,
            timestamp=round(now, 3),
            dht_node_id=self.node_id_hex,
            quic_addresses=facts.quic_addresses,
            api_port=facts.api_port,
            is_relay=facts.is_relay,
            is_store=True,
            nat=facts.nat,
            capabilities=facts.capabilities,
            files_count=facts.files_count,
            apps_count=facts.apps_count,
            service_digests=facts.service_digests[:MAX_SERVICE_DIGESTS],
            topic=self.config.topic,
            online=online,
        )

    # -- provider records: who holds the result of a job key -----------------------------------
    async def provide(self, job_key: str) -> bool:
        """Say (signed) that this node holds a result of ``job_key``: a member entry of the
        topic ``job:<key>``, announced again with each publish (the last ``MAX_PROVIDED``)."""
        self.remember_provided(job_key)
        return await self._announce(provider_topic(job_key))

    def remember_provided(self, job_key: str) -> None:
        """Announce ``job_key``'s provider record with the next publishes (not now)."""
        self._provided.pop(job_key, None)
        self._provided[job_key] = None
        while len(self._provided) > MAX_PROVIDED:
            self._provided.popitem(last=False)

    async def providers(self, job_key: str) -> list[str]:
        """The peers whose provider records name ``job_key``, the freshest first."""
        assert self.server is not None
        topic = provider_topic(job_key)
        found = topics.gather(await self.server.collect_all(topic), topic=topic,
                              now=self.clock(), ttl=self.config.topic_ttl)
        return [pid for pid, _ in sorted(found.members.items(), key=lambda kv: -kv[1])]

    async def _announce(self, topic: str) -> bool:
        if self.server is None:
            return False
        value = topics.encode(topics.announcement(self.identity, topic, self.clock()))
        self.server.store_here(topic, value)
        return bool(await self.server.set(topic, value))

    async def members(self) -> set[str]:
        """Peer ids listed under our topic (merged from every holder found)."""
        assert self.server is not None
        values = await self.server.collect_all(self.config.topic)
        found = topics.gather(values, topic=self.config.topic, now=self.clock(),
                              ttl=self.config.topic_ttl)
        return found.peer_ids()

    async def fetch_record(self, peer_id: str) -> PeerRecord | None:
        """The newest valid record of ``peer_id``; invalid and stale values are dropped, logged."""
        assert self.server is not None
        local = self.storage.get(digest(peer_id))
        fresh_local = local is not None and self._is_fresh(local)
        best: PeerRecord | None = None
        for value in await self.server.collect(peer_id, local_first=fresh_local):
            try:
                record = self.book.check(value, expected_peer_id=peer_id)
            except StaleRecord:
                continue  # an older copy from a slower holder
            except RecordError as exc:
                self._log_dropped(peer_id, value, exc)
                continue
            if best is None or record.seq > best.seq:
                try:
                    self.book.accept(value, expected_peer_id=peer_id)
                except RecordError as exc:
                    self._log_dropped(peer_id, value, exc)
                    continue
                best = record
        return best

    def _is_fresh(self, value: Any) -> bool:
        try:
            record = self.book.check(value)
        except RecordError:
            return False
        return self.clock() - record.timestamp < self.config.refresh_interval * 1.5

    def _log_dropped(self, peer_id: str, value: Any, exc: RecordError) -> None:
        key = (peer_id, hash(value) if isinstance(value, bytes) else 0)
        if key not in self._dropped_logged:
            if len(self._dropped_logged) >= MAX_DROPPED_LOGGED:
                self._dropped_logged.clear()
            self._dropped_logged.add(key)
            log.warning("dropped a record for peer %s: %s", peer_id[:16], exc)

    async def discover(self) -> int:
        """Fetch the record of every topic member and hand the valid ones on."""
        own = self.identity.peer_id
        members = sorted((await self.members()) - {own})
        limit = asyncio.Semaphore(8)

        async def one(pid: str) -> PeerRecord | None:
            async with limit:
                return await self.fetch_record(pid)

        results = await asyncio.gather(*(one(pid) for pid in members), return_exceptions=True)
        found = 0
        for pid, result in zip(members, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("looking up peer %s failed: %s", pid[:16], result)
            elif result is not None:
                found += 1
                self.on_record(result)
        return found

    async def _resolve(self, addrs: tuple[Address, ...]) -> list[Address]:
        loop = asyncio.get_running_loop()
        out: list[Address] = []
        for host, port in addrs:
            try:
                infos = await loop.getaddrinfo(host, port, family=socket.AF_INET,
                                               type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("cannot resolve bootstrap peer %s:%s: %s", host, port, exc)
                continue
            if infos:
                out.append((str(infos[0][4][0]), int(infos[0][4][1])))
        return out


