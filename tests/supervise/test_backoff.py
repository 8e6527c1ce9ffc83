"""Restart decisions: policies, the exponential sequence, jitter, the budget, the reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.recipe.model import Backoff, RestartPolicy
from keystone_edge.supervise.backoff import DontRestart, GiveUp, Restart, RestartTracker
from keystone_edge.units import Duration

FAIL = "exited with code 1"


def backoff(**kw: float | int | str) -> Backoff:
    values: dict[str, object] = {
        "initial": "100ms",
        "factor": 2.0,
        "max": "1s",
        "jitter": 0.0,
        "max_retries": 100,
        "window": "10m",
        "reset_after": "1m",
    }
    values.update(kw)
    durations = {k: Duration.parse(v) for k, v in values.items() if isinstance(v, str)}
    return Backoff(**{**values, **durations})  # type: ignore[arg-type]


def crash_loop(tracker: RestartTracker, count: int, *, every: float = 0.01) -> list[float]:
    """Crash ``count`` times, each run lasting ``every`` seconds; return the delays."""
    delays: list[float] = []
    now = 0.0
    for _ in range(count):
        tracker.started(now)
        now += every
        decision = tracker.exited(now, failed=True, cause=FAIL)
        assert isinstance(decision, Restart), decision
        delays.append(decision.delay)
        now += decision.delay
    return delays


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    tracker = RestartTracker("on-failure", backoff())
    assert crash_loop(tracker, 7) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert tracker.restarts == 7


def test_restart_reason_says_when() -> None:
    tracker = RestartTracker("always", backoff())
    tracker.started(0.0)
    decision = tracker.exited(1.0, failed=True, cause=FAIL)
    assert decision == Restart(0.1, "exited with code 1; restarting in 100ms")


def test_jitter_stays_within_bounds_and_is_deterministic_with_a_seed() -> None:
    settings = backoff(jitter=0.5, max="1s", initial="400ms")
    first = crash_loop(RestartTracker("always", settings, rng=random.Random(7)), 40)
    again = crash_loop(RestartTracker("always", settings, rng=random.Random(7)), 40)
    assert first == again
    bases = [min(0.4 * 2**k, 1.0) for k in range(40)]
    for delay, base in zip(first, bases, strict=True):
        assert base * 0.5 <= delay <= min(base * 1.5, 1.0)
    assert len(set(first)) > 20  # actually spread, not the same number every time


def test_gives_up_after_max_retries_within_the_window() -> None:
    tracker = RestartTracker("on-failure", backoff(max_retries=3, window="10s", initial="0s"))
    crash_loop(tracker, 3, every=1.0)
    tracker.started(3.0)
    decision = tracker.exited(4.0, failed=True, cause=FAIL)
    assert decision == GiveUp("restarted 3 times within 10s; last: exited with code 1")


def test_the_window_slides() -> None:
    tracker = RestartTracker("on-failure", backoff(max_retries=2, window="10s", initial="0s"))
    crash_loop(tracker, 2, every=1.0)  # restarts at t=1 and t=2
    tracker.started(11.4)
    assert isinstance(tracker.exited(11.5, failed=True, cause=FAIL), Restart)  # t=1 slid out
    tracker.started(11.6)
    assert isinstance(tracker.exited(11.8, failed=True, cause=FAIL), GiveUp)  # t=2 and 11.5


def test_max_retries_zero_means_no_restart_at_all() -> None:
    tracker = RestartTracker("always", backoff(max_retries=0))
    tracker.started(0.0)
    assert tracker.exited(0.5, failed=True, cause=FAIL) == GiveUp(
        "exited with code 1; backoff.max_retries is 0"
    )


def test_a_stable_run_resets_the_streak_and_restarts_at_once() -> None:
    tracker = RestartTracker("on-failure", backoff(reset_after="1m", max_retries=5))
    assert crash_loop(tracker, 5) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    tracker.started(100.0)
    decision = tracker.exited(160.0, failed=True, cause=FAIL)  # up exactly reset_after
    assert decision == Restart(0.0, "exited with code 1; restarting now")
    # The budget was cleared too, and the next quick crash starts the sequence again.
    tracker.started(160.0)
    decision = tracker.exited(161.0, failed=True, cause=FAIL)
    assert isinstance(decision, Restart)
    assert decision.delay == pytest.approx(0.1)


def test_reset_after_zero_makes_every_restart_immediate() -> None:
    tracker = RestartTracker("always", backoff(reset_after="0", max_retries=1))
    assert crash_loop(tracker, 50) == [0.0] * 50


@pytest.mark.parametrize(
    ("policy", "failed", "expected"),
    [
        ("never", False, DontRestart("exited with code 0")),
        ("never", True, GiveUp("exited with code 0; restart policy is never")),
        ("on-failure", False, DontRestart("exited with code 0")),
        ("on-failure", True, Restart(0.1, "exited with code 0; restarting in 100ms")),
        ("always", False, Restart(0.1, "exited with code 0; restarting in 100ms")),
        ("always", True, Restart(0.1, "exited with code 0; restarting in 100ms")),
    ],
)
def test_policies(policy: RestartPolicy, failed: bool, expected: object) -> None:
    tracker = RestartTracker(policy, backoff())
    tracker.started(0.0)
    assert tracker.exited(1.0, failed=failed, cause="exited with code 0") == expected


def test_operator_reset_forgets_everything() -> None:
    tracker = RestartTracker("always", backoff(max_retries=2))
    crash_loop(tracker, 2)
    tracker.reset()
    assert tracker.restarts == 0
    assert crash_loop(tracker, 2) == pytest.approx([0.1, 0.2])


def test_a_huge_streak_does_not_overflow() -> None:
    tracker = RestartTracker("always", backoff(factor=10.0, max="30s", max_retries=10**6))
    assert crash_loop(tracker, 2000)[-1] == 30.0


@given(
    initial=st.floats(0, 10),
    factor=st.floats(1, 10),
    cap=st.floats(0, 100),
    jitter=st.floats(0, 1),
    runs=st.lists(st.floats(0, 120), min_size=1, max_size=30),
    seed=st.integers(0, 2**32),
)
def test_delays_are_always_between_zero_and_the_cap(  # noqa: PLR0917 - hypothesis passes them
    initial: float, factor: float, cap: float, jitter: float, runs: list[float], seed: int
) -> None:
    settings = Backoff(
        initial=Duration(initial),
        factor=factor,
        max=Duration(cap),
        jitter=jitter,
        max_retries=1000,
        window=Duration(600),
        reset_after=Duration(60),
    )
    tracker = RestartTracker("always", settings, rng=random.Random(seed))
    now = 0.0
    previous = -1.0
    for run in runs:
        tracker.started(now)
        now += run
        decision = tracker.exited(now, failed=True, cause=FAIL)
        assert isinstance(decision, Restart)
        assert 0.0 <= decision.delay <= cap
        if jitter == 0 and run < 60 and previous >= 0:
            assert decision.delay >= previous  # never shrinks inside a crash loop
        previous = decision.delay if run < 60 else 0.0
        now += decision.delay
