"""Prometheus metrics: state read when Prometheus scrapes, counters fed by one bus subscriber.

Rules this module enforces:

- Nothing here polls and nothing runs between scrapes. Gauges (component states, uptimes,
  process trees, deployment queue, cache size, the agent's own process) are read from a
  :class:`Snapshot` that the agent builds when ``GET /metrics`` arrives; counters and
  histograms (restarts by reason, deployments by outcome, step durations, artifact bytes)
  are kept by :class:`EventTally`, the one event-bus subscriber. Domain code publishes
  events and never touches a metric (style.md, rule 12).
- :class:`EventTally` is plain Python (no prometheus-client), so the decisions it makes
  (which restart reason an event means, which histogram bucket a duration falls in) are
  tested without rendering anything. :class:`Metrics` turns a snapshot plus the tally into
  Prometheus text with prometheus-client's metric families and exposition.
- Names follow Prometheus conventions: ``keystone_`` prefix, ``_total`` counters,
  ``_seconds`` and ``_bytes`` units, ``component`` and ``version`` labels on everything
  per component. The output passes ``promtool check metrics`` (a test runs it).
- A component's CPU and memory are those of its whole process tree, read from ``/proc``
  at scrape time: the tree comes from ``/proc/<pid>/task/*/children`` (no scan of every
  process on the machine; psutil's scan where the kernel lacks that file) and each member
  costs one read of ``/proc/<pid>/stat`` (psutil would read it twice plus ``statm``: a
  third of the scrape time with 100 components). CPU seconds include children the tree
  has already reaped; RSS is summed, so pages shared between members count more than once.
- This module imports prometheus-client; the agent imports it only when metrics are
  enabled, so a device that turns them off does not keep the library resident.
"""

from __future__ import annotations

import bisect
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from keystone_edge.observe.events import Event

__all__ = [
    "CONTENT_TYPE",
    "DEPLOYMENT_BUCKETS",
    "STATES",
    "STEP_BUCKETS",
    "ComponentSample",
    "EventTally",
    "Histogram",
    "Metrics",
    "Snapshot",
    "TreeUsage",
    "process_tree_usage",
    "restart_reason",
]

# The classic text format: every Prometheus 2.x parses it, whatever the client library's
# newest default is.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

STATES: Final = (
    "NONE",
    "INSTALLED",
    "STARTING",
    "RUNNING",
    "DEGRADED",
    "STOPPING",
    "STOPPED",
    "FAILED",
)
DEPLOYMENT_BUCKETS: Final = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STEP_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RESTART_REASONS: Final = ("exit", "signal", "oom", "health")
# Triggers of the transition that follows a process exit.
_AFTER_EXIT: Final = frozenset({"RESTART_SCHEDULED", "EXITED", "GIVE_UP"})
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


# -- the event subscriber ------------------------------------------------------------------


def restart_reason(payload: Mapping[str, Any], *, oom: bool = False) -> str:
    """Why a ``component.state`` event with trigger ``RESTART_SCHEDULED`` restarts.

    ``health``: the supervisor stopped it after failed probes (the only way from STOPPING
    to a scheduled restart); ``oom``: the kernel's OOM killer ended it (the supervisor
    published ``component.oom`` just before); ``signal``: killed by any other signal;
    ``exit``: it exited with a code.
    """
    if payload.get("from_state") == "STOPPING":
        return "health"
    if oom:
        return "oom"
    if payload.get("signal") is not None:
        return "signal"
    return "exit"


@dataclass
class Histogram:
    """Cumulative-at-render bucket counts, as Prometheus histograms expose them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket (not cumulative), +Inf last
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal to" the bound.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """``[(le, cumulative count), ...]`` ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else _float_text(bound), running))
        return out


@dataclass
class _ComponentTally:
    version: str
    restarts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESTART_REASONS, 0))
    health_failures: int = 0
    probe_latency: float | None = None
    oom_pending: bool = False  # component.oom seen, its exit's transition not yet


class EventTally:
    """The counters and histograms that only events can tell; the one bus subscriber.

    Call it with every event (``bus.subscribe(tally)``). Per-component series follow the
    component's current version and are dropped when the component is removed.
    """

    def __init__(self) -> None:
        self.events: dict[str, int] = {}
        self.components: dict[str, _ComponentTally] = {}
        self.deployments: dict[str, int] = {}  # outcome -> count
        self.deployment_duration: dict[str, Histogram] = {}  # outcome -> histogram
        self.step_duration: dict[tuple[str, str], Histogram] = {}  # (step, outcome)
        self.rollbacks = 0
        self.artifact_bytes = 0
        self.artifact_failures: dict[str, int] = {}  # reason -> count
        self.gc_runs = 0
        self.gc_freed_bytes = 0
        self._started: dict[str, float] = {}  # deployment id -> wall-clock start

    def __call__(self, event: Event) -> None:
        self.events[event.type] = self.events.get(event.type, 0) + 1
        kind, _, what = event.type.partition(".")
        payload = event.payload
        if kind == "component":
            self._component(what, payload)
        elif kind == "deployment":
            self._deployment(what, payload, event.ts)
        elif kind == "artifact":
            self._artifact(what, payload)

    def _component(self, what: str, p: Mapping[str, Any]) -> None:
        name, version = p.get("component"), p.get("version")
        if not isinstance(name, str):
            return
        if what == "state" and p.get("to_state") == "NONE":
            self.components.pop(name, None)  # removed: its series go with it
            return
        if not isinstance(version, str):
            version = self.components[name].version if name in self.components else ""
        tally = self.components.get(name)
        if tally is None or tally.version != version:
            # A new version starts its own series (the old ones end, as after a restart).
            tally = self.components[name] = _ComponentTally(version)
        if what == "oom":
            tally.oom_pending = True  # the state change it caused comes next
        elif what == "state" and p.get("trigger") in _AFTER_EXIT:
            if p["trigger"] == "RESTART_SCHEDULED":
                tally.restarts[restart_reason(p, oom=tally.oom_pending)] += 1
            tally.oom_pending = False
        elif what == "health":
            latency = p.get("latency")
            if isinstance(latency, int | float):
                tally.probe_latency = float(latency)
            if p.get("ok") is False:
                tally.health_failures += 1

    def _deployment(self, what: str, p: Mapping[str, Any], ts: float) -> None:
        deployment_id = str(p.get("deployment_id", ""))
        if what == "started":
            self._started[deployment_id] = ts
        elif what == "done":
            outcome = str(p.get("status", "unknown"))
            self.deployments[outcome] = self.deployments.get(outcome, 0) + 1
            started = self._started.pop(deployment_id, None)
            if started is not None:
                histogram = self.deployment_duration.setdefault(
                    outcome, Histogram(DEPLOYMENT_BUCKETS)
                )
                histogram.observe(max(0.0, ts - started))
        elif what == "rollback":
            self.rollbacks += 1
        elif what == "step" and p.get("status") in ("done", "failed"):
            duration = p.get("duration")
            if isinstance(duration, int | float):
                outcome = "succeeded" if p["status"] == "done" else "failed"
                key = (str(p.get("step", "")), outcome)
                self.step_duration.setdefault(key, Histogram(STEP_BUCKETS)).observe(duration)

    def _artifact(self, what: str, p: Mapping[str, Any]) -> None:
        """``artifact.downloaded`` (downloaded_bytes), ``artifact.failed`` (reason: the
        error's stable code) and ``artifact.gc`` (freed_bytes); see docs/observability.md.
        Progress reports are not counted: a cache hit reports its size too."""
        if what == "downloaded":
            downloaded = p.get("downloaded_bytes")
            if isinstance(downloaded, int):
                self.artifact_bytes += downloaded
        elif what == "failed":
            reason = str(p.get("reason") or "error")
            self.artifact_failures[reason] = self.artifact_failures.get(reason, 0) + 1
        elif what == "gc":
            self.gc_runs += 1
            freed = p.get("freed_bytes")
            if isinstance(freed, int):
                self.gc_freed_bytes += freed


# -- what the agent reads at scrape time ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentSample:
    name: str
    version: str
    state: str
    pid: int | None
    ready: bool
    uptime: float | None  # seconds in the current run; None when not running
    last_exit_code: int | None = None
    last_exit_signal: int | None = None
    healthy: bool | None = None  # None: no health check (or not probed yet)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The agent's state at scrape time (everything but the event tally)."""

    components: Sequence[ComponentSample] = ()
    deployments_queued: int = 0
    deployments_running: int = 0
    cache_bytes: int | None = None
    cache_entries: int | None = None
    loop_lag: float | None = None  # seconds for a call_soon round trip
    log_drops: Mapping[str, int] = field(default_factory=dict)  # sink -> records dropped
    log_disk_bytes: int | None = None
    log_disk_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class TreeUsage:
    cpu_seconds: float
    rss_bytes: int
    processes: int


def process_tree_usage(pid: int) -> TreeUsage | None:
    """CPU seconds and RSS summed over ``pid`` and all its descendants (None if gone)."""
    cpu_ticks = 0
    rss_pages = 0
    count = 0
    pending = [pid]
    seen: set[int] = set()
    while pending:
        member = pending.pop()
        if member in seen:
            continue
        seen.add(member)
        try:
            data = Path(f"/proc/{member}/stat").read_bytes()
        except OSError:
            continue  # it just ended
        # proc_pid_stat(5): after "pid (comm) ", field 3 (state) is index 0; utime, stime,
        # cutime, cstime are fields 14-17, num_threads 20, rss (pages) 24.
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] == b"Z":
            continue  # exited, waiting to be reaped: nothing running
        cpu_ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        rss_pages += int(fields[21])
        count += 1
        pending.extend(_children(member, threads=int(fields[17])))
    if not count:
        return None
    return TreeUsage(cpu_ticks / _CLOCK_TICKS, rss_pages * _PAGE_SIZE, count)


def _children(pid: int, *, threads: int) -> list[int]:
    # Each thread has its own children file; a single-threaded process needs no listing.
    tasks = [str(pid)]
    if threads > 1:
        try:
            tasks = [task.name for task in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            return []
    children: list[int] = []
    for tid in tasks:
        try:
            children.extend(map(int, Path(f"/proc/{pid}/task/{tid}/children").read_bytes().split()))
        except FileNotFoundError:
            if tid == str(pid) and Path(f"/proc/{pid}").exists():
                return _children_by_scan(pid)  # a kernel without the children file
        except OSError:
            continue
    return children


def _children_by_scan(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children()]
    except psutil.Error:
        return []


# -- rendering --------------------------------------------------------------------------


def _float_text(value: float) -> str:
    return repr(float(value))


class Metrics:
    """The agent's metrics: ``render(snapshot)`` gives Prometheus text for one scrape."""

    def __init__(
        self,
        *,
        version: str,
        tally: EventTally | None = None,
        tree_usage: Callable[[int], TreeUsage | None] = process_tree_usage,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.tally = tally if tally is not None else EventTally()
        self._version = version
        self._tree_usage = tree_usage
        self._clock = clock
        self._started = clock()
        self._start_time = wallclock()
        self._self = psutil.Process()
        self._snapshot = Snapshot()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def render(self, snapshot: Snapshot) -> bytes:
        # The registry asks this object (a collector) for families; they read the snapshot.
        self._snapshot = snapshot
        try:
            return generate_latest(self._registry)
        finally:
            self._snapshot = Snapshot()

    # -- the collector protocol (prometheus-client calls these) ---------------------------

    def describe(self) -> list[Metric]:
        return []  # no name clash checks needed in a private registry; no collect at register

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        yield from self._agent(snapshot)
        yield from self._components(snapshot.components)
        yield from self._deployments(snapshot)
        yield from self._artifacts(snapshot)
        yield from self._logs(snapshot)

    def _agent(self, snapshot: Snapshot) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "keystone_build_info",
            "KeyStone agent build information (always 1).",
            labels=["version", "python"],
        )
        info.add_metric([self._version, sys.version.split()[0]], 1)
        yield info
        yield GaugeMetricFamily(
            "keystone_agent_start_time_seconds",
            "When the agent started, in seconds since the epoch.",
            value=self._start_time,
        )
        yield GaugeMetricFamily(
            "keystone_agent_uptime_seconds",
            "Seconds since the agent started.",
            value=self._clock() - self._started,
        )
        process = self._self
        with process.oneshot():
            times = process.cpu_times()
            rss = process.memory_info().rss
            fds = process.num_fds()
        yield CounterMetricFamily(
            "keystone_agent_cpu_seconds",
            "CPU time the agent process has used (user + system).",
            value=times.user + times.system,
        )
        yield GaugeMetricFamily(
            "keystone_agent_resident_memory_bytes",
            "Resident memory of the agent process.",
            value=rss,
        )
        yield GaugeMetricFamily(
            "keystone_agent_open_fds", "Open file descriptors of the agent.", value=fds
        )
        yield GaugeMetricFamily(
            "keystone_agent_max_fds",
            "The agent's file descriptor limit.",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        if snapshot.loop_lag is not None:
            yield GaugeMetricFamily(
                "keystone_agent_event_loop_lag_seconds",
                "How long a callback waited for the agent's event loop at scrape time.",
                value=snapshot.loop_lag,
            )
        events = CounterMetricFamily(
            "keystone_events", "Events published on the agent's bus, by type.", labels=["type"]
        )
        for kind, count in sorted(self.tally.events.items()):
            events.add_metric([kind], count)
        yield events

    def _components(self, samples: Sequence[ComponentSample]) -> Iterator[Metric]:
        labels = ["component", "version"]
        state = GaugeMetricFamily(
            "keystone_component_state",
            "Lifecycle state of each component (1 for the current state).",
            labels=[*labels, "state"],
        )
        ready = GaugeMetricFamily(
            "keystone_component_ready", "1 when the component is ready.", labels=labels
        )
        healthy = GaugeMetricFamily(
            "keystone_component_healthy",
            "1 when the last health probe verdict is healthy (components with a probe).",
            labels=labels,
        )
        uptime = GaugeMetricFamily(
            "keystone_component_uptime_seconds",
            "Seconds the component has been running (0 when not running).",
            labels=labels,
        )
        exit_code = GaugeMetricFamily(
            "keystone_component_last_exit_code",
            "Exit code of the component's last process (128 + N when killed by signal N).",
            labels=labels,
        )
        cpu = CounterMetricFamily(
            "keystone_component_cpu_seconds",
            "CPU time of the component's whole process tree (this run).",
            labels=labels,
        )
        rss = GaugeMetricFamily(
            "keystone_component_resident_memory_bytes",
            "Resident memory summed over the component's process tree.",
            labels=labels,
        )
        processes = GaugeMetricFamily(
            "keystone_component_processes",
            "Processes in the component's process tree.",
            labels=labels,
        )
        for sample in samples:
            values = [sample.name, sample.version]
            for name in STATES:
                state.add_metric([*values, name], 1.0 if sample.state == name else 0.0)
            ready.add_metric(values, 1.0 if sample.ready else 0.0)
            if sample.healthy is not None:
                healthy.add_metric(values, 1.0 if sample.healthy else 0.0)
            uptime.add_metric(values, sample.uptime or 0.0)
            if sample.last_exit_signal is not None:
                exit_code.add_metric(values, 128 + sample.last_exit_signal)
            elif sample.last_exit_code is not None:
                exit_code.add_metric(values, sample.last_exit_code)
            usage = self._tree_usage(sample.pid) if sample.pid is not None else None
            if usage is not None:
                cpu.add_metric(values, usage.cpu_seconds)
                rss.add_metric(values, usage.rss_bytes)
                processes.add_metric(values, usage.processes)
        yield from (state, ready, healthy, uptime, exit_code, cpu, rss, processes)
        yield from self._component_events(samples)

    def _component_events(self, samples: Sequence[ComponentSample]) -> Iterator[Metric]:
        labels = ["component", "version"]
        restarts = CounterMetricFamily(
            "keystone_component_restarts",
            "Automatic restarts, by reason (exit, signal, oom, health).",
            labels=[*labels, "reason"],
        )
        failures = CounterMetricFamily(
            "keystone_component_health_check_failures",
            "Failed health probes.",
            labels=labels,
        )
        latency = GaugeMetricFamily(
            "keystone_component_health_check_latency_seconds",
            "Latency of the last reported health probe (failures and status changes).",
            labels=labels,
        )
        known = {s.name: s.version for s in samples}
        for name, tally in sorted(self.tally.components.items()):
            version = known.get(name, tally.version)
            for reason, count in tally.restarts.items():
                restarts.add_metric([name, version, reason], count)
            failures.add_metric([name, version], tally.health_failures)
            if tally.probe_latency is not None:
                latency.add_metric([name, version], tally.probe_latency)
        yield from (restarts, failures, latency)

    def _deployments(self, snapshot: Snapshot) -> Iterator[Metric]:
        tally = self.tally
        total = CounterMetricFamily(
            "keystone_deployments",
            "Deployments finished, by outcome (succeeded, failed, rolled_back, cancelled).",
            labels=["outcome"],
        )
        for outcome, count in sorted(tally.deployments.items()):
            total.add_metric([outcome], count)
        yield total
        duration = HistogramMetricFamily(
            "keystone_deployment_duration_seconds",
            "Time from a deployment's start to its end, by outcome.",
            labels=["outcome"],
        )
        for outcome, histogram in sorted(tally.deployment_duration.items()):
            duration.add_metric([outcome], histogram.buckets(), histogram.total)
        yield duration
        steps = HistogramMetricFamily(
            "keystone_deployment_step_duration_seconds",
            "Duration of deployment steps (fetch, install, start-new, ...), by outcome.",
            labels=["step", "outcome"],
        )
        for (step, outcome), histogram in sorted(tally.step_duration.items()):
            steps.add_metric([step, outcome], histogram.buckets(), histogram.total)
        yield steps
        yield CounterMetricFamily(
            "keystone_deployment_rollbacks", "Deployments rolled back.", value=tally.rollbacks
        )
        yield GaugeMetricFamily(
            "keystone_deployment_queue_length",
            "Deployments waiting to be applied.",
            value=snapshot.deployments_queued,
        )
        yield GaugeMetricFamily(
            "keystone_deployments_running",
            "Deployments being applied (0 or 1).",
            value=snapshot.deployments_running,
        )

    def _artifacts(self, snapshot: Snapshot) -> Iterator[Metric]:
        tally = self.tally
        yield CounterMetricFamily(
            "keystone_artifact_downloaded_bytes",
            "Bytes of artifacts downloaded.",
            value=tally.artifact_bytes,
        )
        failures = CounterMetricFamily(
            "keystone_artifact_download_failures",
            "Artifact downloads that failed, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(tally.artifact_failures.items()):
            failures.add_metric([reason], count)
        yield failures
        if snapshot.cache_bytes is not None:
            yield GaugeMetricFamily(
                "keystone_artifact_cache_size_bytes",
                "Bytes held in the artifact cache.",
                value=snapshot.cache_bytes,
            )
        if snapshot.cache_entries is not None:
            yield GaugeMetricFamily(
                "keystone_artifact_cache_entries",
                "Artifacts in the cache.",
                value=snapshot.cache_entries,
            )
        yield CounterMetricFamily(
            "keystone_artifact_gc_runs", "Artifact cache collections.", value=tally.gc_runs
        )
        yield CounterMetricFamily(
            "keystone_artifact_gc_freed_bytes",
            "Bytes freed by artifact cache collections.",
            value=tally.gc_freed_bytes,
        )

    def _logs(self, snapshot: Snapshot) -> Iterator[Metric]:
        drops = CounterMetricFamily(
            "keystone_log_records_dropped",
            "Log records a sink could not deliver (queue full, server or socket down).",
            labels=["sink"],
        )
        for sink, count in sorted(snapshot.log_drops.items()):
            drops.add_metric([sink], count)
        yield drops
        if snapshot.log_disk_bytes is not None:
            yield GaugeMetricFamily(
                "keystone_log_disk_usage_bytes",
                "Bytes of log files under the agent's log directory (agent and components).",
                value=snapshot.log_disk_bytes,
            )
        if snapshot.log_disk_limit_bytes is not None:
            yield GaugeMetricFamily(
                "keystone_log_disk_limit_bytes",
                "The cap on those bytes ([logging] max_total_bytes).",
                value=snapshot.log_disk_limit_bytes,
            )
