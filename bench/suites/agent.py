"""Issue 3: the agent runtime's own figures, each printed next to its goal.

1. Memory while idle with 10 running components: PSS <= 30 MB, RSS ceiling 40 MB.
2. CPU while idle over 60 s (``--agent-idle``): < 0.1 % of one core.
3. Restart latency after ``kill -9`` of a ``restart_policy = "always"`` component:
   p50 < 5 ms.
4. Deploy: from ``POST /v1/deployments`` (what ``keystonectl deploy apply`` sends) to 100
   trivial components all RUNNING (polling ``GET /v1/components`` every 25 ms) into an
   agent that is already up and idle: < 1 s. Also recorded: until all 100 have stamped,
   and, once, the wall time of ``keystonectl deploy apply --wait`` (the user's command,
   interpreter start-up included), for information.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench import procs
from bench.context import Context
from bench.measure import MeasureError, run_supervisor
from bench.report import Goal, SuiteResult, Table, fmt
from bench.stats import summarize
from bench.suites.supervisors import figures
from bench.supervisors import KeyStone, KeyStoneRunning
from bench.supervisors.keystone import ApplyMode

__all__ = ["SUITE"]

_POLL = 0.025


class AgentSuite:
    name = "agent"
    summary = "KeyStone agent alone: idle memory and CPU, restart latency, deploy of 100"

    def run(self, ctx: Context) -> SuiteResult:
        opts = ctx.options
        result = SuiteResult(self.name, self.summary)
        ks = KeyStone("api")
        reason = ks.ensure(ctx.installer)
        if reason:
            result.skipped["keystone"] = reason
            result.goals = self._goals(None, [], opts.smoke, reason)
            return result
        idle_n = 3 if opts.smoke else 10
        deploy_n = 3 if opts.smoke else 100
        ctx.log(f"bench: agent: {idle_n} components, idle for {opts.agent_idle:.0f} s")
        idle_run, config = run_supervisor(ctx, ks, idle_n, idle_seconds=opts.agent_idle, trials=1)
        idle_run["figures"] = figures(idle_run)
        result.errors += idle_run["errors"]
        if config is not None:
            result.configurations["keystone"] = {"version": ks.version(), **config.as_json()}

        deploys: list[dict[str, Any]] = []
        for trial in range(opts.trials):
            ctx.log(f"bench: agent: deploy {deploy_n} components, trial {trial + 1}")
            deploys.append(self._deploy(ctx, ks, deploy_n, "api"))
        ctx.log(f"bench: agent: keystonectl deploy apply --wait of {deploy_n} components")
        cli = self._deploy(ctx, ks, deploy_n, "cli")
        for d in [*deploys, cli]:
            if d.get("error"):
                result.errors.append(d["error"])

        to_running = [d["to_running_s"] for d in deploys if "to_running_s" in d]
        result.data = {
            "idle_components": idle_n,
            "deploy_components": deploy_n,
            "idle_run": idle_run,
            "deploys": deploys,
            "deploy_summary": {
                "to_running_s": summarize(to_running),
                "to_stamped_s": summarize(
                    [d["to_stamped_s"] for d in deploys if "to_stamped_s" in d]
                ),
            },
            "cli_deploy": cli,
        }
        result.goals = self._goals(idle_run["figures"], to_running, opts.smoke, "")
        fig = idle_run["figures"]
        run_s = result.data["deploy_summary"]["to_running_s"]
        stamped_s = result.data["deploy_summary"]["to_stamped_s"]
        kills = len(idle_run["restart_latency_ms"])
        rows = [
            ["PSS, idle", fmt(fig["pss_mb"]), "MB", f"{idle_n} components"],
            ["RSS, idle", fmt(fig["rss_mb"]), "MB", f"{idle_n} components"],
            ["idle CPU", fmt(fig["cpu_pct"]), "% core", f"over {opts.agent_idle:.0f} s"],
            ["restart p50", fmt(fig["restart_p50_ms"]), "ms", f"{kills} kills"],
            ["restart p95", fmt(fig["restart_p95_ms"]), "ms", ""],
            ["deploy -> all RUNNING p50", fmt(run_s.get("median")), "s",
             f"{deploy_n} components, {len(to_running)} trials"],
            ["deploy -> all RUNNING p95", fmt(run_s.get("p95")), "s", ""],
            ["deploy -> all stamped p50", fmt(stamped_s.get("median")), "s", ""],
            ["keystonectl deploy apply --wait", fmt(cli.get("cli_wall_s")), "s",
             "wall time, CLI start-up included"],
        ]  # fmt: skip
        result.tables = [
            Table("KeyStone agent (issue 3)", ["figure", "value", "unit", "note"], rows)
        ]
        return result

    @staticmethod
    def _deploy(ctx: Context, ks: KeyStone, n: int, mode: ApplyMode) -> dict[str, Any]:
        workload, log = ctx.new_workload(f"deploy-{mode}", n)
        deployment, recipes = ks.write_documents(workload)
        running: KeyStoneRunning | None = None
        sample: dict[str, Any] = {"mode": mode, "n": n}
        try:
            running = ks.launch_agent(workload)
            running.wait_ready()
            time.sleep(ctx.options.settle if not ctx.options.smoke else 0.5)
            t0 = time.monotonic_ns()
            running.apply(deployment, recipes, mode)
            sample["apply_returned_s"] = (time.monotonic_ns() - t0) / 1e9
            if mode == "cli":
                sample["cli_wall_s"] = sample["apply_returned_s"]
            else:
                _wait_running(running, n, t0, sample, ctx.options.start_timeout)
            stamps = log.wait_total(n, ctx.options.start_timeout, running.failure)
            sample["to_stamped_s"] = (max(s.ns for s in stamps) - t0) / 1e9
            running.wait_deployment()
        except MeasureError as exc:
            tail = running.log_tail() if running is not None else ""
            sample["error"] = f"deploy {n} ({mode}): {exc}" + (
                f"\n  agent log ends:\n{tail}" if tail else ""
            )
            ctx.log(f"  error: {sample['error']}")
        finally:
            if running is not None:
                with contextlib.suppress(OSError):
                    running.stop()
            procs.sweep()
            log.close()
        return sample

    @staticmethod
    def _goals(
        fig: dict[str, float | None] | None, to_running: list[float], smoke: bool, reason: str
    ) -> list[Goal]:
        fig = fig or {}
        why = reason or ("smoke run: N = 3, not the goal's N" if smoke else "")
        sized = {} if smoke else fig
        deploy = None if smoke or not to_running else float(summarize(to_running)["median"])
        goals = [
            Goal("PSS, idle, 10 components", 30.0, "MB", sized.get("pss_mb"), why_missing=why),
            Goal("RSS ceiling, idle, 10 components", 40.0, "MB", sized.get("rss_mb"),
                 why_missing=why),
            Goal("idle CPU", 0.1, "% of a core", fig.get("cpu_pct"), op="<", why_missing=reason),
            Goal("restart latency p50", 5.0, "ms", fig.get("restart_p50_ms"), op="<",
                 why_missing=reason),
            Goal("deploy -> 100 RUNNING, p50", 1.0, "s", deploy, op="<", why_missing=why),
        ]  # fmt: skip
        for goal in goals:
            if goal.value is None and not goal.why_missing:
                goal.why_missing = "KeyStone did not produce this figure (see errors)"
        return goals


def _wait_running(
    running: KeyStoneRunning, n: int, t0: int, sample: dict[str, Any], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1.0
    polls = 0
    while True:
        components = running.components()
        polls += 1
        states = [
            c.get("state") for c in components if str(c.get("name", "")).startswith("com.bench.")
        ]
        if len(states) >= n and all(s == "RUNNING" for s in states):
            sample["to_running_s"] = (time.monotonic_ns() - t0) / 1e9
            sample["polls"] = polls
            return
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 0.5
            reason = running.failure()
            if reason:
                raise RuntimeError(f"gave up waiting for {n} components RUNNING: {reason}")
        if time.monotonic() > deadline:
            counts: dict[str, int] = {}
            for s in states:
                counts[str(s)] = counts.get(str(s), 0) + 1
            raise RuntimeError(f"not all {n} components RUNNING after {timeout:.0f} s: {counts}")
        time.sleep(_POLL)


SUITE = AgentSuite()
