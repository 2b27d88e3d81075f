"""NAT type and hole punching across real NAT routers in network namespaces.

A public segment holds a relay R, an observer O and a public peer Q; four sites sit behind
routers that masquerade: A and B cone-like (``MASQUERADE``), C and D symmetric-like
(``MASQUERADE --random-fully``). Each peer behind NAT keeps a session with R, learns its NAT
type from R and O, and is reached through R first. For each pair the test checks the detected
types, whether the pair ends direct (the target's router counts the UDP bytes its peer sent
straight to the other side, which is more than the blob only when the blob went direct), and
that a blob fetched across the pair, and the output of a job run across it on an input of the
requester's, arrive byte-exact whichever path they took.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.nat_lab import NatLab, PeerProcess, Site

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables"),
]

BLOB_MIB = 2
R_IP, O_IP, Q_IP = 10, 12, 13


class World:
    def __init__(self, lab: NatLab) -> None:
        self.lab = lab
        self.a, self.b = lab.site(symmetric=False), lab.site(symmetric=False)
        self.c, self.d = lab.site(symmetric=True), lab.site(symmetric=True)
        self.relay = lab.public_peer(R_IP, "relay", relay=True)
        self.observer = lab.public_peer(O_IP, "observer")
        self.public = lab.public_peer(Q_IP, "public")
        self.site_peers = {site: lab.lan_peer(site, name)
                           for site, name in ((self.a, "a"), (self.b, "b"), (self.c, "c"),
                                              (self.d, "d"))}
        self.nat: dict[str, dict[str, object]] = {}
        book = {p.peer_id: {"addresses": [[p.host, p.port]]}
                for p in (self.relay, self.observer, self.public)}
        book.update({p.peer_id: {"relay": self.relay.peer_id}
                     for p in self.site_peers.values()})
        for peer in lab.peers:
            peer.call("book", peers=book)
        for peer in self.site_peers.values():
            peer.call("register", relay=self.relay.peer_id)
        observers = [self.relay.peer_id, self.observer.peer_id]
        for peer in [self.public, *self.site_peers.values()]:
            self.nat[peer.peer_id] = peer.call("observe", observers=observers)
        typed = {pid: {**book[pid], "nat_type": info["nat_type"]}
                 for pid, info in self.nat.items()}
        for peer in lab.peers:
            peer.call("book", peers=typed)

    def peer(self, site: Site) -> PeerProcess:
        return self.site_peers[site]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    lab = NatLab(tmp_path_factory.mktemp("natlab"))
    try:
        lab.create([R_IP, O_IP, Q_IP])
        yield World(lab)
    finally:
        lab.delete()


def test_each_peer_learns_its_nat_type(world: World) -> None:
    pub = world.lab.prefix
    assert world.nat[world.public.peer_id] == {"nat_type": "public",
                                                "address": [f"{pub}.{Q_IP}",
                                                            world.public.port]}
    for site in (world.a, world.b):
        peer = world.peer(site)
        # Cone: both observers see the router's address, with the peer's own port kept.
        assert world.nat[peer.peer_id] == {"nat_type": "cone",
                                            "address": [site.wan_ip, peer.port]}
    for site in (world.c, world.d):
        assert world.nat[world.peer(site).peer_id] == {"nat_type": "symmetric",
                                                        "address": None}


def _cross(world: World, requester: PeerProcess, target: PeerProcess, target_site: Site,
           toward_ip: str) -> tuple[dict[str, object], int]:
    """Reach ``target`` from ``requester``, fetch a blob it holds, and run a job on it over a
    blob of ours; the UDP bytes ``target`` sent straight to ``toward_ip`` (its router counts)."""
    target_site.count_udp_to(toward_ip)
    sha = target.call("blob", mib=BLOB_MIB)["sha256"]
    got = requester.call("reach", peer=target.peer_id, sha256=sha)
    assert got["relayed_first"] is True  # a peer behind NAT is always reached via R first
    assert got["ping"] == target.peer_id
    assert got["fetched"] == BLOB_MIB * 1024 * 1024 and got["sha_ok"] is True
    # A job across the pair: the target fetches our input, runs cat, we fetch its output.
    service_id = target.call("service")["service_id"]
    mine = requester.call("blob", mib=1)["sha256"]
    job = requester.call("job", peer=target.peer_id, service_id=service_id, sha256=mine)
    assert job["outcome"] == "COMPLETED", job["why"]
    assert job["output_sha256"] == mine and job["output_here"] is True  # byte-exact
    return got, target_site.udp_bytes_to(toward_ip)


def _print_upgrade(name: str, got: dict[str, object]) -> None:
    times = sorted(got["upgrade_ms"])  # type: ignore[arg-type]
    if times:
        print(f"{name}: relayed to direct in {times[len(times) // 2]} ms (p50), "
              f"{times[-1]} ms (max)")


def test_cone_and_public_end_direct(world: World) -> None:
    target = world.peer(world.a)
    got, direct_bytes = _cross(world, world.public, target, world.a,
                               f"{world.lab.prefix}.{Q_IP}")
    _print_upgrade("cone<->public", got)
    assert got["direct"] is True
    assert direct_bytes > BLOB_MIB * 1024 * 1024  # the blob crossed router A straight to Q


def test_cone_and_cone_end_direct(world: World) -> None:
    requester, target = world.peer(world.a), world.peer(world.b)
    got, direct_bytes = _cross(world, requester, target, world.b, world.a.wan_ip)
    _print_upgrade("cone<->cone", got)
    assert got["direct"] is True
    assert direct_bytes > BLOB_MIB * 1024 * 1024


def test_cone_and_symmetric_stay_relayed_and_work(world: World) -> None:
    """The symmetric side's router picks a new port toward the cone side, which the cone
    side's router (filtering on the remote port, as Linux conntrack does) never saw asked
    for: the punch fails, the relayed path carries the blob."""
    requester, target = world.peer(world.a), world.peer(world.c)
    got, direct_bytes = _cross(world, requester, target, world.c, world.a.wan_ip)
    assert got["attempts"] >= 1  # a punch was tried
    assert got["direct"] is False
    assert direct_bytes < BLOB_MIB * 1024 * 1024 // 4  # the blob went through the relay


def test_symmetric_pairs_do_not_punch_and_work_relayed(world: World) -> None:
    requester, target = world.peer(world.c), world.peer(world.d)
    got, direct_bytes = _cross(world, requester, target, world.d, world.c.wan_ip)
    assert got["attempts"] == 0
    assert got["direct"] is False
    assert direct_bytes == 0
