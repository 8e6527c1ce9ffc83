"""Metrics: the event tally's decisions, the rendered text (checked by promtool), and the
process-tree figures read from a real process tree."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from keystone_edge.observe.events import Event, EventBus
from keystone_edge.observe.metrics import (
    STATES,
    ComponentSample,
    EventTally,
    Histogram,
    Metrics,
    Snapshot,
    process_tree_usage,
    restart_reason,
)

PROMTOOL = shutil.which("promtool")


def state(**payload: object) -> dict[str, object]:
    base: dict[str, object] = {
        "component": "com.a",
        "version": "1.0.0",
        "from_state": "RUNNING",
        "to_state": "STARTING",
        "trigger": "RESTART_SCHEDULED",
        "reason": "exited with code 1; restarting in 100ms",
        "exit_code": 1,
        "signal": None,
    }
    base.update(payload)
    return base


@pytest.mark.parametrize(
    ("payload", "oom", "reason"),
    [
        (state(), False, "exit"),
        (
            state(exit_code=None, signal=9, reason="killed by signal 9 (SIGKILL); ..."),
            False,
            "signal",
        ),
        (state(exit_code=None, signal=9, reason="killed by the OOM killer (32Mi)"), True, "oom"),
        (
            state(
                from_state="STOPPING",
                exit_code=None,
                signal=15,
                reason="health check failed 3 times in a row: connection refused; restarting",
            ),
            False,
            "health",
        ),
    ],
)
def test_restart_reasons(payload: dict[str, object], oom: bool, reason: str) -> None:
    assert restart_reason(payload, oom=oom) == reason


def test_an_oom_event_marks_the_restart_that_follows() -> None:
    oom: dict[str, object] = {"component": "com.a", "version": "1.0.0", "reason": "OOM killer"}
    tally = tally_of(
        ("component.oom", oom),
        ("component.state", state(exit_code=None, signal=9)),
        ("component.state", state(exit_code=None, signal=9)),  # a plain kill afterwards
        ("component.oom", oom),
        ("component.state", state(trigger="GIVE_UP", to_state="FAILED", signal=9)),
        ("component.state", state()),
    )
    assert tally.components["com.a"].restarts == {"exit": 1, "signal": 1, "oom": 1, "health": 0}


def tally_of(
    *events: tuple[str, dict[str, object]], clock: Iterator[float] | None = None
) -> EventTally:
    times = clock or iter(range(1000))
    bus = EventBus(clock=lambda: float(next(times)))
    tally = EventTally()
    bus.subscribe(tally)
    for kind, payload in events:
        bus.publish(kind, **payload)
    return tally


def test_restarts_and_health_failures_are_counted_per_component_and_version() -> None:
    tally = tally_of(
        ("component.state", state()),
        ("component.state", state(exit_code=None, signal=9)),
        ("component.state", state(trigger="READY", to_state="RUNNING", from_state="STARTING")),
        (
            "component.health",
            {"component": "com.a", "version": "1.0.0", "ok": False, "latency": 0.25},
        ),
        (
            "component.health",
            {"component": "com.a", "version": "1.0.0", "ok": True, "latency": 0.01},
        ),
    )
    comp = tally.components["com.a"]
    assert comp.restarts == {"exit": 1, "signal": 1, "oom": 0, "health": 0}
    assert comp.health_failures == 1
    assert comp.probe_latency == 0.01
    # A new version starts fresh series; removal forgets the component.
    tally(bus_event("component.state", state(version="2.0.0")))
    assert tally.components["com.a"].version == "2.0.0"
    assert tally.components["com.a"].restarts["exit"] == 1
    tally(bus_event("component.state", state(to_state="NONE", trigger="REMOVE")))
    assert "com.a" not in tally.components


def bus_event(kind: str, payload: dict[str, object]) -> Event:
    return Event(id=1, ts=0.0, type=kind, payload=payload)


def test_deployments_by_outcome_with_durations_and_steps() -> None:
    tally = tally_of(
        ("deployment.queued", {"deployment_id": "d1"}),  # ts 0
        ("deployment.started", {"deployment_id": "d1"}),  # ts 1
        ("deployment.step", {"deployment_id": "d1", "step": "fetch", "status": "running"}),
        (
            "deployment.step",
            {"deployment_id": "d1", "step": "fetch", "status": "done", "duration": 0.3},
        ),
        (
            "deployment.step",
            {"deployment_id": "d1", "step": "ready", "status": "failed", "duration": 12.0},
        ),
        ("deployment.rollback", {"deployment_id": "d1", "error": "boom"}),
        ("deployment.done", {"deployment_id": "d1", "status": "rolled_back"}),  # ts 6
        ("deployment.done", {"deployment_id": "d0", "status": "cancelled"}),  # never started
    )
    assert tally.deployments == {"rolled_back": 1, "cancelled": 1}
    assert tally.rollbacks == 1
    assert tally.deployment_duration["rolled_back"].total == 5.0
    assert "cancelled" not in tally.deployment_duration
    assert tally.step_duration["fetch", "succeeded"].count == 1
    assert tally.step_duration["ready", "failed"].total == 12.0


def test_artifact_events_count_downloads_failures_and_gc() -> None:
    tally = tally_of(
        ("artifact.progress", {"uri": "u", "bytes_done": 300, "bytes_total": 300}),
        ("artifact.downloaded", {"uri": "u", "sha256": "ab", "downloaded_bytes": 300}),
        ("artifact.downloaded", {"uri": "v", "sha256": "cd", "downloaded_bytes": 70}),
        ("artifact.failed", {"uri": "v", "reason": "artifact_failed"}),
        ("artifact.failed", {"uri": "w", "reason": "OSError"}),
        ("artifact.gc", {"freed_bytes": 4096, "removed": 2}),
    )
    assert tally.artifact_bytes == 370  # progress reports are not downloads (cache hits too)
    assert tally.artifact_failures == {"artifact_failed": 1, "OSError": 1}
    assert (tally.gc_runs, tally.gc_freed_bytes) == (1, 4096)


def test_histogram_buckets_are_less_or_equal_and_cumulative() -> None:
    histogram = Histogram((1.0, 5.0))
    for value in (0.5, 1.0, 3.0, 9.0):
        histogram.observe(value)
    assert histogram.buckets() == [("1.0", 2), ("5.0", 3), ("+Inf", 4)]
    assert (histogram.count, histogram.total) == (4, 13.5)


def sample_metrics() -> bytes:
    tally = tally_of(
        ("component.state", state()),
        (
            "component.health",
            {"component": "com.a", "version": "1.0.0", "ok": False, "latency": 0.2},
        ),
        ("deployment.started", {"deployment_id": "d1"}),
        (
            "deployment.step",
            {"deployment_id": "d1", "step": "fetch", "status": "done", "duration": 0.3},
        ),
        ("deployment.done", {"deployment_id": "d1", "status": "succeeded"}),
        ("artifact.failed", {"reason": "timeout"}),
    )
    metrics = Metrics(version="1.2.3", tally=tally)
    snapshot = Snapshot(
        components=[
            ComponentSample(
                name="com.a",
                version="1.0.0",
                state="RUNNING",
                pid=os.getpid(),
                ready=True,
                uptime=12.5,
                last_exit_signal=9,
                healthy=False,
            ),
            ComponentSample(
                name="com.b",
                version="2.0.0",
                state="FAILED",
                pid=None,
                ready=False,
                uptime=None,
                last_exit_code=3,
            ),
        ],
        deployments_queued=2,
        cache_bytes=1024,
        cache_entries=3,
        loop_lag=0.0002,
        log_drops={"loki": 7},
        log_disk_bytes=5000,
        log_disk_limit_bytes=100 * 2**20,
    )
    return metrics.render(snapshot)


def value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} not in:\n{text}"
    return float(match.group(1))


def test_rendered_metrics_carry_the_state_and_the_counters() -> None:
    text = sample_metrics().decode()
    a = 'component="com.a",version="1.0.0"'
    running = 'keystone_component_state{component="com.a",state="RUNNING",version="1.0.0"}'
    assert value(text, running) == 1
    for name in STATES:
        assert (
            f'keystone_component_state{{component="com.b",state="{name}",version="2.0.0"}}' in text
        )
    assert value(text, f"keystone_component_last_exit_code{{{a}}}") == 128 + 9
    assert value(text, 'keystone_component_last_exit_code{component="com.b",version="2.0.0"}') == 3
    assert value(text, f"keystone_component_healthy{{{a}}}") == 0
    assert value(text, f"keystone_component_uptime_seconds{{{a}}}") == 12.5
    assert (
        value(
            text,
            'keystone_component_restarts_total{component="com.a",reason="exit",version="1.0.0"}',
        )
        == 1
    )
    assert value(text, f"keystone_component_health_check_failures_total{{{a}}}") == 1
    assert value(text, f"keystone_component_processes{{{a}}}") >= 1  # this very process
    assert value(text, f"keystone_component_resident_memory_bytes{{{a}}}") > 1e6
    assert value(text, 'keystone_deployments_total{outcome="succeeded"}') == 1
    assert (
        value(
            text,
            'keystone_deployment_step_duration_seconds_count{outcome="succeeded",step="fetch"}',
        )
        == 1
    )
    assert value(text, "keystone_deployment_queue_length") == 2
    assert value(text, 'keystone_artifact_download_failures_total{reason="timeout"}') == 1
    assert value(text, "keystone_artifact_cache_size_bytes") == 1024
    assert value(text, 'keystone_log_records_dropped_total{sink="loki"}') == 7
    python = sys.version.split()[0]
    assert value(text, f'keystone_build_info{{python="{python}",version="1.2.3"}}') == 1
    assert value(text, "keystone_agent_open_fds") > 0
    assert value(text, "keystone_agent_event_loop_lag_seconds") == 0.0002


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian package prometheus)")
def test_promtool_accepts_the_output() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=sample_metrics(), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == result.stderr == b""  # not even a lint warning


def test_process_tree_usage_sums_a_real_tree() -> None:
    hog = "x = bytearray(40 << 20); import time; time.sleep(30)"
    script = f"sleep 30 & sleep 30 & {sys.executable} -c '{hog}' & wait"
    parent = subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        usage = process_tree_usage(parent.pid)
        while (usage is None or usage.processes < 4 or usage.rss_bytes < 40 << 20) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
            usage = process_tree_usage(parent.pid)
        assert usage is not None
        assert usage.processes == 4  # sh, two sleeps, python
        assert usage.rss_bytes >= 40 << 20
        assert usage.cpu_seconds >= 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert process_tree_usage(parent.pid) is None
