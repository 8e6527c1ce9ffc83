"""Monotonic, injectable time for every timeout, backoff and probe interval.

Rules:

- Supervision logic never reads the wall clock: durations are measured with
  :meth:`Clock.monotonic` and waits go through :meth:`Clock.sleep`, so a test can swap in
  :class:`ManualClock` and jump time instead of sleeping (trio's ``MockClock`` idea).
- The sans-IO cores (:mod:`.backoff`, :mod:`.health`) take ``now`` floats from a clock;
  they never call one themselves.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Where the supervisor gets "now" and how it waits."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (arbitrary origin)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real monotonic clock, the one the agent uses."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that only moves when a test calls :meth:`advance`.

    Sleepers wake in deadline order once the clock reaches their deadline; a cancelled
    sleeper is simply forgotten. ``sleep(0)`` (or a negative delay) still yields once, like
    :func:`asyncio.sleep`.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock right now."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds}s)")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:g}, sleepers={self.sleepers})"
