"""The event bus: synchronous subscribers, bounded lossy streams."""

from __future__ import annotations

import asyncio

from keystone_edge.observe.events import Event, EventBus


def test_subscribers_see_events_in_order_and_a_failing_one_is_skipped() -> None:
    bus = EventBus(first_id=10, clock=lambda: 123.0)
    seen: list[Event] = []

    def broken(_event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    unsubscribe = bus.subscribe(seen.append)
    first = bus.publish("component.state", component="com.a")
    bus.publish("deployment.done", deployment_id="d1")
    unsubscribe()
    bus.publish("ignored")
    assert [(e.id, e.type) for e in seen] == [(10, "component.state"), (11, "deployment.done")]
    assert first == Event(id=10, ts=123.0, type="component.state", payload={"component": "com.a"})


def test_a_slow_stream_drops_the_oldest_events() -> None:
    async def main() -> None:
        bus = EventBus()
        stream = bus.stream(maxsize=3)
        for i in range(5):
            bus.publish("tick", i=i)
        assert stream.dropped == 2
        got = [(await stream.get()).payload["i"] for _ in range(3)]
        assert got == [2, 3, 4]
        stream.close()
        bus.publish("after-close")
        assert stream._queue.empty()

    asyncio.run(main())
