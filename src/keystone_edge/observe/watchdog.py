"""systemd's watchdog (``WatchdogSec=``): ``WATCHDOG=1`` sent from the agent's event loop.

Rules:

- Active only when systemd asks for it: ``WATCHDOG_USEC`` is set and ``WATCHDOG_PID`` is
  unset or this process's pid (sd_watchdog_enabled(3)); otherwise :func:`watchdog_interval`
  is ``None`` and the agent starts no watchdog task.
- The ping is sent every half of ``WATCHDOG_USEC`` by a task on the event loop, the one
  periodic timer the agent keeps. It proves exactly what systemd needs proven: the loop
  runs callbacks. A loop blocked by a hung call stops pinging and systemd restarts the
  agent (with ``Restart=on-watchdog`` or ``on-failure``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

from keystone_edge.observe.systemd import notify

__all__ = ["run_watchdog", "watchdog_interval"]

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when not asked to ping."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None  # meant for another process (e.g. our parent)
    return int(usec) / 2e6


async def run_watchdog(interval: float, *, send: Callable[[str], bool] = notify) -> None:
    """Ping every ``interval`` seconds until cancelled."""
    log.info("systemd watchdog: pinging every %.3g s", interval)
    while True:
        send("WATCHDOG=1")
        await asyncio.sleep(interval)
