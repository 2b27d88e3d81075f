"""Where a node placed by content runs: the peers that offer its service's content digest.

A workflow node may name its service by content digest (``service_digest``) with a
``placement`` of ``"any"`` or a list of peers. Before each attempt the requester asks those
peers (every known peer, for ``any``) for their ACTIVE services with that digest that admit it
(``network.search``, the peers' own access rules answering) and takes them in order: the
placement list's, else by peer id. Attempt *n* goes to the *n*-th (cycling), so a retry after a
dead or refusing peer goes to the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from network.search import WS_RESULT, SearchQuery, search_peers
from orchestrator.graph import PlanNode


@dataclass(frozen=True, slots=True)
class Candidate:
    peer_id: str
    service_id: int
    service_name: str = ""


def order(offers: Iterable[Candidate], placement: tuple[str, ...]) -> list[Candidate]:
    """One offer per peer (its lowest service id), in the placement's order (by peer id for
    ``any``)."""
    best: dict[str, Candidate] = {}
    for offer in offers:
        known = best.get(offer.peer_id)
        if known is None or offer.service_id < known.service_id:
            best[offer.peer_id] = offer
    if placement:
        return [best[p] for p in placement if p in best]
    return [best[p] for p in sorted(best)]


def pick(candidates: list[Candidate], attempt: int) -> Candidate:
    return candidates[(max(attempt, 1) - 1) % len(candidates)]


def placed_on(node: PlanNode, candidate: Candidate) -> PlanNode:
    """The node as it runs on ``candidate``: a service of that peer."""
    return replace(node, peer_id=candidate.peer_id, service_id=candidate.service_id,
                   local=False, service_name=node.service_name or candidate.service_name)


class Placement:
    """Finds the candidates of a placed node over the peer transport."""

    def __init__(self, transport: Any, known_peers: Callable[[], Iterable[str]], *,
                 timeout: float = 5.0) -> None:
        self.transport = transport
        self.known_peers = known_peers
        self.timeout = timeout

    async def candidates(self, node: PlanNode) -> list[Candidate]:
        peers = list(node.placement) if node.placement else list(self.known_peers())
        query = SearchQuery(peer_ids=tuple(node.placement), timeout=self.timeout,
                            content_digest=node.content_digest)
        found: list[Candidate] = []

        async def reply(message: dict[str, Any]) -> None:
            payload = message.get("payload") or {}
            service_id = payload.get("service_id")
            if (message.get("type") == WS_RESULT
                    and payload.get("content_digest") == node.content_digest
                    and isinstance(service_id, int) and not isinstance(service_id, bool)):
                found.append(Candidate(str(payload["peer_id"]), service_id,
                                       str(payload.get("name") or "")[:200]))

        await search_peers(self.transport, peers, query, reply)
        return order(found, node.placement)
