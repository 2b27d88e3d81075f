"""Service search: query parsing and filtering (pure), and the fan-out over real QUIC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from network.search import (
    WS_COMPLETE,
    WS_RESULT,
    SearchQuery,
    answer,
    register_search,
    search_peers,
)
from network.streams import IncomingRequest
from tests.support.transports import Net, transports


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    async with transports(tmp_path) as n:
        yield n

OFFERS = [
    {"id": 1, "name": "resize", "description": "Resizes images", "service_type": "DOCKER",
     "status": "ACTIVE"},
    {"id": 2, "name": "ocr", "description": "", "service_type": "STANDALONE", "status": "ACTIVE"},
    {"id": 3, "name": "resize-old", "description": "", "service_type": "DOCKER",
     "status": "INACTIVE"},
    {"id": 4, "name": "photos", "description": "image set", "service_type": "DATA",
     "status": "ACTIVE"},
    {"id": 5, "name": "thumbs", "description": "", "service_type": "DOCKER",
     "status": "ACTIVE", "content_digest": "sha256:" + "ab" * 32},
]


def ids(query: SearchQuery) -> list[int]:
    return [o["id"] for o in answer(OFFERS, query)]


def test_only_active_services_are_offered() -> None:
    assert ids(SearchQuery()) == [1, 2, 4, 5]


def test_query_text_matches_name_or_description_case_insensitively() -> None:
    assert ids(SearchQuery.parse({"query": "IMAGE"})) == [1, 4]
    assert ids(SearchQuery.parse({"query": "ocr"})) == [2]


def test_service_type_filter_accepts_both_spellings() -> None:
    assert ids(SearchQuery.parse({"service_type": "docker"})) == [1, 5]
    assert ids(SearchQuery.parse({"type": "storage"})) == [4]
    assert ids(SearchQuery.parse({"service_type": "STANDALONE"})) == [2]


def test_content_digest_finds_the_same_thing_under_any_name() -> None:
    digest = "sha256:" + "ab" * 32
    assert ids(SearchQuery.parse({"content_digest": digest})) == [5]
    assert ids(SearchQuery.parse({"content_digest": "sha256:" + "cd" * 32})) == []
    assert SearchQuery.parse({"content_digest": digest}).to_data()["content_digest"] == digest
    assert "content_digest" not in SearchQuery.parse({}).to_data()


def test_parse_normalises_peer_filter_and_caps_timeout() -> None:
    q = SearchQuery.parse({"peer_id": " ABC ", "timeout": 999})
    assert q.peer_ids == ("abc",) and q.timeout == 30.0
    assert SearchQuery.parse({"peer_ids": ["a", "b"]}).peer_ids == ("a", "b")


@pytest.mark.parametrize(("payload", "match"), [
    ({"query": 5}, "query must be a string"),
    ({"service_type": "boat"}, "Unknown service_type 'boat'"),
    ({"peer_ids": [1]}, "peer_ids must be a list"),
    ({"timeout": 0}, "timeout must be a positive number"),
    ({"timeout": True}, "timeout must be a positive number"),
    ({"content_digest": "ab" * 32}, "content_digest must be"),
    ({"content_digest": "sha256:" + "AB" * 32}, "content_digest must be"),
    ({"content_digest": "sha256:" + "ab" * 32 + "\n"}, "content_digest must be"),
    ({"content_digest": 5}, "content_digest must be"),
])
def test_parse_rejects_bad_fields(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SearchQuery.parse(payload)


@pytest.mark.asyncio(loop_scope="session")
async def test_fan_out_streams_results_and_reports_silent_peers(net: Net, tmp_path: Path) -> None:
    asker, good, silent = await net.add(), await net.add(), await net.add()
    register_search(good, lambda _peer: OFFERS)

    async def never(request: IncomingRequest) -> dict[str, Any]:
        import asyncio

        await asyncio.Event().wait()
        return {}

    silent.register("service_search", never)
    sent: list[dict[str, Any]] = []

    async def reply(message: dict[str, Any]) -> None:
        sent.append(message)

    summary = await search_peers(asker, [good.peer_id, silent.peer_id, asker.peer_id],
                                 SearchQuery(text="resize", timeout=0.5), reply,
                                 search_id="q1")
    assert [m["type"] for m in sent] == [WS_RESULT, WS_COMPLETE]
    result = sent[0]["payload"]
    assert result["peer_id"] == good.peer_id and result["service_id"] == 1
    assert result["name"] == "resize" and result["search_id"] == "q1"
    assert sent[1]["payload"] == summary
    assert summary["peers_asked"] == 2 and summary["peers_answered"] == 1
    assert summary["errors"] == [{"peer_id": silent.peer_id,
                                  "error": "no answer to 'service_search' within 0.5s"}]
