"""How responsive the event loop is, measured only when someone asks.

:func:`loop_lag` schedules one callback and times how long it waits for its turn: the
callbacks queued ahead of it plus any blocking call running now. ``/readyz`` and
``/metrics`` call it per request; nothing measures the loop in between (no periodic task).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["loop_lag"]


async def loop_lag() -> float:
    """Seconds between scheduling a callback with ``call_soon`` and its running."""
    loop = asyncio.get_running_loop()
    ran: asyncio.Future[float] = loop.create_future()

    def mark() -> None:
        if not ran.done():
            ran.set_result(time.perf_counter())

    scheduled = time.perf_counter()
    loop.call_soon(mark)
    return await ran - scheduled
