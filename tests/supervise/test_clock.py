"""Clocks: the manual one jumps instead of sleeping."""

from __future__ import annotations

import asyncio
import time

import pytest

from keystone_edge.supervise.clock import ManualClock, SystemClock

from .conftest import run


def test_manual_clock_wakes_sleepers_in_deadline_order_only_when_advanced() -> None:
    async def main() -> list[str]:
        clock = ManualClock(start=5.0)
        woke: list[str] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(f"{name}@{clock.monotonic():g}")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleeper("late", 10))
            tg.create_task(sleeper("early", 2))
            await asyncio.sleep(0)
            assert clock.sleepers == 2
            clock.advance(1)
            await asyncio.sleep(0)
            assert woke == []
            clock.advance(9)
        return woke

    assert run(main()) == ["early@15", "late@15"]


def test_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="cannot go back"):
        ManualClock().advance(-1)


def test_system_clock_is_monotonic_and_sleeps() -> None:
    clock = SystemClock()
    before = clock.monotonic()
    run(clock.sleep(0.01))
    assert clock.monotonic() - before >= 0.01
    assert abs(clock.monotonic() - time.monotonic()) < 0.1
