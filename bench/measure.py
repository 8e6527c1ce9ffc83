"""The four measurements, the same for every supervisor.

1. **Cold start**: ``time.monotonic_ns()`` just before the supervisor is launched, to the
   latest of the first N start stamps (each child writes its own CLOCK_MONOTONIC time).
2. **Restart latency**: ``time.monotonic_ns()`` just before ``kill -9`` of one child, to the
   start stamp of its replacement. The same service is killed every time (the replacement's
   pid becomes the next target), ``kill_spacing`` seconds after its previous start, which is
   longer than every supervisor's throttle or backoff reset.
3. **Memory**: ``Rss`` and ``Pss`` from ``/proc/PID/smaps_rollup`` summed over the
   supervisor's own processes (not the children), ``settle`` seconds after the cold start.
4. **Idle CPU**: CPU time of the supervisor's processes over ``idle`` seconds with every
   child running and nothing happening, as a percentage of one core. The headline figure
   is from ``schedstat`` (ns); ``utime + stime`` ticks are kept in the raw data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.agent_api import ApiError
from bench.context import Context
from bench.stamps import StampLog, StampTimeoutError
from bench.stats import summarize
from bench.supervisors import Config, Running, Supervisor, Workload

__all__ = ["MeasureError", "backdate", "idle_cpu", "memory", "restart_latencies", "run_supervisor"]

# What can go wrong in a run without it being a bug in the bench.
MeasureError = (StampTimeoutError, RuntimeError, ApiError, OSError)


def backdate(root: Path, seconds: float = 60.0) -> None:
    """Set every mtime under ``root`` ``seconds`` in the past.

    On a real machine a supervisor's configuration was written long before it starts.
    Written just now, it trips runsvdir's guard against mtime granularity (when the service
    directory changed within the current second it waits one second before scanning),
    which would add a second to runit's cold start that no boot ever sees.
    """
    when = time.time() - seconds
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when), follow_symlinks=False)


def memory(running: Running) -> dict[str, Any]:
    found = procs.memory_of(running.supervisor_pids())
    return {
        "rss_kb": sum(p.rss_kb for p in found),
        "pss_kb": sum(p.pss_kb for p in found),
        "processes": [
            {"pid": p.pid, "comm": p.comm, "rss_kb": p.rss_kb, "pss_kb": p.pss_kb} for p in found
        ],
    }


def idle_cpu(running: Running, log: StampLog, seconds: float) -> dict[str, Any]:
    pids = running.supervisor_pids()
    log.poll()
    stamps_before = len(log.stamps)
    before = procs.cpu_sample(pids)
    time.sleep(seconds)
    after = procs.cpu_sample(pids)
    log.poll()
    elapsed_ns = after.at_ns - before.at_ns
    run_ns = sum(after.run_ns.get(p, v) - v for p, v in before.run_ns.items())
    ticks = sum(after.ticks.get(p, v) - v for p, v in before.ticks.items())
    tick_s = ticks / procs.CpuSample.clock_ticks_per_second()
    return {
        "window_s": elapsed_ns / 1e9,
        "processes": len(pids),
        "cpu_ns": run_ns,
        "cpu_ticks": ticks,
        "percent_of_core": 100.0 * run_ns / elapsed_ns,
        "percent_of_core_from_ticks": 100.0 * tick_s / (elapsed_ns / 1e9),
        "gone_during_window": sorted(set(before.run_ns) - set(after.run_ns)),
        "children_started_during_window": len(log.stamps) - stamps_before,
    }


def restart_latencies(
    running: Running, log: StampLog, target: int, kills: int, spacing: float
) -> tuple[list[float], str | None]:
    """Latencies in ms; an error string if the series had to stop early."""
    latencies: list[float] = []
    for k in range(kills):
        time.sleep(spacing)
        log.poll()  # anything a supervisor started on its own is not our replacement
        sent = time.monotonic_ns()
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            return latencies, f"kill {k + 1}: child {target} was already gone"
        try:
            replacement = log.wait_next(15.0, running.failure)
        except StampTimeoutError as exc:
            return latencies, f"kill {k + 1}: no replacement for child {target}: {exc}"
        latencies.append((replacement.ns - sent) / 1e6)
        target = replacement.pid
    return latencies, None


def run_supervisor(
    ctx: Context,
    sup: Supervisor,
    n: int,
    *,
    idle_seconds: float,
    trials: int | None = None,
) -> tuple[dict[str, Any], Config | None]:
    """Cold start ``trials`` times; after the last one, memory, idle CPU and restarts."""
    opts = ctx.options
    trials = opts.trials if trials is None else trials
    result: dict[str, Any] = {
        "supervisor": sup.name,
        "n": n,
        "cold_start_s": [],
        "cold_start_phases_s": [],
        "restart_latency_ms": [],
        "memory": None,
        "memory_after_kills": None,
        "idle_cpu": None,
        "errors": [],
        "load_average_before": os.getloadavg(),
    }
    config: Config | None = None
    for trial in range(trials):
        workload, log = ctx.new_workload(sup.name, n)
        running: Running | None = None
        try:
            if config is None:
                config = sup.prepare(workload)
            else:
                sup.prepare(workload)
            backdate(workload.run_dir)
            t0 = time.monotonic_ns()
            running = sup.start(workload)
            stamps = log.wait_total(n, opts.start_timeout, running.failure)
            end = max(s.ns for s in stamps)
            result["cold_start_s"].append((end - t0) / 1e9)
            phases = {k: (v - t0) / 1e9 for k, v in running.phases.items()}
            result["cold_start_phases_s"].append({**phases, "all_stamped": (end - t0) / 1e9})
            running.check()
            ctx.log(f"  {sup.name} N={n} trial {trial + 1}/{trials}: "
                    f"cold start {(end - t0) / 1e9:.3f} s")  # fmt: skip
            if trial == trials - 1:
                _steady(
                    ctx,
                    running=running,
                    log=log,
                    workload=workload,
                    result=result,
                    idle_seconds=idle_seconds,
                )
        except MeasureError as exc:
            tail = running.log_tail() if running is not None else ""
            message = f"{sup.name} N={n} trial {trial + 1}: {exc}"
            if tail:
                message += f"\n  {sup.name} output ends:\n    " + tail.replace("\n", "\n    ")
            result["errors"].append(message)
            ctx.log(f"  error: {message}")
            break
        finally:
            if running is not None:
                with contextlib.suppress(OSError):
                    running.stop()
            procs.sweep()
            log.close()
    result["summary"] = {
        "cold_start_s": summarize(result["cold_start_s"]),
        "restart_latency_ms": summarize(result["restart_latency_ms"]),
    }
    return result, config


def _steady(
    ctx: Context,
    *,
    running: Running,
    log: StampLog,
    workload: Workload,
    result: dict[str, Any],
    idle_seconds: float,
) -> None:
    opts = ctx.options
    time.sleep(opts.settle)
    result["memory"] = memory(running)
    ctx.log(f"  {workload.run_dir.name}: {len(result['memory']['processes'])} supervisor "
            f"process(es), PSS {result['memory']['pss_kb'] / 1024:.1f} MB; "
            f"idle CPU for {idle_seconds:.0f} s")  # fmt: skip
    result["idle_cpu"] = idle_cpu(running, log, idle_seconds)
    target = log.stamps[0].pid
    latencies, error = restart_latencies(running, log, target, opts.kills, opts.kill_spacing)
    result["restart_latency_ms"] = latencies
    if error:
        result["errors"].append(f"restart latency ({workload.run_dir.name}): {error}")
        ctx.log(f"  error: {error}")
    result["memory_after_kills"] = memory(running)
