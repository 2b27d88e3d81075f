"""The event bus: delivery on the loop, from threads too, bounded queues."""

from __future__ import annotations

import asyncio
import threading

from orchestrator.events import EventBus


async def test_publish_reaches_every_subscriber() -> None:
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    async with bus.subscribe() as a, bus.subscribe() as b:
        assert bus.subscriber_count == 2
        bus.publish("SERVICE_UPDATED", {"service_id": 1})
        for sub in (a, b):
            event = await asyncio.wait_for(sub.get(), 5)
            assert event.to_message() == {"type": "SERVICE_UPDATED",
                                          "payload": {"service_id": 1}}
    assert bus.subscriber_count == 0


async def test_publish_from_a_thread() -> None:
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    async with bus.subscribe() as sub:
        t = threading.Thread(target=bus.publish, args=("X", {"n": 1}))
        t.start()
        t.join(5)
        event = await asyncio.wait_for(sub.get(), 5)
        assert event.type == "X" and event.payload == {"n": 1}


async def test_slow_subscriber_drops_oldest() -> None:
    bus = EventBus(queue_size=3)
    bus.bind(asyncio.get_running_loop())
    async with bus.subscribe() as sub:
        for i in range(5):
            bus.publish("E", {"i": i})
        got = [(await sub.get()).payload["i"] for _ in range(3)]
        assert got == [2, 3, 4]
        assert sub.dropped == 2


def test_publish_before_bind_is_a_no_op() -> None:
    EventBus().publish("E")
