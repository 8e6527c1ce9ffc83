"""What metrics cost the agent: time and CPU per ``GET /metrics``, idle CPU, memory.

``python -m bench.scrape_cost [--components 100] [--scrapes 50] [--idle-seconds 60]``

Starts a real ``keystone-agent`` on a temporary root, deploys ``--components`` components
(each a ``sleep`` process, so every scrape reads real process trees), then:

- scrapes ``/metrics`` over the API socket ``--scrapes`` times and reports the wall time
  the client saw and the CPU the agent spent per scrape (goal: under 20 ms);
- leaves the agent alone for ``--idle-seconds`` and reports its CPU use over that time as
  a share of one core (goal: under 0.1 %);
- reports the agent's RSS and PSS after the scrapes, and, with ``--compare``, runs the
  same again with ``[metrics] enabled = false`` (prometheus-client never imported) so the
  difference is what metrics cost in memory.

Figures are printed against their goals; the exit status is 0 either way (a benchmark
reports, it does not judge).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.agent_api import AgentApi, ApiError
from bench.procs import cpu_sample, memory_of

AGENT = Path(sys.executable).parent / "keystone-agent"
SCRAPE_GOAL_MS = 20.0
IDLE_GOAL_PERCENT = 0.1
TERMINAL = {"succeeded", "failed", "rolled_back", "cancelled"}


@dataclass
class Figures:
    components: int
    metrics: bool
    scrape_wall_ms: list[float]
    scrape_cpu_ms: list[float]
    body_bytes: int
    idle_cpu_percent: float | None
    rss_kb: int
    pss_kb: int


def _recipe(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "version": "1.0.0"},
        "lifecycle": {"run": {"exec": {"command": "/bin/sleep", "args": ["infinity"]}}},
    }


def _wait(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = probe()
        except ApiError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _cpu_ns(pid: int) -> int:
    return cpu_sample([pid]).run_ns.get(pid, 0)


def measure(components: int, scrapes: int, idle_seconds: float, *, metrics: bool) -> Figures:
    with tempfile.TemporaryDirectory(prefix="ks-scrape-") as tmp:
        root = Path(tmp) / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "agent.toml").write_text(
            f'[logging]\nsinks = ["file"]\n[metrics]\nenabled = {str(metrics).lower()}\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTONE_", "NOTIFY_"))}
        agent = subprocess.Popen(
            [str(AGENT), "--root", str(root)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            api = AgentApi(str(root / "run" / "agent.sock"))
            _wait(lambda: api.get("/healthz")["status"] == "ok", 30, "the agent")
            names = [f"com.bench.c{n:03d}" for n in range(components)]
            document = {"deployment": {"timeout": "10m"}, "components": {n: {} for n in names}}
            record = api.post(
                "/v1/deployments",
                {"document": document, "recipes": [_recipe(n) for n in names]},
            )
            done = _wait(
                lambda: (
                    (r := api.get(f"/v1/deployments/{record['id']}"))["status"] in TERMINAL and r
                ),
                600,
                f"{components} components to start",
            )
            if done["status"] != "succeeded":
                raise SystemExit(f"the deployment {done['status']}: {done.get('error')}")
            wall: list[float] = []
            cpu: list[float] = []
            body = 0
            if metrics:
                for index in range(scrapes + 3):
                    before_cpu, before = _cpu_ns(agent.pid), time.perf_counter()
                    text = _scrape(api)
                    after, after_cpu = time.perf_counter(), _cpu_ns(agent.pid)
                    body = len(text)
                    if index >= 3:  # the first ones warm caches (psutil, imports)
                        wall.append((after - before) * 1000)
                        cpu.append((after_cpu - before_cpu) / 1e6)
            idle = None
            if idle_seconds > 0:
                time.sleep(2)  # let the start-up settle
                start_cpu, start = _cpu_ns(agent.pid), time.monotonic()
                time.sleep(idle_seconds)
                used = (_cpu_ns(agent.pid) - start_cpu) / 1e9
                idle = used / (time.monotonic() - start) * 100
            (mem,) = memory_of([agent.pid])
            return Figures(components, metrics, wall, cpu, body, idle, mem.rss_kb, mem.pss_kb)
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()


def _scrape(api: AgentApi) -> bytes:
    from bench.agent_api import _UnixConnection

    conn = _UnixConnection(api.socket_path, api.timeout)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"GET /metrics: HTTP {response.status}")
    return data


def _verdict(ok: bool) -> str:
    return "meets the goal" if ok else "MISSES the goal"


def report(figures: Figures, baseline: Figures | None) -> None:
    print(
        f"agent with {figures.components} components, metrics {'on' if figures.metrics else 'off'}"
    )
    if figures.scrape_wall_ms:
        wall, cpu = figures.scrape_wall_ms, figures.scrape_cpu_ms
        p95 = statistics.quantiles(wall, n=20)[-1] if len(wall) >= 20 else max(wall)
        print(
            f"  GET /metrics ({figures.body_bytes / 1024:.0f} KiB), {len(wall)} scrapes: "
            f"wall median {statistics.median(wall):.1f} ms, p95 {p95:.1f} ms, "
            f"max {max(wall):.1f} ms; agent CPU median {statistics.median(cpu):.1f} ms"
        )
        print(
            f"  goal < {SCRAPE_GOAL_MS:.0f} ms: median wall "
            f"{_verdict(statistics.median(wall) < SCRAPE_GOAL_MS)}"
        )
    if figures.idle_cpu_percent is not None:
        idle = figures.idle_cpu_percent
        print(
            f"  idle CPU: {idle:.3f} % of one core "
            f"(goal < {IDLE_GOAL_PERCENT} %: {_verdict(idle < IDLE_GOAL_PERCENT)})"
        )
    print(f"  memory: RSS {figures.rss_kb / 1024:.1f} MiB, PSS {figures.pss_kb / 1024:.1f} MiB")
    if baseline is not None:
        print(
            f"  metrics cost: RSS +{(figures.rss_kb - baseline.rss_kb) / 1024:.1f} MiB, "
            f"PSS +{(figures.pss_kb - baseline.pss_kb) / 1024:.1f} MiB "
            f"(against {baseline.rss_kb / 1024:.1f} / {baseline.pss_kb / 1024:.1f} MiB without)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape_cost", description=__doc__)
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--compare", action="store_true", help="also run with metrics off (memory baseline)"
    )
    args = parser.parse_args(argv)
    figures = measure(args.components, args.scrapes, args.idle_seconds, metrics=True)
    baseline = None
    if args.compare:
        baseline = measure(args.components, 0, 0, metrics=False)
    report(figures, baseline)


if __name__ == "__main__":
    main()
