"""Bulk transfer over a peer connection: fetching a blob, and serving the blobs asked of us.

The two paths and their wire format are described in ``network.bulk``, which holds the blocking
parts (the TLS-over-TCP server and client, the hash-checked sink). This module is the asyncio
side: ``BulkTransfer.fetch`` tries the TCP channel and falls back to a QUIC stream;
``on_offer`` (a request handler for ``bulk_offer``) arms a one-time token; ``send_on_stream``
(a stream handler for ``bulk_get``) writes a blob on the stream it was asked on, paced on what
the peer has acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from network import bulk, quic, relay_splice
from network.limits import TransportLimits
from network.messages import BULK, Envelope, encode
from network.peer_errors import (
    BulkError,
    PeerClosed,
    PeerError,
    PeerTimeout,
    PeerUnreachable,
    RemoteError,
    RequestRejected,
)
from network.stream_protocol import EnvelopeReader, result_of
from network.streams import IncomingRequest, maybe_async, read_envelope

log = logging.getLogger("remote_network.transport.bulk")

# A blob source answers "where is the blob with this sha256?" (None: not here).
BlobSource = Callable[[str], Path | None]
FILE_CHUNK = 256 * 1024


class BulkConfig(Protocol):
    """What bulk transfer needs of the transport's settings."""

    request_timeout: float
    limits: TransportLimits


class Requester(Protocol):
    """The connections and requests a fetch goes through (the transport)."""

    @property
    def peer_id(self) -> str: ...

    async def connect(self, peer_id: str, *,
                      timeout: float | None = None) -> quic.PeerConnection: ...

    async def request(self, peer_id: str, msg_type: str, data: dict[str, Any] | None = None,
                      timeout: float | None = None) -> dict[str, Any]: ...


class BulkTransfer:
    """Blobs to and from the peers of one transport."""

    def __init__(self, peers: Requester, config: BulkConfig, *,
                 blob_source: BlobSource | None = None) -> None:
        self.peers = peers
        self.config = config
        self.blob_source: BlobSource = blob_source or (lambda _sha: None)
        self._server: bulk.BulkServer | None = None
        self._cert_fingerprint = b""

    # -- the TCP channel ---------------------------------------------------------------------
    def start(self, host: str, *, cert_path: Path, key_path: Path,
              cert_fingerprint: bytes) -> None:
        """Open the TLS-over-TCP channel with the certificate the QUIC endpoint shows."""
        self._cert_fingerprint = cert_fingerprint
        self._server = bulk.BulkServer(
            cert_path=cert_path, key_path=key_path,
            max_connections=self.config.limits.bulk_max_connections,
            auth_timeout=self.config.limits.bulk_auth_timeout)
        self._server.start(host, 0)

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
            self._server = None

    def revoke(self, peer_id: str) -> None:
        """Tokens granted to ``peer_id`` are void, its transfers end."""
        if self._server is not None:
            self._server.revoke_peer(peer_id)

    # -- fetching ----------------------------------------------------------------------------
    async def fetch(self, peer_id: str, sha256: str, dest: Path, *,
                    timeout: float | None = None, prefer_tcp: bool = True) -> int:
        """Fetch blob ``sha256`` from ``peer_id`` into ``dest`` (hash-checked, atomic).

        Tries the TLS-over-TCP channel first, then a QUIC stream. Returns the size."""
        if bulk.valid_sha256(sha256) is None:
            raise BulkError(peer_id, f"not a sha256: {sha256!r}")
        timeout = self.config.request_timeout * 6 if timeout is None else timeout
        deadline = time.monotonic() + timeout
        conn = await self.peers.connect(peer_id, timeout=timeout)
        if prefer_tcp:
            relayed = conn.relayed_via is not None
            channel = self._fetch_spliced if relayed else self._fetch_tcp
            try:
                return await channel(conn, peer_id, sha256, dest, deadline)
            except BulkError:
                raise
            except PeerError as exc:
                # A direct peer's refusal (no such blob) is final; through a relay, the relay
                # or an older peer may refuse the splice while the tunnel still carries bulk.
                if (isinstance(exc, RemoteError) and not relayed) \
                        or time.monotonic() >= deadline:
                    raise
                log.info("bulk channel to %s failed (%s); falling back to QUIC", peer_id, exc)
        return await self._fetch_quic(conn, peer_id, sha256, dest, deadline)

    async def _fetch_tcp(self, conn: quic.PeerConnection, peer_id: str, sha256: str,
                         dest: Path, deadline: float) -> int:
        offer = await self.peers.request(peer_id, bulk.BULK_OFFER, {"sha256": sha256},
                                         _left(deadline))
        port = _port(offer.get("port"))
        if port is None:
            raise PeerUnreachable(peer_id, "peer offers no bulk channel")
        host = (conn.peer_address or ("127.0.0.1", 0))[0]
        token, size, pin = _granted(conn, peer_id, offer)
        return await self._receive(peer_id, (host, port), token, b"",
                                   bulk.BlobSink(dest, sha256, size, peer_id=peer_id), pin,
                                   deadline)

    async def _fetch_spliced(self, conn: quic.PeerConnection, peer_id: str, sha256: str,
                             dest: Path, deadline: float) -> int:
        """The TLS channel to a peer reached through a relay, spliced by that relay
        (``network.relay_splice``)."""
        relay = conn.relayed_via
        assert relay is not None
        relay_conn = await self.peers.connect(relay, timeout=_left(deadline))
        if relay_conn.peer_address is None:
            raise PeerUnreachable(relay, "the relay's address is not known")
        grant = await self.peers.request(relay, relay_splice.RELAY_SPLICE,
                                         {"target": peer_id}, _left(deadline))
        port, ticket = _port(grant.get("port")), relay_splice.parse_ticket(grant.get("ticket"))
        offer_ticket = relay_splice.parse_ticket(grant.get("offer_ticket"))
        if port is None or ticket is None or offer_ticket is None:
            raise PeerUnreachable(relay, "the relay answered no splice")
        offer = await self.peers.request(peer_id, bulk.BULK_OFFER,
                                         {"sha256": sha256, "splice": offer_ticket.hex()},
                                         _left(deadline))
        if offer.get("spliced") is not True:
            raise PeerUnreachable(peer_id, "peer offers no spliced bulk channel")
        token, size, pin = _granted(conn, peer_id, offer)
        return await self._receive(peer_id, (relay_conn.peer_address[0], port), token, ticket,
                                   bulk.BlobSink(dest, sha256, size, peer_id=peer_id), pin,
                                   deadline)

    @staticmethod
    async def _receive(peer_id: str, address: tuple[str, int], token: str, preamble: bytes,
                       sink: bulk.BlobSink, pin: bytes, deadline: float) -> int:
        try:
            await asyncio.to_thread(bulk.fetch_tls, address, token, sink, pin_sha256=pin,
                                    deadline=deadline, preamble=preamble)
            return sink.finish()
        except BaseException:
            sink.abort()
            raise

    async def _fetch_quic(self, conn: quic.PeerConnection, peer_id: str, sha256: str,
                          dest: Path, deadline: float) -> int:
        sink: bulk.BlobSink | None = None
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                reader, writer = await conn.create_stream()
                writer.write(encode(Envelope.new(bulk.BULK_GET, {"sha256": sha256},
                                                 source_peer_id=self.peers.peer_id)))
                writer.write_eof()
                envelopes = EnvelopeReader(peer_id)
                header = await read_envelope(reader, envelopes)
                if header is None:
                    raise PeerClosed(peer_id, f"closed before sending {sha256}")
                if header.type != BULK:
                    result_of(peer_id, bulk.BULK_GET, header)
                    raise PeerClosed(peer_id, f"answered '{header.type}' instead of {sha256}")
                size = header.data.get("size")
                if not isinstance(size, int) or size < 0:
                    raise BulkError(peer_id, "bulk header without a valid size")
                sink = bulk.BlobSink(dest, sha256, size, peer_id=peer_id)
                sink.write(envelopes.tail())
                while chunk := await reader.read(bulk.CHUNK):
                    sink.write(chunk)
                return sink.finish()
        except TimeoutError as exc:
            if sink is not None:
                sink.abort()
            raise PeerTimeout(peer_id, f"bulk transfer of {sha256} timed out") from exc
        except BaseException:
            if sink is not None:
                sink.abort()
            raise

    # -- serving -----------------------------------------------------------------------------
    async def on_offer(self, request: IncomingRequest) -> dict[str, Any]:
        """``bulk_offer {sha256}``: a one-time token for the TCP channel (port 0: none)."""
        sha256 = bulk.valid_sha256(request.data.get("sha256"))
        if sha256 is None:
            raise RequestRejected("bulk_offer needs a sha256")
        path = await maybe_async(self.blob_source(sha256))
        if path is None:
            raise RequestRejected(f"blob {sha256} not found")
        if self._server is None:
            return {"port": 0}
        if "splice" in request.data:
            return await self._offer_spliced(request, sha256, path)
        token = self._server.grant(request.peer_id, sha256, path)
        return {"port": self._server.port, "token": token, "size": path.stat().st_size,
                "cert_sha256": self._cert_fingerprint.hex()}

    async def _offer_spliced(self, request: IncomingRequest, sha256: str,
                             path: Path) -> dict[str, Any]:
        """``bulk_offer {sha256, splice}`` over a relayed connection: confirm the splice with
        our end's relay, dial its splice port, and serve the blob as TLS server there."""
        assert self._server is not None
        relay = request.relayed_via
        if relay is None:
            raise RequestRejected("a spliced bulk channel is offered only through a relay")
        offer_ticket = relay_splice.parse_ticket(request.data.get("splice"))
        if offer_ticket is None:
            raise RequestRejected("bulk_offer splice must be a relay's ticket")
        try:
            accepted = await self.peers.request(relay, relay_splice.RELAY_SPLICE_ACCEPT,
                                                {"ticket": offer_ticket.hex()})
            relay_conn = await self.peers.connect(relay)
        except PeerError as exc:
            raise RequestRejected(f"the relay refused the splice: {exc.reason}") from None
        port = _port(accepted.get("port"))
        ticket = relay_splice.parse_ticket(accepted.get("ticket"))
        if accepted.get("requester") != request.peer_id:
            raise RequestRejected("the splice was asked for by another peer")
        if port is None or ticket is None or relay_conn.peer_address is None:
            raise RequestRejected("the relay answered no splice port")
        token = self._server.grant(request.peer_id, sha256, path)
        try:
            await asyncio.to_thread(self._server.serve_dialled,
                                    (relay_conn.peer_address[0], port), ticket)
        except (OSError, BulkError) as exc:
            self._server.revoke_token(token)
            raise RequestRejected(f"cannot reach the relay's splice port: {exc}") from None
        return {"token": token, "size": path.stat().st_size, "spliced": True,
                "cert_sha256": self._cert_fingerprint.hex()}

    async def send_on_stream(self, conn: quic.PeerConnection, request: Envelope,
                             reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             tail: bytes) -> None:
        """``bulk_get {sha256}``: a ``bulk`` header, then the blob's bytes, on this stream."""
        sha256 = bulk.valid_sha256(request.data.get("sha256"))
        path = await maybe_async(self.blob_source(sha256)) if sha256 else None
        if path is None:
            raise RequestRejected(f"blob {request.data.get('sha256')} not found")
        stream_id = writer.get_extra_info("stream_id")
        with path.open("rb") as fh:
            size = path.stat().st_size
            writer.write(encode(request.reply(BULK, {"sha256": sha256, "size": size},
                                              source_peer_id=self.peers.peer_id)))
            while chunk := await asyncio.to_thread(fh.read, FILE_CHUNK):
                writer.write(chunk)
                # aioquic buffers without limit: pace the writes on what is still unacked.
                try:
                    await conn.drain(stream_id)
                except ConnectionError as exc:
                    log.info("bulk send of %s to %s ended: %s", sha256, conn.peer_id, exc)
                    return
        writer.write_eof()


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.01)


def _port(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 < value < 65536 else None


def _granted(conn: quic.PeerConnection, peer_id: str,
             offer: dict[str, Any]) -> tuple[str, int, bytes]:
    """The token, size and certificate pin of a holder's bulk offer (PeerUnreachable when it
    is not one)."""
    token, size = offer.get("token"), offer.get("size")
    if not isinstance(token, str) or len(token) != 2 * bulk.TOKEN_BYTES \
            or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PeerUnreachable(peer_id, "bulk offer without a valid token and size")
    try:
        bytes.fromhex(token)
    except ValueError:
        raise PeerUnreachable(peer_id, "bulk offer without a valid token") from None
    # The holder names its certificate in the offer, which arrived over the QUIC connection
    # its identity exchange verified; that holds whichever side dialled.
    try:
        pin = bytes.fromhex(str(offer.get("cert_sha256") or ""))
    except ValueError:
        pin = b""
    if len(pin) != 32:
        if not conn.is_client:
            raise PeerUnreachable(peer_id, "bulk offer names no certificate")
        pin = conn.peer_cert_fingerprint()
    return token, size, pin
