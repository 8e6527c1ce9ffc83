"""Shared helpers for the supervisor tests: recipes, an event recorder, a deadline runner."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psutil
import pytest

from keystone_edge.observe.events import Event, EventBus
from keystone_edge.recipe.model import Recipe
from keystone_edge.runners.base import Runner
from keystone_edge.runners.process import ProcessRunner, install_child_watcher
from keystone_edge.supervise.clock import Clock
from keystone_edge.supervise.supervisor import RunPlan, Supervisor
from keystone_edge.units import Duration

T = TypeVar("T")
PYTHON = sys.executable


@pytest.fixture(scope="session", autouse=True)
def _pidfd_child_watcher() -> None:
    assert install_child_watcher()


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop, failing the test instead of hanging."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def _decode(kind: type, value: Any) -> Any:
    if kind is Duration:
        return Duration.parse(value)
    raise NotImplementedError(kind)


def recipe(name: str = "com.example.app", version: str = "1.0.0", **lifecycle: Any) -> Recipe:
    """A recipe from plain data, durations written as strings like in a recipe file."""
    security = lifecycle.pop("security", {})
    data = {
        "metadata": {"name": name, "version": version},
        "lifecycle": lifecycle,
        "security": security,
    }
    return msgspec.convert(data, Recipe, dec_hook=_decode)


def plan(tmp_path: Path, recipe_: Recipe, **env: str) -> RunPlan:
    return RunPlan(
        name=recipe_.name,
        version=recipe_.version,
        recipe=recipe_,
        work_dir=tmp_path / "work" / recipe_.name,
        env=env,
    )


def python(code: str) -> dict[str, Any]:
    """A ``run.exec`` table that runs ``code`` with this interpreter."""
    return {"command": PYTHON, "args": ["-c", code]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Recorder:
    """Collects events from a bus; tests wait on it with deadlines, never with sleeps."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        self.times: list[float] = []  # perf_counter at publish time
        self._changed = asyncio.Event()
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        self.times.append(time.perf_counter())
        self._changed.set()

    def states(self, component: str | None = None) -> list[tuple[str, str]]:
        return [
            (e.payload["from_state"], e.payload["to_state"])
            for e in self.events
            if e.type == "component.state"
            and (component is None or e.payload["component"] == component)
        ]

    def of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]

    async def wait_for(
        self, predicate: Callable[[Event], bool], *, after: int = 0, timeout: float = 10.0
    ) -> int:
        """Index of the first event from ``after`` on that matches; waits up to ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                for index in range(after, len(self.events)):
                    if predicate(self.events[index]):
                        return index
                self._changed.clear()
                await self._changed.wait()

    async def state(
        self,
        to_state: str,
        *,
        component: str | None = None,
        trigger: str | None = None,
        after: int = 0,
        timeout: float = 10.0,
    ) -> Event:
        """Wait for a ``component.state`` event into ``to_state`` (and return it)."""

        def match(event: Event) -> bool:
            payload = event.payload
            return (
                event.type == "component.state"
                and payload["to_state"] == to_state
                and (component is None or payload["component"] == component)
                and (trigger is None or payload["trigger"] == trigger)
            )

        index = await self.wait_for(match, after=after, timeout=timeout)
        return self.events[index]


def env_dump_code(path: Path) -> str:
    """Python code that writes its environment and cwd to ``path``, then sleeps."""
    return (
        "import json, os, time\n"
        "data = json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()})\n"
        f"open({str(path)!r} + '.tmp', 'w').write(data)\n"
        f"os.replace({str(path)!r} + '.tmp', {str(path)!r})  # appears complete\n"
        "time.sleep(1000)\n"
    )


def gone(*pids: int, timeout: float = 2.0) -> bool:
    """True once none of ``pids`` is alive (SIGKILL lands asynchronously; bounded check)."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Wait for a side effect outside the supervisor (a file a child writes), with a deadline."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def supervising(
    tmp_path: Path, *, runner: Runner | None = None, clock: Clock | None = None
) -> AsyncIterator[tuple[Supervisor, Recorder]]:
    """A supervisor with real processes; every process it ever ran is gone afterwards."""
    bus = EventBus()
    recorder = Recorder(bus)
    async with Supervisor(
        events=bus,
        runner=runner or ProcessRunner(),
        log_dir=tmp_path / "logs",
        log_max_bytes=1 << 20,
        log_backups=2,
        clock=clock,
        rng=random.Random(1),
    ) as supervisor:
        yield supervisor, recorder
    pids = {e.payload["pid"] for e in recorder.of("component.state") if e.payload["pid"]}
    assert gone(*pids), f"left running: {[p for p in pids if alive(p)]}"
