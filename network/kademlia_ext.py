"""Our extensions of the ``kademlia`` package (which stores opaque scalars, overwriting on STORE).

- ``ValidatingStorage`` keeps only our two kinds of value. A signed peer record is kept only when
  it verifies, sits under its own peer id's key and is newer than the one held (``RecordBook``);
  signed topic member entries are merged into the table held (``network.topic.MemberTable``), so
  every member is listed, not the last writer, and one source cannot push the others out. Keys,
  keys per source and members per source are capped; values expire by the time we received
  them. Every STORE path (the RPC, a local ``set``, the hand-over to a new neighbour) goes
  through it.
- ``RecordProtocol`` answers STORE with whether the value was kept, has a configurable RPC timeout
  (kademlia waits 5 s for a dead peer), reports new contacts, names the sender's address as the
  source of what it stores, bounds hand-overs, and hardens rpcudp's datagram handling.
- ``CollectingCrawl`` returns every distinct value found instead of the most common one, so a
  reader can pick the newest record and merge topic values from several holders.
- ``RecordServer`` puts them together, with a ``set`` that survives dead neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from itertools import takewhile
from typing import Any

import umsgpack
from kademlia.crawling import NodeSpiderCrawl, ValueSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node as KNode
from kademlia.protocol import KademliaProtocol
from kademlia.storage import ForgetfulStorage
from kademlia.utils import digest

from network import topic as topics
from network.records import (
    MAX_CLOCK_SKEW,
    PeerRecord,
    RecordBook,
    RecordError,
    StaleRecord,
    is_record_value,
    parse_record,
)

log = logging.getLogger("remote_network.dht")

Address = tuple[str, int]
DEFAULT_MAX_VALUES = 4096
DEFAULT_PER_SOURCE = 256
# A datagram longer than kademlia's own message cap (8 KB plus the header) is not read.
MAX_DATAGRAM = 8192 + 64
# Hand-overs to new neighbours in flight at once; more new contacts wait for the next.
MAX_HANDOVERS = 256


def quiet_library_logs() -> None:
    """rpcudp logs every unanswered RPC as an error and kademlia every lookup as info; a dead
    peer is routine here, and our own log says what matters."""
    for name, level in (("rpcudp", logging.CRITICAL), ("kademlia", logging.ERROR)):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)


# -- kademlia extensions -----------------------------------------------------------------------
class ValidatingStorage(ForgetfulStorage):
    """Stores signed peer records (newest wins) and topic member tables (merged); refuses
    anything else. Bounded: at most ``max_values`` keys, of which one source (a storing node's
    address) may have brought ``per_source``; a value not renewed for ``ttl`` seconds after we
    received it expires. While full of fresh values, a new key is refused rather than pushing
    out one held. Values this node stores itself (``source`` None) are never refused for room.
    """

    def __init__(self, *, topic_ttl: float, ttl: float = 7 * 24 * 3600,
                 max_values: int = DEFAULT_MAX_VALUES, per_source: int = DEFAULT_PER_SOURCE,
                 members_per_source: int = topics.MAX_PER_SOURCE,
                 on_record: Callable[[PeerRecord, bytes], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(ttl=ttl)
        self.topic_ttl = topic_ttl
        self.max_values = max_values
        self.per_source = per_source
        self.members_per_source = members_per_source
        self.on_record = on_record
        self.clock = clock
        self.book = RecordBook(capacity=max_values, ttl=ttl, clock=clock)
        self.tables: dict[bytes, topics.MemberTable] = {}
        self._source: dict[bytes, str | None] = {}
        self._shares: Counter[str] = Counter()
        self.refused = 0

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.store(key, value)

    def store(self, key: Any, value: Any, *, source: str | None = None) -> bool:
        """Keep ``value`` under ``key`` if acceptable. Returns whether it was kept."""
        if not isinstance(key, bytes) or len(key) != 20:
            return self._refuse(b"?", "key is not a 160-bit id")
        if topics.is_topic_value(value):
            return self._store_members(key, value, source)
        if is_record_value(value):
            return self._store_record(key, value, source)
        return self._refuse(key, "not a peer record or topic value")

    def _store_members(self, key: bytes, value: bytes, source: str | None) -> bool:
        try:
            members = topics.decode(value)
        except topics.TopicError as exc:
            return self._refuse(key, str(exc))
        if digest(members.topic) != key:
            return self._refuse(key, f"members of topic {members.topic[:32]!r} stored under "
                                     "another key")
        table = self.tables.get(key)
        if table is None:
            if refusal := self._room_for(key, source):
                return self._refuse(key, refusal)
            table = topics.MemberTable(members.topic, ttl=self.topic_ttl,
                                       per_source=self.members_per_source)
        offer = table.offer(members, source=source, now=self.clock())
        if offer.changed:
            if key not in self.tables:
                self.tables[key] = table
                self._claim(key, source)
            self._put(key, table.value())
        if offer.refused:
            log.debug("refused %d topic members from %s", offer.refused, source or "here")
        return offer.kept

    def _store_record(self, key: bytes, value: bytes, source: str | None) -> bool:
        try:
            record = self.book.check(value)
        except StaleRecord as exc:
            # Routine: an older copy handed over by a neighbour, or a late duplicate.
            log.debug("kept the newer record for key %s: %s", key.hex()[:16], exc)
            return False
        except RecordError as exc:
            return self._refuse(key, str(exc))
        if digest(record.peer_id) != key:
            return self._refuse(key, f"record of peer {record.peer_id[:16]} stored under "
                                     "another key")
        if record.timestamp < self.clock() - self.ttl - MAX_CLOCK_SKEW:
            return self._refuse(key, f"record of peer {record.peer_id[:16]} is older than "
                                     f"{self.ttl:.0f} s")
        if key not in self.data and (refusal := self._room_for(key, source)):
            return self._refuse(key, refusal)
        try:
            self.book.accept(value, make_room=source is None)
        except RecordError as exc:
            return self._refuse(key, str(exc))
        fresh = key not in self.data or self.data[key][1] != value
        if fresh:
            # The value is attributed to the source that last moved it forward, when that
            # source has room for it.
            if key not in self._source:
                self._claim(key, source)
            elif self._source[key] != source and (
                    source is None or self._shares[source] < self.per_source):
                self._release(key)
                self._claim(key, source)
            self._put(key, value)
        if fresh and self.on_record is not None:
            self.on_record(record, value)
        return True

    def _room_for(self, key: bytes, source: str | None) -> str:
        """Why a new key from ``source`` cannot be held; empty when it can."""
        if source is None:
            return ""
        if self._shares[source] >= self.per_source:
            return f"source {source} already brought {self.per_source} values"
        if len(self.data) >= self.max_values:
            self.expire()
        return "" if len(self.data) < self.max_values else \
            f"storage full ({self.max_values} fresh values held)"

    def _claim(self, key: bytes, source: str | None) -> None:
        self._source[key] = source
        if source is not None:
            self._shares[source] += 1

    def _release(self, key: bytes) -> None:
        self.tables.pop(key, None)
        source = self._source.pop(key, None)
        if source is not None:
            self._shares[source] -= 1
            if self._shares[source] <= 0:
                del self._shares[source]

    def _put(self, key: bytes, value: bytes) -> None:
        """Hold ``value``, born now by our clock (kademlia's birthdays use its own)."""
        self.data.pop(key, None)
        self.data[key] = (self.clock(), value)

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, Any]]:
        """The values born ``seconds_old`` ago or earlier (``data`` is in birth order)."""
        floor = self.clock() - seconds_old
        older = takewhile(lambda item: not item[1][0] > floor, self.data.items())
        return [(key, value) for key, (_born, value) in older]

    def cull(self) -> None:
        for key, _ in self.iter_older_than(self.ttl):
            del self.data[key]
            self._release(key)

    def expire(self) -> int:
        """Drop what has expired: values past ``ttl``, topic members past ``topic_ttl``, book
        entries, and any value that no longer parses. Returns how many keys went."""
        before = len(self.data)
        self.cull()
        now = self.clock()
        for key in list(self.data):
            value = self.data[key][1]
            table = self.tables.get(key)
            if table is not None:
                table.expire(now)
                if len(table):
                    self.data[key] = (self.data[key][0], table.value())
                    continue
            elif is_record_value(value):
                try:
                    parse_record(value)
                    continue
                except RecordError:
                    pass
            del self.data[key]
            self._release(key)
        self.book.expire()
        return before - len(self.data)

    def _refuse(self, key: bytes, reason: str) -> bool:
        self.refused += 1
        # A flood of junk must not become a flood of log lines: the first few, then 1 in 1000.
        level = logging.WARNING if self.refused <= 20 or self.refused % 1000 == 0 \
            else logging.DEBUG
        log.log(level, "dropped a DHT value for key %s: %s (%d dropped so far)",
                key.hex()[:16], reason, self.refused)
        return False


class RecordProtocol(KademliaProtocol):
    storage: ValidatingStorage

    def __init__(self, source_node: KNode, storage: ValidatingStorage, ksize: int, *,
                 wait_timeout: float, on_new_contact: Callable[[], None] | None = None) -> None:
        super().__init__(source_node, storage, ksize)
        self._wait_timeout = wait_timeout
        self.on_new_contact = on_new_contact
        self._handovers: set[asyncio.Future[Any]] = set()

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def _handover(self, node: KNode, key: bytes, value: Any) -> None:
        if not self.closed:
            await self.call_store(node, key, value)

    def close(self) -> None:
        """After the transport is closed: stop hand-overs, settle the RPCs still waiting."""
        for task in list(self._handovers):
            task.cancel()
        for future, timer in list(self._outstanding.values()):
            timer.cancel()
            if not future.done():
                future.set_result((False, None))
        self._outstanding.clear()

    # rpcudp's datagram handling, hardened: junk is ignored, answers never go out on a closed
    # socket, and results are never set on futures whose caller was cancelled.
    async def _solve_datagram(self, datagram: bytes, address: Address) -> None:
        if len(datagram) > MAX_DATAGRAM:
            log.debug("ignored an oversized DHT datagram (%d bytes) from %s", len(datagram),
                      address)
            return
        try:
            await super()._solve_datagram(datagram, address)
        except Exception as exc:
            log.debug("ignored a malformed DHT datagram from %s: %s", address, exc)

    async def _accept_request(self, msg_id: bytes, data: Any, address: Address) -> None:
        if not isinstance(data, list) or len(data) != 2 or not isinstance(data[0], str):
            return
        funcname, args = data
        func = getattr(self, f"rpc_{funcname}", None)
        if func is None or not callable(func) or not isinstance(args, list | tuple):
            return
        try:
            response = func(address, *args)
            if asyncio.iscoroutine(response):
                response = await response
        except Exception as exc:
            log.debug("DHT request %s from %s failed: %s", funcname, address, exc)
            return
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.sendto(b"\x01" + msg_id + umsgpack.packb(response), address)

    def _timeout(self, msg_id: bytes) -> None:
        future, _timer = self._outstanding.pop(msg_id, (None, None))
        if future is not None and not future.done():
            future.set_result((False, None))

    def _accept_response(self, msg_id: bytes, data: Any, address: Address) -> None:
        future, timer = self._outstanding.pop(msg_id, (None, None))
        if future is None:
            return  # a late answer to an RPC that already timed out
        timer.cancel()
        if not future.done():
            future.set_result((True, data))

    def rpc_store(self, sender: Address, nodeid: Any, key: Any, value: Any) -> bool:
        if isinstance(nodeid, bytes) and len(nodeid) == 20:
            self.welcome_if_new(KNode(nodeid, sender[0], sender[1]))
        return self.storage.store(key, value, source=f"{sender[0]}:{sender[1]}")

    def welcome_if_new(self, node: KNode) -> None:
        """As kademlia's, but with the stored key used as the id it already is (kademlia hashes
        it a second time), and with new contacts reported."""
        if self.closed or not self.router.is_new_node(node):
            return
        for key, value in list(self.storage):
            keynode = KNode(key)
            neighbors = self.router.find_neighbors(keynode)
            push = not neighbors
            if neighbors:
                new_close = node.distance_to(keynode) < neighbors[-1].distance_to(keynode)
                self_closest = (self.source_node.distance_to(keynode)
                                < neighbors[0].distance_to(keynode))
                push = new_close and self_closest
            if push and len(self._handovers) < MAX_HANDOVERS:
                task = asyncio.ensure_future(self._handover(node, key, value))
                self._handovers.add(task)
                task.add_done_callback(self._handovers.discard)
        self.router.add_contact(node)
        if self.on_new_contact is not None:
            self.on_new_contact()


class CollectingCrawl(ValueSpiderCrawl):
    """A value lookup that returns every distinct value found in the round that found any."""

    async def _handle_found_values(self, values: list[Any]) -> list[Any]:
        distinct: list[Any] = []
        for value in values:
            if value not in distinct:
                distinct.append(value)
        return distinct


class RecordServer(Server):
    def __init__(self, *, node_id: bytes, storage: ValidatingStorage, rpc_timeout: float,
                 ksize: int = 20, alpha: int = 3,
                 on_new_contact: Callable[[], None] | None = None) -> None:
        super().__init__(ksize=ksize, alpha=alpha, node_id=node_id, storage=storage)
        self.rpc_timeout = rpc_timeout
        self.on_new_contact = on_new_contact

    def _create_protocol(self) -> RecordProtocol:
        return RecordProtocol(self.node, self.storage, self.ksize,
                              wait_timeout=self.rpc_timeout, on_new_contact=self.on_new_contact)

    async def collect(self, key: str, *, local_first: bool = False) -> list[Any]:
        """Every distinct value for ``key``: the one held here and those found on the network
        (skipped when ``local_first`` and one is held here)."""
        dkey = digest(key)
        values: list[Any] = []
        local = self.storage.get(dkey)
        if local is not None:
            values.append(local)
            if local_first:
                return values
        target = KNode(dkey)
        nearest = self.protocol.router.find_neighbors(target)
        if nearest:
            crawl = CollectingCrawl(self.protocol, target, nearest, self.ksize, self.alpha)
            found = await crawl.find()
            for value in found or []:
                if value not in values:
                    values.append(value)
        return values

    async def collect_all(self, key: str) -> list[Any]:
        """Every distinct value for ``key`` held here or by any of the k nodes nearest to it
        (for merged values, where one holder may have seen fewer writers than another)."""
        dkey = digest(key)
        values: list[Any] = []
        local = self.storage.get(dkey)
        if local is not None:
            values.append(local)
        target = KNode(dkey)
        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            return values
        nodes = await NodeSpiderCrawl(self.protocol, target, nearest, self.ksize,
                                      self.alpha).find()
        answers = await asyncio.gather(*(self.protocol.call_find_value(n, target)
                                         for n in nodes))
        for ok, answer in answers:
            if ok and isinstance(answer, dict) and answer.get("value") not in (None, *values):
                values.append(answer["value"])
        return values

    async def set_digest(self, dkey: bytes, value: Any) -> bool:
        """Store on the k nodes nearest ``dkey``; False when none took it. (kademlia's fails
        with a ValueError when every known neighbour is dead; we also keep values we publish
        ourselves, see ``store_here``.)"""
        target = KNode(dkey)
        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            return False
        nodes = await NodeSpiderCrawl(self.protocol, target, nearest, self.ksize,
                                      self.alpha).find()
        if not nodes:
            return False
        results = await asyncio.gather(*(self.protocol.call_store(n, dkey, value)
                                         for n in nodes))
        return any(ok and answer for ok, answer in results)

    def store_here(self, key: str, value: bytes) -> bool:
        return self.storage.store(digest(key), value)
