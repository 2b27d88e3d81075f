"""The identity exchange on the first stream of every peer connection, as a state machine.

Bytes go in, bytes and events come out; nothing here touches a socket, so both ends can be wired
together in memory. The exchange, with ``B`` the connection binding (both ends compute it from the
QUIC connection: original destination connection id and the server's certificate)::

    client -> server  hs_hello   {public_key, peer_id, nonce_c}
    server -> client  hs_welcome {public_key, peer_id, nonce_s, signature_s}   (or hs_reject)
    client -> server  hs_proof   {signature_c}
    server -> client  hs_done    {}                                            (or hs_reject)

``signature_x`` is the Ed25519 signature, by that side's identity key, of
``CONTEXT | role | B | nonce_c | nonce_s | client key | server key``. A peer id that is not the
SHA-1 of its key, a bad signature, a peer id other than the one dialled, a blacklisted peer, or a
peer the host refuses for now (``refusal``, e.g. over its connection cap) ends the exchange with
``HandshakeFailed`` and a named reason; the glue then closes the connection.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass

from network.identity import Identity, peer_id_for, verify
from network.messages import Envelope, FrameDecoder, MessageError, encode

CONTEXT = b"remote-network-handshake-v1"
NONCE_BYTES = 32
MAX_HANDSHAKE_FRAME = 4096

HELLO, WELCOME, PROOF, DONE, REJECT = "hs_hello", "hs_welcome", "hs_proof", "hs_done", "hs_reject"


class HandshakeUsageError(RuntimeError):
    """The caller drove the state machine out of order (a bug here, not the peer's fault)."""


class State(enum.Enum):
    START = "start"
    HELLO_SENT = "hello_sent"          # client, waiting for welcome
    WAITING_HELLO = "waiting_hello"    # server, waiting for hello
    WELCOME_SENT = "welcome_sent"      # server, waiting for proof
    PROOF_SENT = "proof_sent"          # client, waiting for done
    VERIFIED = "verified"
    FAILED = "failed"


# (state, incoming message type) -> the state we are in after handling it successfully.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.WAITING_HELLO, HELLO): State.WELCOME_SENT,
    (State.HELLO_SENT, WELCOME): State.PROOF_SENT,
    (State.WELCOME_SENT, PROOF): State.VERIFIED,
    (State.PROOF_SENT, DONE): State.VERIFIED,
}


@dataclass(frozen=True, slots=True)
class PeerVerified:
    peer_id: str
    public_key: bytes


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    reason: str


HandshakeEvent = PeerVerified | HandshakeFailed


def transcript(role: bytes, binding: bytes, nonce_c: bytes, nonce_s: bytes,
               key_c: bytes, key_s: bytes) -> bytes:
    return b"|".join((CONTEXT, role, binding, nonce_c, nonce_s, key_c, key_s))


class _Reject(Exception):
    def __init__(self, reason: str, *, tell_peer: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tell_peer = tell_peer


class Handshake:
    """One side of the exchange. ``is_blacklisted`` is asked about the remote peer id, and
    ``refusal`` gives the reason it may not connect now (None: it may)."""

    def __init__(self, identity: Identity, *, is_client: bool, binding: bytes,
                 is_blacklisted: Callable[[str], bool] = lambda _peer: False,
                 expected_peer_id: str | None = None, nonce: bytes | None = None,
                 refusal: Callable[[str], str | None] = lambda _peer: None) -> None:
        self.identity = identity
        self.is_client = is_client
        self.binding = binding
        self.is_blacklisted = is_blacklisted
        self.refusal = refusal
        self.expected_peer_id = expected_peer_id
        self.nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        if len(self.nonce) != NONCE_BYTES:
            raise HandshakeUsageError(f"nonce must be {NONCE_BYTES} bytes")
        self.state = State.START if is_client else State.WAITING_HELLO
        self.peer_id: str | None = None
        self.peer_key: bytes | None = None
        self._peer_nonce = b""
        self._decoder = FrameDecoder(max_bytes=MAX_HANDSHAKE_FRAME)
        self._out = bytearray()

    # -- driving ---------------------------------------------------------------------------
    def initiate(self) -> None:
        """Client only: queue the hello."""
        if not self.is_client or self.state is not State.START:
            raise HandshakeUsageError("initiate() is for a client that has not started")
        self._send(HELLO, {"public_key": self.identity.public_key_hex,
                           "peer_id": self.identity.peer_id, "nonce": self.nonce.hex()})
        self.state = State.HELLO_SENT

    def receive(self, data: bytes) -> list[HandshakeEvent]:
        """Feed bytes from the peer; returns what happened. Output goes to ``data_to_send``."""
        if self.state is State.START:
            raise HandshakeUsageError("a client must initiate() before receiving")
        if self.state in (State.VERIFIED, State.FAILED):
            return []
        try:
            envelopes = self._decoder.feed(data)
        except MessageError as exc:
            return [self._fail(f"malformed handshake message: {exc}")]
        events: list[HandshakeEvent] = []
        for envelope in envelopes:
            event = self._handle(envelope)
            if event is not None:
                events.append(event)
            if self.state in (State.VERIFIED, State.FAILED):
                break
        return events

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def done(self) -> bool:
        return self.state in (State.VERIFIED, State.FAILED)

    # -- the protocol ----------------------------------------------------------------------
    def _handle(self, envelope: Envelope) -> HandshakeEvent | None:
        if envelope.type == REJECT:
            reason = str(envelope.data.get("reason") or "refused")[:200]
            return self._fail(f"peer refused the connection: {reason}", tell_peer=False)
        target = TRANSITIONS.get((self.state, envelope.type))
        if target is None:
            return self._fail(f"unexpected handshake message '{envelope.type}' "
                              f"in state {self.state.value}")
        try:
            if envelope.type == HELLO:
                self._on_hello(envelope.data)
            elif envelope.type == WELCOME:
                self._on_welcome(envelope.data)
            elif envelope.type == PROOF:
                self._on_proof(envelope.data)
        except _Reject as exc:
            return self._fail(exc.reason, tell_peer=exc.tell_peer)
        self.state = target
        if target is State.VERIFIED:
            assert self.peer_id is not None and self.peer_key is not None
            return PeerVerified(self.peer_id, self.peer_key)
        return None

    def _on_hello(self, data: dict[str, object]) -> None:
        self._take_peer(data)
        assert self.peer_key is not None
        signature = self.identity.sign(self._transcript(b"server"))
        self._send(WELCOME, {"public_key": self.identity.public_key_hex,
                             "peer_id": self.identity.peer_id, "nonce": self.nonce.hex(),
                             "signature": signature.hex()})

    def _on_welcome(self, data: dict[str, object]) -> None:
        self._take_peer(data)
        self._check_signature(data, b"server")
        signature = self.identity.sign(self._transcript(b"client"))
        self._send(PROOF, {"signature": signature.hex()})

    def _on_proof(self, data: dict[str, object]) -> None:
        self._check_signature(data, b"client")
        self._send(DONE, {})

    def _take_peer(self, data: dict[str, object]) -> None:
        key = _hex_field(data, "public_key", 32)
        nonce = _hex_field(data, "nonce", NONCE_BYTES)
        claimed = data.get("peer_id")
        peer_id = peer_id_for(key)
        if claimed != peer_id:
            raise _Reject(f"peer id {str(claimed)[:64]!r} does not match its public key")
        if self.expected_peer_id is not None and peer_id != self.expected_peer_id:
            raise _Reject(f"expected peer {self.expected_peer_id} but {peer_id} answered")
        if peer_id == self.identity.peer_id:
            raise _Reject("the peer presented our own identity")
        if self.is_blacklisted(peer_id):
            raise _Reject("peer is blacklisted")
        refused = self.refusal(peer_id)
        if refused:
            raise _Reject(refused)
        self.peer_id, self.peer_key, self._peer_nonce = peer_id, key, nonce

    def _check_signature(self, data: dict[str, object], role: bytes) -> None:
        signature = _hex_field(data, "signature", 64)
        assert self.peer_key is not None
        if not verify(self.peer_key, self._transcript(role), signature):
            raise _Reject(f"bad handshake signature from {self.peer_id}")

    def _transcript(self, role: bytes) -> bytes:
        own, peer = self.identity.public_key, self.peer_key or b""
        if self.is_client:
            return transcript(role, self.binding, self.nonce, self._peer_nonce, own, peer)
        return transcript(role, self.binding, self._peer_nonce, self.nonce, peer, own)

    def _send(self, kind: str, data: dict[str, object]) -> None:
        self._out += encode(Envelope.new(kind, data, source_peer_id=self.identity.peer_id),
                            max_bytes=MAX_HANDSHAKE_FRAME)

    def _fail(self, reason: str, *, tell_peer: bool = True) -> HandshakeFailed:
        if tell_peer:
            self._send(REJECT, {"reason": reason})
        self.state = State.FAILED
        return HandshakeFailed(reason)


def _hex_field(data: dict[str, object], name: str, size: int) -> bytes:
    value = data.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise _Reject(f"handshake field '{name}' must be {size} bytes of hex")
    return raw
