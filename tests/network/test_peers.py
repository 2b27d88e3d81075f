"""The peer directory: records and live contacts in, API rows and change events out."""

from __future__ import annotations

import pytest

from network.identity import Identity
from network.peers import PeerDirectory
from network.records import NatFacts, PeerRecord

TOPIC = "remote-network-mesh"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Setup = tuple[PeerDirectory, Clock, list[tuple[str, str]]]


@pytest.fixture
def setup() -> Setup:
    clock, events = Clock(), []
    directory = PeerDirectory("f" * 40, TOPIC, stale_after=60, clock=clock,
                              on_change=lambda pid, action: events.append((pid, action)))
    return directory, clock, events


def record(identity: Identity, seq: int, ts: float, **changes: object) -> PeerRecord:
    fields: dict[str, object] = {"peer_id": identity.peer_id,
                                 "public_key": identity.public_key_hex, "seq": seq,
                                 "timestamp": ts, "topic": TOPIC, "files_count": 1,
                                 "quic_addresses": (("10.0.0.1", 30070),)}
    fields.update(changes)
    return PeerRecord(**fields)  # type: ignore[arg-type]


def test_record_adds_a_peer_with_the_documented_fields(setup: Setup) -> None:
    directory, clock, events = setup
    peer = Identity.generate()
    assert directory.update_from_record(record(
        peer, 1, clock.now - 5, is_relay=True, apps_count=3, dht_node_id="ab" * 20,
        nat=NatFacts(True, "full_cone", True, "cd" * 20)))
    row = directory.get(peer.peer_id).to_api()  # type: ignore[union-attr]
    assert row == {
        "peer_id": peer.peer_id, "dht_node_id": "ab" * 20, "is_relay": True, "is_store": True,
        "files_count": 1, "apps_count": 3, "last_seen": "2023-11-14T22:13:15Z",
        "topic": TOPIC, "source": "dht", "is_behind_nat": True, "nat_type": "full_cone",
        "using_relay": True, "connected_relay_id": "cd" * 20,
        # Beside the reference's fields: the content digests of the services it offers.
        "service_digests": [],
    }
    assert events == [(peer.peer_id, "added")]
    assert directory.quic_addresses(peer.peer_id) == [("10.0.0.1", 30070)]


def test_updates_emit_only_on_visible_change_and_never_roll_back(setup: Setup) -> None:
    directory, clock, events = setup
    peer = Identity.generate()
    directory.update_from_record(record(peer, 1, clock.now))
    clock.now += 10
    assert not directory.update_from_record(record(peer, 2, clock.now))  # only last_seen moved
    assert directory.get(peer.peer_id).last_seen == clock.now  # type: ignore[union-attr]
    assert directory.update_from_record(record(peer, 3, clock.now, files_count=4))
    assert not directory.update_from_record(record(peer, 2, clock.now, files_count=9))
    assert directory.get(peer.peer_id).to_api()["files_count"] == 4  # type: ignore[union-attr]
    assert [a for _, a in events] == ["added", "updated"]


def test_own_record_and_other_topics_are_ignored(setup: Setup) -> None:
    directory, clock, _ = setup
    other = Identity.generate()
    assert not directory.update_from_record(record(other, 1, clock.now, topic="elsewhere"))
    mine = record(other, 1, clock.now, peer_id="f" * 40)
    assert not directory.update_from_record(mine)
    assert len(directory) == 0


def test_old_record_of_a_gone_peer_is_not_listed(setup: Setup) -> None:
    directory, clock, events = setup
    peer = Identity.generate()
    assert not directory.update_from_record(record(peer, 1, clock.now - 3600))
    assert peer.peer_id not in directory and events == []


def test_offline_record_removes_and_stale_peers_expire(setup: Setup) -> None:
    directory, clock, events = setup
    leaving, silent = Identity.generate(), Identity.generate()
    directory.update_from_record(record(leaving, 1, clock.now))
    directory.update_from_record(record(silent, 1, clock.now))
    directory.update_from_record(record(leaving, 2, clock.now, online=False))
    assert leaving.peer_id not in directory
    clock.now += 30
    assert directory.expire() == []
    clock.now += 31
    assert directory.expire() == [silent.peer_id]
    assert (silent.peer_id, "removed") in events and (leaving.peer_id, "removed") in events


def test_live_contact_adds_and_keeps_a_peer_fresh(setup: Setup) -> None:
    directory, clock, events = setup
    peer = Identity.generate()
    directory.mark_seen(peer.peer_id, "quic", address=("10.0.0.9", 4433))
    row = directory.get(peer.peer_id).to_api()  # type: ignore[union-attr]
    assert row["source"] == "quic" and row["dht_node_id"] == ""
    assert directory.quic_addresses(peer.peer_id) == [("10.0.0.9", 4433)]
    directory.update_from_record(record(peer, 1, clock.now))
    assert directory.get(peer.peer_id).source == "dht"  # type: ignore[union-attr]
    assert directory.quic_addresses(peer.peer_id) == [("10.0.0.1", 30070), ("10.0.0.9", 4433)]
    clock.now += 50
    directory.mark_seen(peer.peer_id)
    clock.now += 50
    assert directory.expire() == []  # the contact 50 s ago keeps it
    directory.mark_seen("f" * 40)
    assert len(directory) == 1
    assert events == [(peer.peer_id, "added"), (peer.peer_id, "updated")]


def test_a_record_with_a_non_finite_time_is_ignored(setup: Setup) -> None:
    directory, _clock, events = setup
    peer = Identity.generate()
    for ts in (float("nan"), float("inf")):
        assert not directory.update_from_record(record(peer, 1, ts))
    assert peer.peer_id not in directory and events == []


def test_the_directory_is_bounded_and_keeps_the_peers_it_holds() -> None:
    clock = Clock()
    directory = PeerDirectory("f" * 40, TOPIC, stale_after=60, max_peers=3, clock=clock)
    verified = [Identity.generate() for _ in range(2)]
    for peer in verified:
        assert directory.update_from_record(record(peer, 1, clock.now))
    contact = Identity.generate()
    directory.mark_seen(contact.peer_id, address=("10.0.0.9", 1))
    # Full: a live contact that brings no record is not listed.
    directory.mark_seen(Identity.generate().peer_id)
    assert len(directory) == 3
    # A newcomer with a verified record takes the place of the contact without a record.
    newcomer = Identity.generate()
    assert directory.update_from_record(record(newcomer, 1, clock.now))
    assert contact.peer_id not in directory and newcomer.peer_id in directory
    # Full of verified peers: the next newcomer waits until one goes stale.
    late = Identity.generate()
    assert not directory.update_from_record(record(late, 1, clock.now))
    assert {p.peer_id for p in directory.all()} == {newcomer.peer_id,
                                                    *(p.peer_id for p in verified)}
    clock.now += 61
    assert directory.update_from_record(record(late, 2, clock.now))
    assert late.peer_id in directory and len(directory) == 1
