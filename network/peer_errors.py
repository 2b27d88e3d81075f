"""The errors of talking to a peer; aioquic, socket and TLS errors become these at the edge.

::

    PeerError                  every failure; the message names the peer
    ├── PeerUnreachable        no address, nothing answers, or the identity exchange failed
    ├── PeerTimeout            the peer did not answer within the request's timeout
    ├── PeerClosed             the connection went away in the middle of a request
    ├── RemoteError            the peer answered with an error of its own
    └── BulkError              a bulk transfer was short, too long, or failed its hash check

``network.messages.MessageError`` (the peer sent junk) is caught where frames are read and
reported as ``PeerClosed``/``RemoteError`` naming the peer.
"""

from __future__ import annotations


class PeerError(Exception):
    def __init__(self, peer_id: str, message: str) -> None:
        super().__init__(f"peer {peer_id}: {message}")
        self.peer_id = peer_id
        self.reason = message


class PeerUnreachable(PeerError):
    pass


class PeerTimeout(PeerError):
    pass


class PeerClosed(PeerError):
    pass


class RemoteError(PeerError):
    pass


class BulkError(PeerError):
    pass


class RequestRejected(Exception):
    """Raised by a request handler to answer with this message as the error (no traceback)."""
