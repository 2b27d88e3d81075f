"""A small internet in network namespaces: a public segment and sites behind NAT routers.

A core router namespace links the public segment, a namespace whose addresses serve the peers
that run there (a relay, observers, a public peer), and the sites. Each site is a router
namespace, on its own link to the core, which masquerades its LAN (Linux's ``MASQUERADE`` keeps
source ports where it can: cone-like mapping; with ``--random-fully`` a new port per
destination: symmetric), and a LAN namespace holding one peer. The router's conntrack filters
what comes in to the flows its LAN opened, as home routers do.

Peers run as ``tests.support.nat_peer`` child processes driven over their stdin and stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LAN_IP, LAN_GW = "192.168.1.2", "192.168.1.1"


def sh(*argv: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


class PeerProcess:
    """One ``nat_peer`` child: ``call`` sends a command and reads its answer."""

    def __init__(self, ns: str, host: str, root: Path, *, relay: bool = False) -> None:
        args = [sys.executable, "-m", "tests.support.nat_peer", "--host", host,
                "--dir", str(root)] + (["--relay"] if relay else [])
        self.host = host
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(root.with_suffix(".log"), "w"),  # noqa: SIM115
                                     text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        hello = self._read()
        self.peer_id: str = hello["peer_id"]
        self.port: int = hello["port"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer process on {self.host} ended: rc={self.proc.poll()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"{cmd} on {self.host}: {answer['error']}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


class Site:
    """A router namespace, on its own link to the core, and the LAN namespace behind it."""

    def __init__(self, lab: NatLab, index: int, *, symmetric: bool) -> None:
        self.router, self.lan = f"rnr{lab.tag}{index}", f"rnl{lab.tag}{index}"
        self.wan_if, self.lan_if = f"rw{lab.tag}{index}", f"rl{lab.tag}{index}"
        self.index = index
        self.wan_net = f"10.{220 + index}.{lab.octet}"
        self.wan_ip = f"{self.wan_net}.2"
        self.symmetric = symmetric
        self.lab = lab

    def create(self) -> None:
        lab, tag, i = self.lab, self.lab.tag, self.index
        for ns in (self.router, self.lan):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        lab.link(self.router, self.wan_if, self.wan_ip, f"rc{tag}{i}", f"{self.wan_net}.1")
        sh("ip", "route", "add", "default", "via", f"{self.wan_net}.1", ns=self.router)
        lan_leg = f"rn{tag}{i}"
        sh("ip", "link", "add", self.lan_if, "type", "veth", "peer", "name", lan_leg)
        sh("ip", "link", "set", self.lan_if, "netns", self.router)
        sh("ip", "link", "set", lan_leg, "netns", self.lan)
        sh("ip", "addr", "add", f"{LAN_GW}/24", "dev", self.lan_if, ns=self.router)
        sh("ip", "link", "set", self.lan_if, "up", ns=self.router)
        sh("ip", "addr", "add", f"{LAN_IP}/24", "dev", lan_leg, ns=self.lan)
        sh("ip", "link", "set", lan_leg, "up", ns=self.lan)
        sh("ip", "route", "add", "default", "via", LAN_GW, ns=self.lan)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.router)
        masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", self.wan_if,
                      "-j", "MASQUERADE"]
        sh(*masquerade, *(["--random-fully"] if self.symmetric else []), ns=self.router)

    def count_udp_to(self, ip: str) -> None:
        """Count what the LAN peer sends to ``ip`` through the router (read by ``udp_bytes_to``)."""
        sh("iptables", "-A", "FORWARD", "-s", LAN_IP, "-d", ip, "-p", "udp", ns=self.router)

    def udp_bytes_to(self, ip: str) -> int:
        out = sh("iptables", "-L", "FORWARD", "-v", "-n", "-x", ns=self.router)
        total = 0
        for line in out.splitlines():
            cols = line.split()
            udp = {"udp", "17"} & set(cols[2:4])
            if len(cols) >= 8 and udp and cols[-2] == LAN_IP and cols[-1] == ip:
                total += int(cols[1])
        return total

    def delete(self) -> None:
        for ns in (self.lan, self.router):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class NatLab:
    """A core router namespace between a public segment and the sites' routers, so that
    packets cross routers as on the internet."""

    def __init__(self, root: Path) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.octet = 100 + int(self.tag, 16) % 150
        self.prefix = f"10.214.{self.octet}"
        self.pub, self.core = f"rnp{self.tag}", f"rnc{self.tag}"
        self.root = root
        self.sites: list[Site] = []
        self.peers: list[PeerProcess] = []

    def link(self, ns: str, ns_if: str, ns_ip: str, core_if: str, core_ip: str) -> None:
        """A /24 link between ``ns`` and the core router."""
        sh("ip", "link", "add", ns_if, "type", "veth", "peer", "name", core_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "link", "set", core_if, "netns", self.core)
        sh("ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if, ns=ns)
        sh("ip", "link", "set", ns_if, "up", ns=ns)
        sh("ip", "addr", "add", f"{core_ip}/24", "dev", core_if, ns=self.core)
        sh("ip", "link", "set", core_if, "up", ns=self.core)

    def create(self, public_ips: list[int]) -> None:
        for ns in (self.core, self.pub):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.core)
        pub_if = f"rpc{self.tag}"
        self.link(self.pub, pub_if, f"{self.prefix}.{public_ips[0]}", f"rcp{self.tag}",
                  f"{self.prefix}.1")
        for last in public_ips[1:]:
            sh("ip", "addr", "add", f"{self.prefix}.{last}/24", "dev", pub_if, ns=self.pub)
        sh("ip", "route", "add", "default", "via", f"{self.prefix}.1", ns=self.pub)

    def site(self, *, symmetric: bool) -> Site:
        site = Site(self, len(self.sites) + 1, symmetric=symmetric)
        self.sites.append(site)
        site.create()
        return site

    def public_peer(self, last: int, name: str, *, relay: bool = False) -> PeerProcess:
        peer = PeerProcess(self.pub, f"{self.prefix}.{last}", self.root / name, relay=relay)
        self.peers.append(peer)
        return peer

    def lan_peer(self, site: Site, name: str) -> PeerProcess:
        peer = PeerProcess(site.lan, LAN_IP, self.root / name)
        self.peers.append(peer)
        return peer

    def delete(self) -> None:
        for peer in self.peers:
            peer.stop()
        for site in self.sites:
            site.delete()
        for ns in (self.pub, self.core):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
