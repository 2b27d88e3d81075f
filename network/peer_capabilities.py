"""The ``capabilities`` request: a peer's full system capabilities, over QUIC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from network.peer_errors import RemoteError
from network.transport import IncomingRequest, PeerTransport

CAPABILITIES = "capabilities"


def register_capabilities(transport: PeerTransport,
                          probe: Callable[[], dict[str, Any]]) -> None:
    """Answer ``capabilities`` with ``probe()`` (blocking: Docker and NVML; run in a thread)."""

    async def handle(request: IncomingRequest) -> dict[str, Any]:
        return {"capabilities": await asyncio.to_thread(probe)}

    transport.register(CAPABILITIES, handle)


async def fetch_capabilities(transport: PeerTransport, peer_id: str, *,
                             timeout: float | None = None) -> dict[str, Any]:
    data = await transport.request(peer_id, CAPABILITIES, {}, timeout)
    caps = data.get("capabilities")
    if not isinstance(caps, dict):
        raise RemoteError(peer_id, "answered 'capabilities' without capabilities")
    return caps
