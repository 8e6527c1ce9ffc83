"""The internal event bus: the one seam between domain code and everything that watches it.

Domain code (supervisor, deployment engine, artifact manager) calls :meth:`EventBus.publish`
and nothing else; the state store, logs, metrics, the API's SSE stream and control-plane
adapters subscribe. Rules:

- Synchronous subscribers run inline, in subscription order, before ``publish`` returns
  (the store persists a transition before anything else can observe it). A subscriber that
  raises is logged and skipped; it never breaks the publisher.
- Asynchronous streams get events through bounded queues; a slow reader loses the oldest
  events (counted in :attr:`EventStream.dropped`), it never blocks the agent.
- Event ids increase monotonically for the life of the state database (the bus is seeded
  with the last persisted id), so a client can resume with ``since=ID``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

__all__ = ["Event", "EventBus", "EventStream", "Subscriber"]

log = logging.getLogger(__name__)


class Event(msgspec.Struct, frozen=True):
    id: int
    ts: float  # wall-clock seconds since the epoch, for humans
    type: str  # component.state, component.health, deployment.step, deployment.done, ...
    payload: dict[str, Any]


Subscriber = Callable[[Event], None]


class EventStream:
    """A bounded, lossy-at-the-head queue of events for one asynchronous reader."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def close(self) -> None:
        self._bus._streams.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while True:
                yield await self._queue.get()
        finally:
            self.close()


class EventBus:
    def __init__(self, *, first_id: int = 1, clock: Callable[[], float] = time.time) -> None:
        self._next_id = first_id
        self._clock = clock
        self._subscribers: list[Subscriber] = []
        self._streams: set[EventStream] = set()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for every event from now on; returns the unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def stream(self, maxsize: int = 1000) -> EventStream:
        """A new bounded stream of events published from now on (close it when done)."""
        stream = EventStream(self, maxsize)
        self._streams.add(stream)
        return stream

    def publish(self, type: str, /, **payload: Any) -> Event:
        event = Event(id=self._next_id, ts=self._clock(), type=type, payload=payload)
        self._next_id += 1
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", callback, type)
        for stream in list(self._streams):
            stream._offer(event)
        return event
