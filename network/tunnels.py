"""QUIC connections through a relay: dialling a peer behind NAT, and serving the tunnels a relay
opens to us.

How a tunnel works (a stream spliced by the relay, QUIC datagrams framed on it) is in
``network.relay_tunnel``; the relay's own side is ``network.relay``. Here, ``RelayTunnels.dial``
asks a relay for a tunnel (``relay_tunnel {target}``) and runs a client QUIC connection over it;
``serve_incoming`` is the stream handler for ``relay_incoming``: a QUIC server on the tunnel, as
on the UDP port. Either way the connection then goes through the identity exchange like a direct
one, and its datagrams are dropped rather than queued once the relay stream holds
``TransportLimits.send_buffer`` bytes unacknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from network import quic
from network.limits import TransportLimits
from network.messages import Envelope, encode
from network.peer_errors import PeerClosed, PeerTimeout, PeerUnreachable, RemoteError
from network.relay_tunnel import StreamDatagramTransport, pump
from network.stream_protocol import EnvelopeReader, result_of
from network.streams import read_envelope

log = logging.getLogger("remote_network.transport.tunnels")

# A tunnel to a peer through a relay: asked of the relay, and opened by it to the peer.
RELAY_TUNNEL = "relay_tunnel"
RELAY_INCOMING = "relay_incoming"
# QUIC packets in a tunnel: as large as aioquic can build (it writes packet and frame lengths as
# 2-byte varints, at most 16383: past that, its frames come out garbled).
TUNNEL_DATAGRAM_SIZE = 16000


class TunnelConfig(Protocol):
    """What tunnels need of the transport's settings."""

    connect_timeout: float
    handshake_timeout: float
    limits: TransportLimits


class TunnelHost(quic.ConnectionHost, Protocol):
    """The transport a tunnel's connection belongs to, and that reaches the relay."""

    @property
    def peer_id(self) -> str: ...

    async def connect(self, peer_id: str, *,
                      timeout: float | None = None) -> quic.PeerConnection: ...


def tunnel_configuration(config: QuicConfiguration) -> QuicConfiguration:
    """``config`` for a tunnel: a byte stream, not a path with an MTU, so its QUIC packets can
    be large, which makes for far fewer packets (and less work for three QUIC stacks) per byte."""
    return dataclasses.replace(config, max_datagram_size=TUNNEL_DATAGRAM_SIZE)


class RelayTunnels:
    """Tunnels through relays, for the connections of one transport."""

    def __init__(self, host: TunnelHost, config: TunnelConfig, *,
                 accepts_from: Callable[[str], bool] | None = None) -> None:
        self.host = host
        self.config = config
        # The peers whose tunnels to us are accepted (our relay, when we are behind NAT).
        self.accepts_from: Callable[[str], bool] = accepts_from or (lambda _peer: False)
        self.opened = 0
        self._client_config: QuicConfiguration | None = None
        self._server_config: QuicConfiguration | None = None

    def configure(self, *, client: QuicConfiguration, server: QuicConfiguration) -> None:
        """The QUIC settings of the transport, which tunnels use with large datagrams."""
        self._client_config = tunnel_configuration(client)
        self._server_config = tunnel_configuration(server)

    def _where(self, relay: str) -> tuple[str, int]:
        """The address QUIC sees for a new tunnel (a name, not a socket address)."""
        self.opened += 1
        return (f"relay-{relay[:16]}", self.opened)

    def _connection(self, *args: Any, **kwargs: Any) -> quic.PeerConnection:
        return quic.PeerConnection(*args, host=self.host,
                                   handshake_timeout=self.config.handshake_timeout,
                                   limits=self.config.limits, **kwargs)

    def _datagrams(self, relay_conn: quic.PeerConnection, writer: asyncio.StreamWriter,
                   where: tuple[str, int]) -> StreamDatagramTransport:
        stream_id = writer.get_extra_info("stream_id")
        return StreamDatagramTransport(writer, where,
                                       backlog=lambda: relay_conn.stream_buffered(stream_id),
                                       limit=self.config.limits.send_buffer)

    async def dial(self, peer_id: str, relay: str) -> quic.PeerConnection:
        """A QUIC connection to ``peer_id`` whose packets go through ``relay``, connected but
        not yet identified (the caller runs the identity exchange, as for a direct one)."""
        assert self._client_config is not None, "configure() first"
        relay_conn = await self.host.connect(relay)
        reader, writer = await relay_conn.create_stream()
        writer.write(encode(Envelope.new(RELAY_TUNNEL, {"target": peer_id},
                                         source_peer_id=self.host.peer_id)))
        envelopes = EnvelopeReader(relay)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                reply = await read_envelope(reader, envelopes)
        except TimeoutError as exc:
            writer.close()
            raise PeerTimeout(peer_id, f"relay {relay[:16]} did not open a tunnel") from exc
        if reply is None:
            raise PeerClosed(peer_id, f"relay {relay[:16]} closed the tunnel")
        try:
            result_of(relay, RELAY_TUNNEL, reply)
        except RemoteError as exc:
            writer.close()
            raise PeerUnreachable(peer_id, f"relay {relay[:16]}: {exc.reason}") from exc
        where = self._where(relay)
        conn = self._connection(QuicConnection(configuration=self._client_config))
        conn.relayed_via = relay
        conn.connection_made(self._datagrams(relay_conn, writer, where))
        conn._spawn(pump(reader, conn, where, envelopes.tail()))
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                conn.connect(where)
                await conn.wait_connected()
        except BaseException as exc:
            conn.close()
            conn._transport.close()
            if isinstance(exc, TimeoutError):
                raise PeerTimeout(peer_id, "no QUIC answer through the relay") from exc
            if isinstance(exc, ConnectionError):
                raise PeerUnreachable(peer_id, f"through the relay: {exc}") from exc
            raise
        return conn

    async def serve_incoming(self, relay_conn: quic.PeerConnection, request: Envelope,
                             reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             tail: bytes) -> None:
        """A relay opened a tunnel from another peer: serve QUIC on it, as on our UDP port."""
        if not self.accepts_from(relay_conn.peer_id or ""):
            log.info("refused a tunnel from %s, which is not our relay", relay_conn.peer_id)
            writer.close()
            return
        assert self._server_config is not None, "configure() first"
        where = self._where(relay_conn.peer_id or "?")
        made: list[quic.PeerConnection] = []

        def create_protocol(*args: Any, **kwargs: Any) -> quic.PeerConnection:
            conn = self._connection(*args, **kwargs)
            conn.relayed_via = relay_conn.peer_id
            made.append(conn)
            return conn

        tunnel = self._datagrams(relay_conn, writer, where)
        server = QuicServer(configuration=self._server_config, create_protocol=create_protocol)
        server.connection_made(tunnel)
        try:
            await pump(reader, server, where, tail)
        finally:
            for conn in made:
                conn.close_with("relay tunnel closed")
            tunnel.close()
