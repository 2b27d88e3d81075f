"""The request stream protocol, both sides wired together in memory."""

from __future__ import annotations

import pytest

from network.limits import Budget
from network.messages import BULK, HEADER, Envelope, encode
from network.peer_errors import PeerClosed, RemoteError
from network.stream_protocol import (
    ENDED,
    NEED_DATA,
    Answered,
    AnswerState,
    CallState,
    EnvelopeReader,
    Progress,
    RequestAnswer,
    RequestCall,
    StreamUsageError,
    Unanswered,
    result_of,
)

ALICE, BOB = "a" * 40, "b" * 40


def events(call: RequestCall, data: bytes, *, end: bool = True) -> list[object]:
    """Feed ``data`` (then the end of stream) to ``call``; every event up to the answer."""
    call.receive_data(data)
    if end:
        call.receive_data(b"")
    out: list[object] = []
    while call.state is CallState.WAITING:
        event = call.next_event()
        if event is NEED_DATA:
            break
        out.append(event)
    return out


def asked(msg_type: str = "echo", data: dict[str, object] | None = None,
          **answer_kwargs: object) -> tuple[RequestCall, RequestAnswer, Envelope]:
    call = RequestCall(BOB, msg_type, data or {"x": 1}, source_peer_id=ALICE, now=1.0)
    answer = RequestAnswer(ALICE, source_peer_id=BOB, **answer_kwargs)  # type: ignore[arg-type]
    answer.receive_data(call.opening())
    answer.receive_data(b"")
    request = answer.next_request()
    assert isinstance(request, Envelope)
    return call, answer, request


def test_a_request_is_answered_after_its_events() -> None:
    call, answer, request = asked(data={"x": 1})
    assert (request.type, request.data, request.source_peer_id) == ("echo", {"x": 1}, ALICE)
    assert answer.state is AnswerState.ANSWERING
    wire = answer.event({"step": 1}) + answer.event({"step": 2}) + answer.response({"ok": True})
    assert answer.state is AnswerState.DONE
    assert events(call, wire) == [Progress({"step": 1}), Progress({"step": 2}),
                                  Answered({"ok": True})]
    assert call.state is CallState.ANSWERED


def test_frames_split_at_every_byte_still_make_whole_envelopes() -> None:
    call = RequestCall(BOB, "echo", {"text": "héllo"}, source_peer_id=ALICE)
    answer = RequestAnswer(ALICE, source_peer_id=BOB)
    for byte in call.opening():
        assert answer.next_request() is NEED_DATA
        answer.receive_data(bytes([byte]))
    request = answer.next_request()
    assert isinstance(request, Envelope) and request.data == {"text": "héllo"}
    wire = answer.event({"n": 1}) + answer.response({"n": 2})
    got: list[object] = []
    for byte in wire:
        call.receive_data(bytes([byte]))
        while call.state is CallState.WAITING and (event := call.next_event()) is not NEED_DATA:
            got.append(event)
    assert got == [Progress({"n": 1}), Answered({"n": 2})]


def test_answers_carry_the_request_id_and_the_answerers_peer_id() -> None:
    call, answer, request = asked()
    reply = EnvelopeReader(BOB)
    reply.receive_data(answer.response({}))
    envelope = reply.next_envelope()
    assert isinstance(envelope, Envelope)
    assert envelope.request_id == call.request.request_id == request.request_id
    assert envelope.source_peer_id == BOB


def test_an_error_answer_is_a_remote_error_naming_the_peer() -> None:
    call, answer, _ = asked()
    with pytest.raises(RemoteError, match="no such thing") as err:
        events(call, answer.error("no such thing"))
    assert err.value.peer_id == BOB
    assert call.state is CallState.FAILED


def test_an_error_without_a_message_says_which_request_failed() -> None:
    call = RequestCall(BOB, "echo")
    frame = encode(call.request.reply("error", {}))
    with pytest.raises(RemoteError, match="'echo' failed"):
        events(call, frame)


def test_an_answer_of_another_type_closes_the_request() -> None:
    call = RequestCall(BOB, "echo")
    with pytest.raises(PeerClosed, match="answered 'echo' with unexpected 'bulk'"):
        events(call, encode(call.request.reply(BULK, {})))


def test_a_stream_that_ends_before_the_answer_is_unanswered() -> None:
    call, answer, _ = asked()
    assert events(call, answer.event({"step": 1})) == [Progress({"step": 1}), Unanswered()]
    error = call.unanswered("idle timeout")
    assert isinstance(error, PeerClosed)
    assert error.reason == "'echo' closed before an answer (idle timeout)"
    assert call.unanswered().reason == "'echo' closed before an answer"


def test_a_stream_that_ends_inside_a_frame_is_closed() -> None:
    call, answer, _ = asked()
    with pytest.raises(PeerClosed, match="stream ended inside a frame"):
        events(call, answer.response({"ok": True})[:-1])


def test_junk_is_a_bad_frame() -> None:
    call = RequestCall(BOB, "echo")
    with pytest.raises(PeerClosed, match="sent a bad frame"):
        events(call, HEADER.pack(5) + b"{nope", end=False)
    oversized = RequestAnswer(ALICE)
    oversized.receive_data(HEADER.pack(64 * 1024 * 1024))
    with pytest.raises(PeerClosed, match="over the"):
        oversized.next_request()


def test_a_stream_that_ends_without_a_request_needs_no_answer() -> None:
    answer = RequestAnswer(ALICE)
    answer.receive_data(b"")
    assert answer.next_request() is ENDED
    assert answer.state is AnswerState.DONE


def test_bytes_after_the_request_stay_raw_for_a_stream_handler() -> None:
    call = RequestCall(BOB, "relay_incoming")
    answer = RequestAnswer(ALICE)
    answer.receive_data(call.opening() + b"\x00\x03abc")
    assert isinstance(answer.next_request(), Envelope)
    assert answer.tail() == b"\x00\x03abc"


def test_a_request_over_the_connection_budget_is_refused_and_gives_it_back() -> None:
    total = Budget(1000)
    budget = Budget(100, parent=total)
    answer = RequestAnswer(ALICE, budget=budget)
    answer.receive_data(HEADER.pack(500) + b"x" * 60)
    assert budget.held == 64 and total.held == 64
    with pytest.raises(PeerClosed, match="hold over 100 bytes on this connection"):
        answer.receive_data(b"x" * 60)
    answer.release()
    assert budget.held == 0 and total.held == 0


def test_the_nodes_total_bounds_every_connection_together() -> None:
    total = Budget(100)
    first = RequestAnswer(ALICE, budget=Budget(80, parent=total))
    second = RequestAnswer(ALICE, budget=Budget(80, parent=total))
    first.receive_data(HEADER.pack(500) + b"x" * 56)
    with pytest.raises(PeerClosed, match="node's total is reached"):
        second.receive_data(b"x" * 60)
    first.release()
    second.receive_data(b"x" * 60)
    assert total.held == 60


def test_a_whole_request_leaves_the_budget() -> None:
    budget = Budget(10_000)
    call = RequestCall(BOB, "echo", {"x": 1})
    answer = RequestAnswer(ALICE, budget=budget)
    answer.receive_data(call.opening())
    assert budget.held > 0
    assert isinstance(answer.next_request(), Envelope)
    assert budget.held == 0


def test_a_request_that_cannot_be_read_gets_an_error_of_its_own() -> None:
    answer = RequestAnswer(ALICE, source_peer_id=BOB)
    reply = EnvelopeReader(BOB)
    reply.receive_data(answer.error("no request within 5s"))
    envelope = reply.next_envelope()
    assert isinstance(envelope, Envelope)
    assert (envelope.type, envelope.data) == ("error", {"error": "no request within 5s"})
    assert answer.state is AnswerState.DONE


def test_answering_out_of_order_is_a_usage_error() -> None:
    unread = RequestAnswer(ALICE)
    with pytest.raises(StreamUsageError):
        unread.event({})
    with pytest.raises(StreamUsageError):
        unread.response({})
    _, answer, _ = asked()
    answer.response({})
    for misuse in (lambda: answer.event({}), lambda: answer.response({}),
                   lambda: answer.error("late"), lambda: answer.receive_data(b"x"),
                   answer.next_request):
        with pytest.raises(StreamUsageError):
            misuse()


def test_a_finished_call_takes_no_more_events() -> None:
    call, answer, _ = asked()
    events(call, answer.response({}))
    with pytest.raises(StreamUsageError):
        call.next_event()
    reader = EnvelopeReader(BOB)
    reader.receive_data(b"")
    with pytest.raises(StreamUsageError):
        reader.receive_data(b"more")


def test_result_of_maps_each_answer_kind() -> None:
    request = Envelope.new("echo")
    assert result_of(BOB, "echo", request.reply("response", {"a": 1})) == {"a": 1}
    with pytest.raises(RemoteError, match="boom"):
        result_of(BOB, "echo", request.reply("error", {"error": "boom"}))
    with pytest.raises(PeerClosed, match="unexpected 'event'"):
        result_of(BOB, "echo", request.reply("event", {}))
