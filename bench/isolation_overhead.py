"""What the isolation launcher adds to starting a component.

Standalone: ``.venv/bin/python bench/isolation_overhead.py [--runs 50] [--json]``; run it as
root for the cgroup and namespace variants (without root they are skipped).

Each run starts a trivial program (``/bin/true``) the way the process runner does, waits
for it and cleans up, and records two times:

- **start**: from spawning to the workload's ``exec`` (plain: when ``Popen`` returns, which
  is after the exec; isolated: EOF on the launcher's close-on-exec status pipe);
- **cycle**: spawn, exit and cleanup (for isolation: the OOM check and removing the
  cgroups), i.e. what one restart of a crashing component costs.

Variants: ``plain`` (no launcher), ``launcher`` (capabilities and no_new_privs only),
``cgroup+seccomp`` (memory, pids and CPU limits plus the default seccomp filter: the goal
case), and ``+pid+mount ns``. The goal: the launcher adds < 15 ms (median of ``start``,
``cgroup+seccomp`` minus ``plain``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from keystone_edge.isolation import (
    CgroupManager,
    IsolationPolicy,
    finish,
    parse_status,
    policy_for,
    probe_host,
    wrap_argv,
)
from keystone_edge.recipe.model import Metadata, Recipe, Resources, Security
from keystone_edge.units import Size

GOAL_MS = 15.0
# Our own parent: cgroup hierarchies are shared with everything else on the host.
PARENT = f"keystone-bench-{os.getpid()}"
PROGRAM = ["/bin/true"]


@dataclass
class Sample:
    start: float
    cycle: float


def run_plain() -> Sample:
    t0 = time.perf_counter()
    proc = subprocess.Popen(PROGRAM)
    started = time.perf_counter()
    proc.wait()
    done = time.perf_counter()
    return Sample(start=started - t0, cycle=done - t0)


def run_isolated(policy: IsolationPolicy) -> Sample:
    t0 = time.perf_counter()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(
            wrap_argv(policy, PROGRAM, status_fd=write_fd), pass_fds=(write_fd,)
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        status = parse_status(pipe.read())
    started = time.perf_counter()
    proc.wait()
    report = finish(policy, proc.returncode, status)
    done = time.perf_counter()
    if report.reason != "exited" or report.exit_code != 0:
        raise SystemExit(f"isolated run failed: {report.message}")
    return Sample(start=started - t0, cycle=done - t0)


def recipe(name: str, *, limits: bool, seccomp: bool) -> Recipe:
    return Recipe(
        metadata=Metadata(name=name, version="1.0.0"),
        security=Security(seccomp_profile="default" if seccomp else "unconfined"),
        resources=Resources(memory_limit=Size.parse("64Mi"), pids_limit=32, cpu_quota=50)
        if limits
        else Resources(),
    )


def summarise(samples: list[Sample], what: str) -> dict[str, float]:
    values = sorted(getattr(s, what) * 1000 for s in samples)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return {"median_ms": statistics.median(values), "p95_ms": p95}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()

    root = os.geteuid() == 0
    variants: dict[str, Callable[[], Sample]] = {"plain": run_plain}
    launcher = policy_for(recipe("bench.launcher", limits=False, seccomp=False), mode="strict")
    variants["launcher"] = lambda: run_isolated(launcher)
    if root:
        confined = policy_for(
            recipe("bench.confined", limits=True, seccomp=True),
            mode="strict",
            cgroup_root=PARENT,
        )
        variants["cgroup+seccomp"] = lambda: run_isolated(confined)
        namespaced = policy_for(
            recipe("bench.namespaced", limits=True, seccomp=True),
            mode="strict",
            cgroup_root=PARENT,
            namespaces=["pid", "mount"],
        )
        variants["+pid+mount ns"] = lambda: run_isolated(namespaced)

    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    for _ in range(3):  # warm caches: bytecode, page cache, the seccomp compiler
        for fn in variants.values():
            fn()
    # Interleaved, so load on the machine hits every variant alike.
    for _ in range(args.runs):
        for name, fn in variants.items():
            samples[name].append(fn())

    if root:
        CgroupManager(probe_host().cgroup, parent=PARENT).prune()
    results = {
        name: {"start": summarise(s, "start"), "cycle": summarise(s, "cycle")}
        for name, s in samples.items()
    }
    base = results["plain"]["start"]["median_ms"]
    goal_case = "cgroup+seccomp" if "cgroup+seccomp" in results else "launcher"
    added = results[goal_case]["start"]["median_ms"] - base
    verdict = {
        "goal_ms": GOAL_MS,
        "case": goal_case,
        "added_median_ms": round(added, 2),
        "status": "PASS" if added < GOAL_MS else "MISS",
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "results": results, "goal": verdict}, indent=2))
        return
    print(f"{args.runs} runs of {' '.join(PROGRAM)} (Python {sys.version.split()[0]})")
    print(f"{'variant':<16}{'start median':>14}{'p95':>9}{'cycle median':>15}{'p95':>9}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['start']['median_ms']:>12.2f}ms{r['start']['p95_ms']:>7.2f}ms"
            f"{r['cycle']['median_ms']:>13.2f}ms{r['cycle']['p95_ms']:>7.2f}ms"
        )
    if not root:
        print("(not root: cgroup and namespace variants skipped)")
    print(
        f"launcher adds {added:.2f} ms to a start ({goal_case}, median); "
        f"goal < {GOAL_MS:.0f} ms: {verdict['status']}"
    )


if __name__ == "__main__":
    main()
