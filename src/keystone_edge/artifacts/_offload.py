"""Blocking file work in a worker thread, stoppable when the awaiting task is cancelled.

Hashing, copying and unpacking can take minutes on a slow SD card, so they run in a worker
thread (``asyncio.to_thread``) and never block the event loop. A thread cannot be
interrupted, though: on cancellation (a deployment timeout, agent shutdown) the work is
asked to stop through a :class:`threading.Event` that it checks between chunks, and the
cancelled task waits for the thread to finish before the cancellation propagates. That
wait is what lets the caller's cleanup (removing a temp directory) run without racing a
thread that is still writing into it.

Work that holds a thread for a long time while mostly waiting (a download) runs in a
thread of its own (:func:`run_in_own_thread`) rather than in the loop's default executor,
whose few threads (cores + 4) the rest of the agent shares: six parallel downloads must
not stall every ``to_thread`` call in the agent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["run_in_own_thread", "run_in_thread"]

T = TypeVar("T")


async def run_in_thread(
    work: Callable[[threading.Event], T], *, on_cancel: Callable[[], None] | None = None
) -> T:
    """Run ``work(stop)`` in a worker thread; on cancellation set ``stop`` and wait for it.

    ``on_cancel`` runs (in the loop's thread) right after ``stop`` is set, for work that
    can block for long between its checks: it can wake the thread (close its socket).
    """
    stop = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(work, stop))
    return await _wait(future, stop, on_cancel)


async def run_in_own_thread(
    work: Callable[[threading.Event], T],
    *,
    name: str,
    on_cancel: Callable[[], None] | None = None,
) -> T:
    """Like :func:`run_in_thread`, in a new thread named ``name`` (see the module notes)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    stop = threading.Event()

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            outcome(value)

    def main() -> None:
        try:
            result = work(stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, re-raised there
            loop.call_soon_threadsafe(settle, future.set_exception, exc)
        else:
            loop.call_soon_threadsafe(settle, future.set_result, result)

    threading.Thread(target=main, name=name, daemon=True).start()
    return await _wait(future, stop, on_cancel)


async def _wait(
    future: asyncio.Future[T], stop: threading.Event, on_cancel: Callable[[], None] | None
) -> T:
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        if on_cancel is not None:
            on_cancel()
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
