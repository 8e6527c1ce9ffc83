"""HealthTracker: readiness, the start period, the failure threshold, what is worth an event."""

from __future__ import annotations

from keystone_edge.supervise.health import HealthStatus, HealthTracker, HealthUpdate, Verdict

H, U, K = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN


def tracker(*, start_period: float = 0.0, threshold: int = 3) -> HealthTracker:
    return HealthTracker(
        interval=10.0, failure_threshold=threshold, start_period=start_period, started_at=100.0
    )


def test_the_first_pass_is_ready_and_steady_passes_are_silent() -> None:
    t = tracker()
    assert t.observe(101, ok=True) == HealthUpdate(H, Verdict.READY, 0, publish=True)
    assert t.observe(111, ok=True) == HealthUpdate(H, None, 0, publish=False)
    assert t.observe(121, ok=True) == HealthUpdate(H, None, 0, publish=False)


def test_threshold_consecutive_failures_make_it_unhealthy_once_then_it_recovers() -> None:
    t = tracker(threshold=3)
    t.observe(101, ok=True)
    assert t.observe(111, ok=False) == HealthUpdate(H, None, 1, publish=True)
    assert t.observe(121, ok=False) == HealthUpdate(H, None, 2, publish=True)
    assert t.observe(131, ok=False) == HealthUpdate(U, Verdict.UNHEALTHY, 3, publish=True)
    assert t.observe(141, ok=False) == HealthUpdate(U, None, 4, publish=True)
    assert t.observe(151, ok=True) == HealthUpdate(H, Verdict.RECOVERED, 0, publish=True)
    assert t.observe(161, ok=True).publish is False


def test_a_pass_between_failures_resets_the_count() -> None:
    t = tracker(threshold=2)
    t.observe(101, ok=True)
    t.observe(111, ok=False)
    t.observe(121, ok=True)
    assert t.observe(131, ok=False).verdict is None
    assert t.observe(141, ok=False).verdict is Verdict.UNHEALTHY


def test_failures_in_the_start_period_do_not_count_and_are_not_published() -> None:
    t = tracker(start_period=30.0, threshold=1)
    for now in (100.0, 110.0, 129.9):
        assert t.observe(now, ok=False) == HealthUpdate(K, None, 0, publish=False)
    assert t.observe(130.0, ok=False) == HealthUpdate(U, Verdict.UNHEALTHY, 1, publish=True)


def test_the_start_period_ends_at_the_first_pass() -> None:
    t = tracker(start_period=30.0, threshold=1)
    assert t.observe(101.0, ok=True).verdict is Verdict.READY
    assert t.observe(102.0, ok=False).verdict is Verdict.UNHEALTHY


def test_never_healthy_then_passing_is_ready_not_recovered() -> None:
    t = tracker(threshold=1)
    assert t.observe(101, ok=False).verdict is Verdict.UNHEALTHY
    assert t.observe(111, ok=True) == HealthUpdate(H, Verdict.READY, 0, publish=True)


def test_probes_come_faster_while_booting_within_the_start_period() -> None:
    t = tracker(start_period=30.0)
    assert t.next_delay(100.0) == 0.5
    assert t.next_delay(131.0) == 10.0
    t2 = tracker(start_period=30.0)
    t2.observe(101.0, ok=True)
    assert t2.next_delay(102.0) == 10.0
    assert tracker().next_delay(100.0) == 10.0  # no start period: the recipe's interval


def test_a_zero_interval_does_not_make_a_busy_loop() -> None:
    t = HealthTracker(interval=0.0, failure_threshold=1, start_period=0.0, started_at=0.0)
    assert t.next_delay(1.0) == 0.05
