"""Envelope framing: round trips, incremental decoding, limits and junk."""

from __future__ import annotations

import json

import pytest

from network.messages import (
    HEADER,
    Envelope,
    FrameDecoder,
    MessageError,
    decode_body,
    encode,
)


def test_round_trip_keeps_every_field() -> None:
    env = Envelope.new("ping", {"n": 1, "s": "é"}, source_peer_id="ab" * 20, now=12.5)
    [back] = FrameDecoder().feed(encode(env))
    assert back == env
    assert back.to_dict().keys() == {"type", "version", "request_id", "source_peer_id",
                                     "timestamp", "data"}
    assert len(back.request_id) == 32


def test_reply_carries_the_request_id() -> None:
    req = Envelope.new("search", {"q": "x"})
    resp = req.reply("response", {"ok": True}, source_peer_id="p")
    assert resp.request_id == req.request_id
    assert resp.type == "response" and resp.source_peer_id == "p"


def test_decoder_handles_split_and_joined_frames() -> None:
    frames = b"".join(encode(Envelope.new("t", {"i": i})) for i in range(3))
    decoder = FrameDecoder()
    got = []
    for i in range(len(frames)):  # one byte at a time
        got += decoder.feed(frames[i:i + 1])
    assert [e.data["i"] for e in got] == [0, 1, 2]
    assert decoder.pending == 0


def test_tail_returns_bytes_after_a_header_frame() -> None:
    decoder = FrameDecoder()
    decoder.push(encode(Envelope.new("bulk", {"size": 3})) + b"raw")
    first = decoder.next()
    assert first is not None and first.type == "bulk"
    assert decoder.tail() == b"raw"


def test_encode_refuses_oversized_envelope() -> None:
    with pytest.raises(MessageError, match="over the 100-byte limit"):
        encode(Envelope.new("big", {"x": "y" * 200}), max_bytes=100)


def test_decoder_refuses_oversized_length_before_reading_body() -> None:
    with pytest.raises(MessageError, match="over the 1024-byte limit"):
        FrameDecoder(max_bytes=1024).feed(HEADER.pack(10_000))


def test_encode_refuses_values_that_are_not_json() -> None:
    with pytest.raises(MessageError, match="not JSON"):
        encode(Envelope.new("t", {"b": b"bytes"}))


@pytest.mark.parametrize(("body", "match"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"version": 1}).encode(), "no type"),
    (json.dumps({"type": "t", "version": 2}).encode(), "unsupported envelope version"),
    (json.dumps({"type": "t", "version": 1, "data": [1]}).encode(), "data must be an object"),
    (json.dumps({"type": "t", "version": 1, "request_id": 5}).encode(), "must be strings"),
    (json.dumps({"type": "t", "version": 1, "timestamp": "now"}).encode(), "must be a number"),
])
def test_junk_is_rejected_with_a_clear_error(body: bytes, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        decode_body(body)
    with pytest.raises(MessageError, match=match):
        FrameDecoder().feed(HEADER.pack(len(body)) + body)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_numbers_that_are_not_finite_are_refused(number: str) -> None:
    body = ('{"type":"job_run","version":1,"request_id":"r","source_peer_id":"p",'
            f'"timestamp":1,"data":{{"timeout":{number}}}}}').encode()
    with pytest.raises(MessageError, match="finite"):
        decode_body(body)
    header_body = (f'{{"type":"ping","version":1,"timestamp":{number},"data":{{}}}}').encode()
    with pytest.raises(MessageError, match="finite"):
        decode_body(header_body)


@pytest.mark.parametrize("doc, match", [
    ({"type": "x" * 65}, "not a message type name"),
    ({"type": "no spaces"}, "not a message type name"),
    ({"type": "ping", "request_id": "r" * 129}, "at most 128"),
    ({"type": "ping", "source_peer_id": "p" * 129}, "at most 128"),
    ({"type": "ping", "timestamp": -1}, "non-negative"),
])
def test_envelope_fields_are_checked(doc: dict[str, object], match: str) -> None:
    with pytest.raises(MessageError, match=match):
        decode_body(json.dumps({"version": 1, "data": {}, **doc}).encode())


def test_nesting_past_the_recursion_limit_is_a_message_error() -> None:
    body = b'{"type":"ping","version":1,"data":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(MessageError, match="not valid JSON"):
        decode_body(body)
