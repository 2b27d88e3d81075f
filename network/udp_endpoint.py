"""One UDP socket for the QUIC connections a node accepts and for those it dials.

A node's record names one UDP address. When the connections it dials leave from that same
socket, every peer sees them come from one port: behind a NAT that keeps a mapping per source
port ("cone"), peers on different addresses then see the same external address, which is how the
node learns its NAT type (``network.nat_type``), and a hole punched from that port is one the
node's own QUIC endpoint can use.

``SharedEndpoint`` is aioquic's ``QuicServer`` that also carries dialled connections: a datagram
whose destination connection id is one of a dialled connection's goes to it, anything else to
the server (which creates connections for new clients, with Retry, as before). A dialled
connection sends through a ``DialledTransport``, whose ``close`` only forgets the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header


class SharedEndpoint(QuicServer):
    """The QUIC server socket, shared with the connections this node dials."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dialled: dict[bytes, QuicConnectionProtocol] = {}

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def can_reach(self, addr: tuple[str, int]) -> bool:
        """Whether a datagram to ``addr`` can leave this socket (the family and the bound
        address allow it); where not, a connection dials from a socket of its own."""
        if self._transport is None or self._transport.is_closing():
            return False
        try:
            bound = ipaddress.ip_address(self.local_address[0])
            target = ipaddress.ip_address(addr[0])
        except ValueError:
            return False
        if bound.version != target.version:
            return False
        if bound.is_unspecified:
            return True
        return bound.is_loopback == target.is_loopback

    def attach(self, protocol: QuicConnectionProtocol, quic: QuicConnection) -> None:
        """Send and receive ``protocol``'s packets (a client connection) on this socket."""
        protocol._connection_id_issued_handler = (
            lambda cid: self._dialled.__setitem__(cid, protocol))
        protocol._connection_id_retired_handler = (
            lambda cid: self._dialled.pop(cid, None))
        protocol._connection_terminated_handler = (
            lambda: self.detach(protocol))
        self._dialled[quic.host_cid] = protocol
        protocol.connection_made(DialledTransport(self, protocol))

    def detach(self, protocol: QuicConnectionProtocol) -> None:
        for cid, proto in list(self._dialled.items()):
            if proto is protocol:
                del self._dialled[cid]

    def send_raw(self, data: bytes, addr: tuple[str, int], *, ttl: int | None = None) -> None:
        """A datagram from the node's own port; with ``ttl``, one that goes only that many
        hops (a hole punch that opens our NAT's mapping without reaching the other's)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if ttl is None:
            transport.sendto(data, addr)
            return
        sock = transport.get_extra_info("socket")
        v6 = sock.family == socket.AF_INET6
        level, option = ((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) if v6
                         else (socket.IPPROTO_IP, socket.IP_TTL))
        before = sock.getsockopt(level, option)
        sock.setsockopt(level, option, ttl)
        try:
            # Sent at once unless the socket's buffer is full (then later, at the usual TTL:
            # one punch of several, no harm).
            transport.sendto(data, addr)
        finally:
            sock.setsockopt(level, option, before)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self._dialled and isinstance(data, bytes):
            try:
                header = pull_quic_header(
                    Buffer(data=data), host_cid_length=self._configuration.connection_id_length)
            except ValueError:
                return
            protocol = self._dialled.get(header.destination_cid)
            if protocol is not None:
                protocol.datagram_received(data, addr)
                return
        super().datagram_received(data, addr)

    def close(self) -> None:
        for protocol in set(self._dialled.values()):
            protocol.close()
        self._dialled.clear()
        super().close()


class DialledTransport(asyncio.DatagramTransport):
    """A dialled connection's view of the shared socket."""

    def __init__(self, endpoint: SharedEndpoint, protocol: QuicConnectionProtocol) -> None:
        super().__init__()
        self._endpoint = endpoint
        self._protocol = protocol
        self._closed = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not self._closed:
            self._endpoint.send_raw(bytes(data), addr)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._endpoint.detach(self._protocol)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._endpoint._transport
        return transport.get_extra_info(name, default) if transport is not None else default
