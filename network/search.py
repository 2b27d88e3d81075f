"""Service search across peers.

Answering side: a ``service_search`` request is answered from this node's ACTIVE services that
the asking peer may use (their access admits it), filtered by the query text, service type and
(for completeness) the peer filter.

Asking side: the WebSocket ``SERVICE_SEARCH`` handler asks every known peer (or the ones the
client names) in parallel and streams ``SERVICE_SEARCH_RESULT`` messages as each peer answers,
then one ``SERVICE_SEARCH_COMPLETE`` with who was asked, who answered and why the others did not.
A peer that does not answer costs at most the per-peer timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from network.bulk import valid_digest
from network.peer_errors import PeerError, RequestRejected
from network.transport import IncomingRequest, PeerTransport

SERVICE_SEARCH = "service_search"          # the QUIC message type
WS_SERVICE_SEARCH = "SERVICE_SEARCH"       # the WebSocket request
WS_RESULT = "SERVICE_SEARCH_RESULT"
WS_COMPLETE = "SERVICE_SEARCH_COMPLETE"
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 30.0
MAX_RESULTS_PER_PEER = 500

# Accepted spellings of a service type, to the stored service_type.
TYPE_ALIASES = {
    "docker": "DOCKER", "standalone": "STANDALONE", "data": "DATA", "storage": "DATA",
    "relay": "RELAY",
}

Reply = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str = ""
    service_type: str | None = None
    peer_ids: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    # Only services with this content (``sha256:<hex>``): the same thing, wherever offered.
    content_digest: str | None = None

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> SearchQuery:
        """From a WebSocket payload or a request's data. ValueError names the bad field."""
        text = payload.get("query", "")
        if not isinstance(text, str):
            raise ValueError("query must be a string")
        kind = payload.get("service_type", payload.get("type"))
        service_type = None
        if kind not in (None, ""):
            if not isinstance(kind, str):
                raise ValueError("service_type must be a string")
            service_type = TYPE_ALIASES.get(kind.strip().lower())
            if service_type is None:
                raise ValueError(f"Unknown service_type '{kind}': use DOCKER, STANDALONE or DATA")
        peers = payload.get("peer_ids", payload.get("peer_id"))
        if peers in (None, "", []):
            peer_ids: tuple[str, ...] = ()
        elif isinstance(peers, str):
            peer_ids = (peers.strip().lower(),)
        elif isinstance(peers, list) and all(isinstance(p, str) for p in peers):
            peer_ids = tuple(p.strip().lower() for p in peers if p.strip())
        else:
            raise ValueError("peer_ids must be a list of peer ids")
        timeout = payload.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        digest = payload.get("content_digest")
        if digest in (None, ""):
            digest = None
        elif valid_digest(digest) is None:
            raise ValueError("content_digest must be sha256:<64 hex digits>")
        return cls(text.strip(), service_type, peer_ids, min(float(timeout), MAX_TIMEOUT),
                   digest)

    def to_data(self) -> dict[str, Any]:
        data = {"query": self.text, "service_type": self.service_type or ""}
        if self.content_digest:
            data["content_digest"] = self.content_digest
        return data

    def matches(self, offer: dict[str, Any]) -> bool:
        if self.service_type and offer.get("service_type") != self.service_type:
            return False
        if self.content_digest and offer.get("content_digest") != self.content_digest:
            return False
        if not self.text:
            return True
        needle = self.text.lower()
        return any(needle in str(offer.get(k) or "").lower() for k in ("name", "description"))


# -- the answering side ------------------------------------------------------------------------
def offer_from_view(view: Any, content_digest: str = "") -> dict[str, Any]:
    """A service as peers see it (a ``ServiceView``: ``.service`` and ``.interfaces``), with
    its content digest (``orchestrator.content_identity``)."""
    s = view.service
    return {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "content_digest": content_digest,
        "service_type": str(s.service_type),
        "type": s.type,
        "status": str(s.status),
        "interfaces": [
            {"interface_type": str(i.interface_type), "path": i.path,
             "mount_function": i.mount_function or "", "description": i.description or ""}
            for i in view.interfaces
        ],
        "pricing": {"amount": s.pricing_amount, "type": s.pricing_type,
                    "interval": s.pricing_interval, "unit": s.pricing_unit},
    }


def answer(offers: Iterable[dict[str, Any]], query: SearchQuery) -> list[dict[str, Any]]:
    """The ACTIVE offers that match, at most MAX_RESULTS_PER_PEER."""
    found = [o for o in offers if o.get("status") == "ACTIVE" and query.matches(o)]
    return found[:MAX_RESULTS_PER_PEER]


def register_search(transport: PeerTransport,
                    list_offers: Callable[[str], list[dict[str, Any]]]) -> None:
    """Answer ``service_search`` from ``list_offers(asking peer id)``: the offers that peer may
    use (blocking; runs in a thread)."""

    async def handle(request: IncomingRequest) -> dict[str, Any]:
        try:
            query = SearchQuery.parse(request.data)
        except ValueError as exc:
            raise RequestRejected(str(exc)) from exc
        if query.peer_ids and transport.peer_id not in query.peer_ids:
            return {"services": []}
        offers = await asyncio.to_thread(list_offers, str(request.peer_id))
        return {"services": answer(offers, query)}

    transport.register(SERVICE_SEARCH, handle)


# -- the asking side ---------------------------------------------------------------------------
def result_message(search_id: str, peer_id: str, offer: dict[str, Any]) -> dict[str, Any]:
    return {"type": WS_RESULT, "payload": {
        "search_id": search_id,
        "peer_id": peer_id,
        "service_id": offer.get("id"),
        "name": offer.get("name", ""),
        "description": offer.get("description", ""),
        "service_type": offer.get("service_type", ""),
        "type": offer.get("type", ""),
        # The answering peer's word: kept only when it has the shape of a digest.
        "content_digest": valid_digest(offer.get("content_digest")) or "",
        "interfaces": offer.get("interfaces", []),
        "pricing": offer.get("pricing", {}),
    }}


async def search_peers(transport: PeerTransport, peer_ids: Iterable[str], query: SearchQuery,
                       reply: Reply, *, search_id: str | None = None) -> dict[str, Any]:
    """Ask ``peer_ids`` in parallel, ``reply`` with each result as it comes, then complete."""
    search_id = search_id or uuid.uuid4().hex
    targets = sorted(set(peer_ids) - {transport.peer_id})
    if query.peer_ids:
        targets = [p for p in targets if p in query.peer_ids]
    answered: list[str] = []
    errors: list[dict[str, str]] = []
    results = 0

    async def ask(peer_id: str) -> None:
        nonlocal results
        try:
            data = await transport.request(peer_id, SERVICE_SEARCH, query.to_data(),
                                           timeout=query.timeout)
        except PeerError as exc:
            errors.append({"peer_id": peer_id, "error": exc.reason})
            return
        answered.append(peer_id)
        services = data.get("services")
        for offer in services if isinstance(services, list) else []:
            if isinstance(offer, dict):
                results += 1
                await reply(result_message(search_id, peer_id, offer))

    await asyncio.gather(*(ask(p) for p in targets))
    summary = {"search_id": search_id, "query": query.text, "peers_asked": len(targets),
               "peers_answered": len(answered), "results": results,
               "errors": sorted(errors, key=lambda e: e["peer_id"])}
    await reply({"type": WS_COMPLETE, "payload": summary})
    return summary


def ws_search_handler(transport: PeerTransport,
                      known_peers: Callable[[], Iterable[str]]) -> Callable[[dict[str, Any], Reply],
                                                                            Awaitable[None]]:
    """The WebSocket ``SERVICE_SEARCH`` handler for ``node.ws_handlers``."""

    async def handle(payload: dict[str, Any], reply: Reply) -> None:
        try:
            query = SearchQuery.parse(payload)
        except ValueError as exc:
            await reply({"type": "ERROR", "payload": {"error": str(exc),
                                                      "request_type": WS_SERVICE_SEARCH}})
            return
        search_id = payload.get("search_id") or payload.get("request_id")
        peers = list(query.peer_ids) if query.peer_ids else list(known_peers())
        await search_peers(transport, peers, query, reply,
                           search_id=str(search_id) if search_id else None)

    # The WebSocket runs it beside the socket's later messages, not before them.
    handle.runs_in_background = True  # type: ignore[attr-defined]
    return handle
