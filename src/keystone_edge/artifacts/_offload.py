"""Blocking file work in a worker thread, stoppable when the awaiting task is cancelled.

Hashing, copying and unpacking can take minutes on a slow SD card, so they run in a worker
thread (``asyncio.to_thread``) and never block the event loop. A thread cannot be
interrupted, though: on cancellation (a deployment timeout, agent shutdown) the work is
asked to stop through a :class:`threading.Event` that it checks between chunks, and the
cancelled task waits for the thread to finish before the cancellation propagates. That
wait is what lets the caller's cleanup (removing a temp directory) run without racing a
thread that is still writing into it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_in_thread"]

T = TypeVar("T")


async def run_in_thread(work: Callable[[threading.Event], T]) -> T:
    """Run ``work(stop)`` in a worker thread; on cancellation set ``stop`` and wait for it."""
    stop = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(work, stop))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                # Already cancelled once; a second request changes nothing: the thread
                # still has to reach its next stop check.
                continue
        if not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log it as forgotten
        raise
