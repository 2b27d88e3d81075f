"""The original web UI's service search over the WebSocket, on top of the reference's.

The UI sends ``service.search.request {query, service_type, peer_ids, active_only}``, where
``service_type`` is a comma-separated list, and reads ``service.search.response`` messages:
``{services: [...], complete: false}`` as peers answer, then ``{services: [], complete: true}``,
or ``{error}``. Each service is in the shape of its service list (flat pricing fields, the
peer it is on). This adapts the reference's ``SERVICE_SEARCH`` handler (``network.search``):
the same search, answered in the UI's words.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from api.ui_events import envelope
from network.search import (
    TYPE_ALIASES,
    SearchQuery,
    answer,
    offer_from_view,
    result_message,
)
from orchestrator.content_identity import service_digest

UI_SEARCH = "service.search.request"
UI_RESPONSE = "service.search.response"
REFERENCE_SEARCH = "SERVICE_SEARCH"
Reply = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], Reply], Awaitable[None]]


def ui_service(result: Mapping[str, Any]) -> dict[str, Any]:
    """A ``SERVICE_SEARCH_RESULT`` payload as the UI lists a remote service."""
    pricing = result.get("pricing") if isinstance(result.get("pricing"), dict) else {}
    return {
        "id": result.get("service_id"), "peer_id": result.get("peer_id", ""),
        "name": result.get("name", ""), "description": result.get("description", ""),
        "service_type": result.get("service_type", ""), "type": result.get("type", ""),
        "status": "ACTIVE", "endpoint": "", "capabilities": {},
        "content_digest": result.get("content_digest", ""),
        "pricing_amount": pricing.get("amount", 0), "pricing_type": pricing.get("type", ""),
        "pricing_interval": pricing.get("interval", ""), "pricing_unit": pricing.get("unit", ""),
        "interfaces": result.get("interfaces", []),
    }


def _types(value: Any) -> set[str]:
    """The stored service types a comma-separated ``service_type`` names (the search's
    spellings: ``docker``, ``storage``, ...)."""
    if not isinstance(value, str):
        return set()
    return {TYPE_ALIASES.get(t.strip().lower(), t.strip().upper())
            for t in value.split(",") if t.strip()}


# This node's own offers for a query: (query payload) -> SERVICE_SEARCH_RESULT payloads.
LocalResults = Callable[[dict[str, Any]], list[dict[str, Any]]]


def ui_search_handler(search: Handler, *, own_peer_id: str = "",
                      local: LocalResults | None = None) -> Handler:
    """``service.search.request`` answered by the reference's ``search`` handler. When the
    request names this node among its ``peer_ids`` (the editor's panel does), this node's own
    matching services come first, from ``local``: the reference search asks other peers only."""

    async def handle(payload: dict[str, Any], reply: Reply) -> None:
        wanted = _types(payload.get("service_type"))
        peer_ids = payload.get("peer_ids") or []
        if local is not None and isinstance(peer_ids, list) and own_peer_id in peer_ids:
            peer_ids = [p for p in peer_ids if p != own_peer_id]
            mine = [ui_service(r) for r in await asyncio.to_thread(local, payload)]
            mine = [m for m in mine if not wanted or m["service_type"] in wanted]
            if mine:
                await reply(envelope(UI_RESPONSE, {"services": mine, "complete": False}))
            if not peer_ids:
                await reply(envelope(UI_RESPONSE, {"services": [], "complete": True}))
                return
        request: dict[str, Any] = {"query": payload.get("query", ""), "peer_ids": peer_ids}
        if len(wanted) == 1:
            request["service_type"] = next(iter(wanted))
        for key in ("timeout", "search_id"):
            if key in payload:
                request[key] = payload[key]

        async def answer(message: dict[str, Any]) -> None:
            kind, body = message.get("type"), message.get("payload") or {}
            if kind == "SERVICE_SEARCH_RESULT":
                item = ui_service(body)
                if not wanted or item["service_type"] in wanted:
                    await reply(envelope(UI_RESPONSE, {"services": [item], "complete": False}))
            elif kind == "SERVICE_SEARCH_COMPLETE":
                await reply(envelope(UI_RESPONSE, {"services": [], "complete": True,
                                                   "summary": body}))
            elif kind == "ERROR":
                await reply(envelope(UI_RESPONSE, {"error": body.get("error", "search failed"),
                                                   "complete": True}))

        await search(request, answer)

    handle.runs_in_background = True  # type: ignore[attr-defined]
    return handle


def with_ui_handlers(handlers: Mapping[str, Handler], *, own_peer_id: str = "",
                     local: LocalResults | None = None) -> dict[str, Handler]:
    """``handlers`` and, for those the UI asks in its own words, their adapters."""
    out = dict(handlers)
    if REFERENCE_SEARCH in handlers and UI_SEARCH not in handlers:
        out[UI_SEARCH] = ui_search_handler(handlers[REFERENCE_SEARCH], own_peer_id=own_peer_id,
                                           local=local)
    return out


def local_results(services: Any, peer_id: str) -> LocalResults:
    """This node's ACTIVE services matching a query, as the search reports another peer's."""

    def results(payload: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            query = SearchQuery.parse({"query": payload.get("query", "")})
        except ValueError:
            return []
        offers = [offer_from_view(v, service_digest(v)) for v in services.list()]
        return [result_message("", peer_id, o)["payload"] for o in answer(offers, query)]

    return results
