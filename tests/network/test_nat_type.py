"""The NAT type: the rule on observations (no sockets), hostile answers, and real transports on
127.0.0.0/8 where observers on three loopback addresses see the node as it is (public)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from network.nat_type import (
    OBSERVE_ADDRESS,
    NatObserver,
    NatType,
    Observation,
    classify,
    observed_address,
)
from network.peer_errors import RemoteError
from tests.support.transports import relayed, transports

LOCAL = ("192.168.1.10", 30070)


def obs(observer: str, seen: tuple[str, int], local: tuple[str, int] = LOCAL) -> Observation:
    return Observation(observer, local, seen)


def test_every_observer_seeing_our_own_address_is_public() -> None:
    assert classify([obs("1.1.1.1", LOCAL), obs("2.2.2.2", LOCAL)]) == (NatType.PUBLIC, LOCAL)


def test_one_external_address_for_every_observer_is_cone() -> None:
    seen = ("203.0.113.7", 30070)
    assert classify([obs("1.1.1.1", seen), obs("2.2.2.2", seen)]) == (NatType.CONE, seen)


def test_a_port_per_observer_is_symmetric() -> None:
    got = classify([obs("1.1.1.1", ("203.0.113.7", 40001)),
                    obs("2.2.2.2", ("203.0.113.7", 40002))])
    assert got == (NatType.SYMMETRIC, None)


def test_too_few_distinct_observers_is_unknown() -> None:
    seen = ("203.0.113.7", 30070)
    assert classify([]) == (NatType.UNKNOWN, None)
    # Two answers from one address are one observer: a liar cannot vote twice.
    assert classify([obs("1.1.1.1", seen), obs("1.1.1.1", seen)])[0] is NatType.UNKNOWN
    # A peer on our side of the NAT sees our own address and tells nothing of the NAT.
    assert classify([obs("192.168.1.11", LOCAL), obs("1.1.1.1", seen)]) \
        == (NatType.UNKNOWN, seen)


@pytest.mark.parametrize("answer", [
    None, [], "1.2.3.4:5", {"address": "1.2.3.4:5"}, {"address": ["1.2.3.4"]},
    {"address": ["1.2.3.4", 0]}, {"address": ["1.2.3.4", 70000]},
    {"address": ["1.2.3.4", True]}, {"address": ["1.2.3.4", 5.0]},
    {"address": ["not-an-ip", 5]}, {"address": ["1" * 200, 5]}, {"address": [5, 5]},
])
def test_answers_that_are_not_addresses_are_ignored(answer: object) -> None:
    assert observed_address(answer) is None


def test_an_address_answer_reads_back_normalised() -> None:
    assert observed_address({"address": ["::1", 5]}) == ("::1", 5)
    assert observed_address({"address": ["10.0.0.1", 65535]}) == ("10.0.0.1", 65535)


async def test_observers_on_three_loopback_addresses_see_a_public_node(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        node = await net.add(name="node")
        observers = [await net.add(name=f"o{i}", host=f"127.0.0.{i}") for i in (2, 3, 4)]
        for o in observers:
            net.addresses[o.peer_id] = [(o.config.host, o.port)]
        changes: list[tuple[NatType, object]] = []
        observer = NatObserver(node, lambda: [o.peer_id for o in observers],
                               on_change=lambda t, a: changes.append((t, a)))
        got = await observer.observe()
        assert got == (NatType.PUBLIC, ("127.0.0.1", node.port))
        assert changes == [got]
        assert observer.public_endpoint == f"127.0.0.1:{node.port}"
        # Each observer saw the node's QUIC port itself: the dials left from that socket.
        for o in observers:
            answer = await o.request(node.peer_id, OBSERVE_ADDRESS, {})
            assert answer["address"] == [o.config.host, o.port]
        assert await observer.observe() == got
        assert len(changes) == 1  # no change, nothing told


async def test_one_observer_address_is_not_enough(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        node = await net.add(name="node")
        same_ip = [await net.add(name=f"o{i}") for i in range(3)]  # all on 127.0.0.1
        observer = NatObserver(node, lambda: [o.peer_id for o in same_ip])
        assert await observer.observe() == (NatType.UNKNOWN, None)
        assert observer.public_endpoint == ""


async def test_a_relayed_connection_has_no_address_to_observe(tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        _, nat, x, _ = await relayed(net)
        with pytest.raises(RemoteError, match="relayed"):
            await x.request(nat.peer_id, OBSERVE_ADDRESS, {})


async def test_the_type_is_learned_again_when_the_node_addresses_change(
        tmp_path: Path) -> None:
    async with transports(tmp_path) as net:
        node = await net.add(name="node")
        observers = [await net.add(name=f"o{i}", host=f"127.0.0.{i}") for i in (2, 3)]
        addresses = ["192.168.1.10"]
        asked: list[int] = []
        observer = NatObserver(node, lambda: (asked.append(1), [o.peer_id for o in observers])[1],
                               local_addresses=lambda: list(addresses), check_every=0.05,
                               relearn_every=3600)
        observer.start()
        try:
            async with asyncio.timeout(5):
                while observer.nat_type is not NatType.PUBLIC:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            settled = len(asked)  # known and unchanged: not asked again
            assert settled == 1
            addresses.append("10.0.0.7")  # a new interface address
            async with asyncio.timeout(5):
                while len(asked) == settled:
                    await asyncio.sleep(0.02)
            observer.relearn()  # and when told to (a new relay, new peers)
            async with asyncio.timeout(5):
                while len(asked) == settled + 1:
                    await asyncio.sleep(0.02)
        finally:
            await observer.stop()
