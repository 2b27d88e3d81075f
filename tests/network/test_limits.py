"""The caps and windows as plain logic, without sockets."""

from __future__ import annotations

import pytest

from network.limits import (
    MIB,
    Budget,
    ConnectionBook,
    ConnectionRefused,
    ReceiveWindows,
    TransportLimits,
)


def test_windows_advance_only_with_what_was_consumed() -> None:
    w = ReceiveWindows(stream_window=1000, connection_window=4000)
    w.open(0)
    # Nothing read: whatever the peer sent, the limit stays where it was.
    assert w.stream_limit(0, 1000) == 1000
    assert w.connection_limit(4000) == 4000
    w.consumed(0, 400)  # less than half a window more: batched, not yet sent
    assert w.stream_limit(0, 1000) == 1000
    assert not w.due(0, 1000, 4000)
    w.consumed(0, 200)
    assert w.stream_limit(0, 1000) == 1600
    assert w.due(0, 1000, 4000)
    assert w.connection_limit(4000) == 4000  # 600 of 4000 consumed: not yet half


def test_a_stream_no_longer_counted_still_frees_connection_window() -> None:
    w = ReceiveWindows(stream_window=1000, connection_window=1000)
    w.open(4)
    w.forget(4)
    w.consumed(4, 700)
    assert w.streams == 0
    assert w.connection_limit(1000) == 1700


def test_connection_book_caps_total_unverified_and_per_peer() -> None:
    book = ConnectionBook(TransportLimits(max_connections=5, max_unverified=3,
                                          max_connections_per_peer=2))
    keys = [object() for _ in range(6)]
    for k in keys[:3]:
        book.open(k)
    with pytest.raises(ConnectionRefused, match="identity exchange"):
        book.open(keys[3])
    assert book.refusal(keys[0], "p") is None
    book.verified(keys[0], "p")
    book.verified(keys[1], "p")
    assert "limit is 2" in (book.refusal(keys[2], "p") or "")
    assert book.refusal(keys[2], "q") is None
    book.verified(keys[2], "q")
    book.open(keys[3])
    book.open(keys[4])
    with pytest.raises(ConnectionRefused, match="5 incoming connections"):
        book.open(keys[5])
    book.close(keys[0])
    assert book.of_peer("p") == 1
    book.open(keys[5])
    assert len(book) == 5


def test_budget_holds_within_itself_and_its_parent() -> None:
    total = Budget(10)
    a, b = Budget(6, parent=total), Budget(6, parent=total)
    assert a.take(6)
    assert not a.take(1)
    assert not b.take(5)  # the parent has 4 left
    assert b.take(4)
    a.give(6)
    assert total.held == 4
    assert b.take(2)
    b.give(100)
    assert (b.held, total.held) == (0, 0)


@pytest.mark.parametrize("field", ["stream_window", "max_connections", "bulk_max_connections"])
def test_limits_refuse_nonsense(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TransportLimits(**{field: 0})


def test_limits_refuse_non_finite_timeouts() -> None:
    with pytest.raises(ValueError, match="send_stall_timeout"):
        TransportLimits(send_stall_timeout=float("nan"))
    assert TransportLimits().stream_window == 2 * MIB
