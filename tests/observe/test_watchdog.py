"""systemd's watchdog: when it pings, and that the pings come from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from keystone_edge.observe.watchdog import run_watchdog, watchdog_interval


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # meant for someone else
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


def test_pings_stop_while_the_loop_is_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    arrivals: list[tuple[float, bytes]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)

        def receive() -> None:
            with contextlib.suppress(TimeoutError, OSError):
                while (message := sock.recv(64)) != b"END":
                    arrivals.append((time.monotonic(), message))

        receiver = threading.Thread(target=receive)
        receiver.start()

        async def scenario() -> tuple[float, float]:
            task = asyncio.create_task(run_watchdog(0.05))
            await asyncio.sleep(0.3)
            hung = time.monotonic()
            time.sleep(0.6)  # a hung call on the loop: nothing can ping meanwhile
            resumed = time.monotonic()
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.wait([task])
            return hung, resumed

        hung, resumed = asyncio.run(scenario())
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"END", str(path))
        receiver.join()
    assert {message for _, message in arrivals} == {b"WATCHDOG=1"}
    before = [t for t, _ in arrivals if t < hung]
    during = [t for t, _ in arrivals if hung + 0.01 < t < resumed - 0.01]
    after = [t for t, _ in arrivals if t >= resumed]
    assert len(before) >= 4
    assert during == []
    assert len(after) >= 4
