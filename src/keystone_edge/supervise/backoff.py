"""Restart decisions: policy, exponential backoff with jitter, retry budget. No I/O.

:class:`RestartTracker` is told when a process started and when it ended (with ``now``
from a monotonic clock) and answers with a :data:`Decision`. Rules:

- Policy ``never``: nothing is restarted. A clean exit (code 0) is :class:`DontRestart`; a
  failure is :class:`GiveUp` (the component is FAILED, not merely stopped).
- Policy ``on-failure``: a clean exit is :class:`DontRestart`; a failure is restarted.
  Policy ``always``: every exit is restarted, a clean one included.
  A failure is a non-zero exit code, death by a signal, or the supervisor killing an
  unhealthy process.
- A run that lasted at least ``backoff.reset_after`` was stable: the crash loop is over, so
  the streak and the retry window are cleared and the restart is immediate (delay 0). With
  ``reset_after = 0`` every restart is immediate and the budget never runs out.
- Otherwise the k-th restart of a crash loop (k = 0, 1, ...) waits
  ``min(initial * factor**k, max)``, spread by ``jitter``: multiplied by a uniform factor in
  ``[1 - jitter, 1 + jitter]`` and then capped at ``max`` again.
- At most ``max_retries`` restarts within any ``window`` seconds; the next failure inside
  the window is :class:`GiveUp` ("restarted 10 times within 10m; last: exited with code 1").
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from keystone_edge.recipe.model import Backoff, RestartPolicy
from keystone_edge.units import Duration

__all__ = ["Decision", "DontRestart", "GiveUp", "Restart", "RestartTracker"]


@dataclass(frozen=True)
class Restart:
    """Start the process again after ``delay`` seconds."""

    delay: float
    reason: str


@dataclass(frozen=True)
class GiveUp:
    """The process failed and will not be restarted: the component is FAILED."""

    reason: str


@dataclass(frozen=True)
class DontRestart:
    """The process ended and the policy says that is the end of it: STOPPED."""

    reason: str


Decision = Restart | GiveUp | DontRestart


class RestartTracker:
    """Decides what happens after each exit of one component's process."""

    def __init__(
        self, policy: RestartPolicy, backoff: Backoff, *, rng: random.Random | None = None
    ) -> None:
        self.policy: RestartPolicy = policy
        self.backoff = backoff
        self._rng = rng if rng is not None else random.Random()
        self._started_at: float | None = None
        self._streak = 0  # restarts in the current crash loop
        self._recent: deque[float] = deque()  # times of restarts still inside the window
        self.restarts = 0  # restarts decided since construction or reset()

    def reset(self) -> None:
        """Forget history (an operator started the component by hand)."""
        self._started_at = None
        self._streak = 0
        self._recent.clear()
        self.restarts = 0

    def started(self, now: float) -> None:
        """The process was spawned at ``now``."""
        self._started_at = now

    def exited(self, now: float, *, failed: bool, cause: str) -> Decision:
        """The process ended at ``now``; ``cause`` says how ("exited with code 1")."""
        if self.policy == "never" or (self.policy == "on-failure" and not failed):
            if failed:
                return GiveUp(f"{cause}; restart policy is never")
            return DontRestart(cause)

        ran = now - self._started_at if self._started_at is not None else 0.0
        stable = ran >= self.backoff.reset_after
        if stable:
            self._streak = 0
            self._recent.clear()
        window = float(self.backoff.window)
        while self._recent and self._recent[0] <= now - window:
            self._recent.popleft()
        if len(self._recent) >= self.backoff.max_retries:
            if self.backoff.max_retries == 0:
                return GiveUp(f"{cause}; backoff.max_retries is 0")
            return GiveUp(
                f"restarted {len(self._recent)} times within {_text(self.backoff.window)}; "
                f"last: {cause}"
            )

        delay = 0.0 if stable else self._next_delay()
        self._recent.append(now)
        self.restarts += 1
        when = f"restarting in {_text(delay)}" if delay > 0 else "restarting now"
        return Restart(delay, f"{cause}; {when}")

    def _next_delay(self) -> float:
        initial, cap = float(self.backoff.initial), float(self.backoff.max)
        try:
            base = initial * self.backoff.factor**self._streak if initial > 0 else 0.0
        except OverflowError:
            base = math.inf
        base = min(base, cap)
        if base < cap:
            # Once at the cap the exponent stops growing, so it can never overflow.
            self._streak += 1
        jitter = self.backoff.jitter
        spread = base * (1.0 + jitter * self._rng.uniform(-1.0, 1.0)) if jitter else base
        return min(max(spread, 0.0), cap)


def _text(seconds: float) -> str:
    # "10m" as the recipe author wrote it; computed delays rounded to the millisecond.
    if isinstance(seconds, Duration):
        return seconds.text
    return Duration(round(seconds, 3)).text
