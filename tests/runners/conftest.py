"""Shared helpers for the runner tests: an asyncio runner with a deadline, pid checks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil
import pytest

from keystone_edge.runners.logfile import RotatingLog
from keystone_edge.runners.process import install_child_watcher

T = TypeVar("T")

# The environment children get in these tests: enough to find sh, sleep and python.
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


@pytest.fixture(scope="session", autouse=True)
def _pidfd_child_watcher() -> None:
    # What the agent does at start-up: exits are seen through pidfds, not threads.
    assert install_child_watcher()


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop, failing the test instead of hanging."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan may await a reaper)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(*pids: int, timeout: float = 2.0) -> bool:
    """True once none of ``pids`` is alive. SIGKILL is delivered asynchronously, and a
    process that is not our child cannot be waited for, so this checks with a deadline."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def read_pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


class NewLog(Protocol):
    def __call__(
        self, path: Path, *, max_bytes: int, backups: int, **options: Any
    ) -> RotatingLog: ...


@pytest.fixture
def new_log() -> Iterator[NewLog]:
    """Make RotatingLogs that are closed when the test ends."""
    logs: list[RotatingLog] = []

    def make(path: Path, *, max_bytes: int, backups: int, **options: Any) -> RotatingLog:
        log = RotatingLog(path, max_bytes=max_bytes, backups=backups, **options)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


@pytest.fixture
def no_leftovers() -> Iterator[list[int]]:
    """Pids a test registers here must all be dead when it ends."""
    pids: list[int] = []
    yield pids
    gone(*pids)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        os.kill(pid, 9)
    assert not survivors, f"processes left running: {survivors}"
