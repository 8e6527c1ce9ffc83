"""The asyncio driver that keeps components running: a thin layer over the sans-IO cores.

The deployment engine hands the supervisor :class:`RunPlan`s; the supervisor installs,
starts, watches, restarts and stops components through a
:class:`~keystone_edge.runners.base.Runner`. Rules:

- Every state change goes through :func:`~keystone_edge.supervise.lifecycle.apply` and is
  published on the event bus as ``component.state`` before anything else happens; restart
  decisions come from :class:`~keystone_edge.supervise.backoff.RestartTracker`, health
  decisions from :class:`~keystone_edge.supervise.health.HealthTracker`.
- One supervising task per started component: wait for the exit (pidfd, no polling), ask
  the tracker, sleep the backoff on the injected clock, spawn again. A delay of 0 goes
  straight from the exit to the new spawn, with no sleep in between. A second task exists
  only while there is something timed to do: health probes, or the ``start_period`` timer
  of a component without a probe. An idle healthy component wakes nothing but its probes.
- Every task lives in the supervisor's :class:`asyncio.TaskGroup`; leaving
  ``async with Supervisor(...)`` stops every component (most recently started first). A
  bug in one component's task marks that component FAILED (trigger ``ERROR``) and is
  logged; it never takes the supervisor or other components down.
- Installing a new version of an active component leaves the old one running: the new
  one is *pending* and takes over at the next stop (``RUNNING -> STOPPING -> INSTALLED``),
  so the engine may install before or after stopping the old version. A failed install
  of a pending version changes nothing.
- Operator operations (install, start, stop, restart, resume, remove) on one component are
  serialised by a per-component lock. While one runs, the supervising task leaves exits to
  it (``intent``) instead of restarting.
- Stop: the shutdown script (with its timeout) while the process still runs, then SIGTERM
  to the process group, SIGKILL after ``run.stop_timeout``. An unhealthy restart skips the
  shutdown script (the process is not answering) and counts against the retry budget.
- A process is *ready* when its first probe passes or, without a probe, once it stayed up
  ``run.start_period`` (at once when that is 0). A component with no ``lifecycle.run`` is
  RUNNING and ready at once, with no process.
- Isolation is decided before the supervisor sees a plan: ``RunPlan.isolation`` is the
  policy the agent resolved for this host (identity, limits, capabilities, seccomp,
  namespaces), passed to the runner for the workload and, in a cgroup of their own and
  without namespaces, for its install/shutdown scripts and ``cmd:`` probes.
  ``RunPlan.isolation_error`` (a strict-mode gap, a missing ``run_as`` user) makes every
  spawn fail with that reason: SPAWN_FAILED, never a crash loop. Controls skipped in
  best-effort mode are published once per version as ``component.isolation`` and kept in
  :attr:`ComponentStatus.isolation_warnings`; an OOM kill or a fork refused by
  ``pids_limit`` is published as ``component.oom`` / ``component.pids_limit`` before the
  state change it causes, and counts as a failure for the restart policy.
- A component's processes get a small environment: ``PATH``, ``HOME`` and ``LANG`` from
  the agent, then the recipe's ``exec.env``, then the plan's ``env``. They run in
  ``plan.cwd`` (default ``work_dir``), or ``exec.working_dir`` relative to it; a relative
  ``exec.command`` containing a slash is resolved against that directory, as ``execve``
  after ``chdir`` would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from keystone_edge.errors import ComponentError, InvalidTransition, NotFound
from keystone_edge.observe.events import EventBus
from keystone_edge.recipe.model import Backoff, Health, Recipe, Run
from keystone_edge.runners.base import (
    ExitStatus,
    LaunchSpec,
    ProcessHandle,
    Runner,
    ScriptResult,
    ScriptSpec,
    split_run_as,
)
from keystone_edge.runners.logfile import LogObserver, RotatingLog
from keystone_edge.runners.process import resolve_run_as
from keystone_edge.supervise.backoff import DontRestart, GiveUp, Restart, RestartTracker
from keystone_edge.supervise.clock import Clock, SystemClock
from keystone_edge.supervise.health import HealthCheck, HealthStatus, HealthTracker, Verdict, probe
from keystone_edge.supervise.lifecycle import ACTIVE_STATES, State, Trigger, apply
from keystone_edge.units import Duration

if TYPE_CHECKING:
    from keystone_edge.isolation import IsolationPolicy

__all__ = ["ComponentStatus", "RunPlan", "Supervisor"]

log = logging.getLogger(__name__)

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Nothing runs in these states, so a waiter for readiness has nothing left to wait for.
_NOT_GOING_TO_BE_READY = frozenset({State.NONE, State.INSTALLED, State.STOPPED, State.FAILED})


@dataclass(frozen=True)
class RunPlan:
    """What to run, as the deployment engine resolved it."""

    name: str
    version: str
    recipe: Recipe  # already interpolated with the effective configuration
    work_dir: Path  # runtime/work/<name>; created (and given to run_as) on install
    env: Mapping[str, str] = field(default_factory=dict)  # KEYSTONE_COMPONENT, ...
    cwd: Path | None = None  # where processes run; None = work_dir
    # The workload's isolation (also its scripts' and probes', see _script_spec); None:
    # plain processes as the runner makes them (run_as by name).
    isolation: IsolationPolicy | None = None
    # For an install script with require_privilege: limits only, the agent's identity.
    privileged_isolation: IsolationPolicy | None = None
    # Why this component cannot be isolated as asked: every spawn fails with it.
    isolation_error: str | None = None


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    version: str
    state: State
    pid: int | None
    restarts: int  # automatic restarts since the last start by the operator or engine
    last_exit: ExitStatus | None
    reason: str  # why it is in this state, in words
    ready: bool
    since: float  # monotonic time of the last state change
    health: HealthStatus | None  # None when the recipe has no health check
    isolation_warnings: tuple[str, ...] = ()  # controls skipped in the last start


class _Component:
    """The supervisor's mutable record of one component."""

    def __init__(self, plan: RunPlan, log: RotatingLog, now: float) -> None:
        self.plan = plan
        self.log = log
        self.state = State.NONE
        self.reason = ""
        self.since = now
        self.handle: ProcessHandle | None = None
        self.task: asyncio.Task[None] | None = None  # the supervising task
        self.watch: asyncio.Task[None] | None = None  # probes / start_period timer of a run
        self.tracker = RestartTracker("never", Backoff())
        self.check: HealthCheck | None = None
        self.health: HealthStatus | None = None
        self.ready = False
        self.last_exit: ExitStatus | None = None
        self.intent: str | None = None  # an operator operation owns the next exit
        self.kill_cause: str | None = None  # why the supervisor killed the current process
        self.pending: RunPlan | None = None  # installed while active; takes over at stop
        self.isolation_warnings: tuple[str, ...] = ()  # of the last start
        self.published_warnings: tuple[str, tuple[str, ...]] | None = None  # (version, ...)
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set (and replaced) on every state change

    @property
    def name(self) -> str:
        return self.plan.name

    def pid(self) -> int | None:
        handle = self.handle
        return handle.pid if handle is not None and handle.returncode is None else None


class Supervisor:
    """Runs components and keeps them running (use as ``async with``)."""

    def __init__(
        self,
        *,
        events: EventBus,
        runner: Runner,
        log_dir: Path,
        log_max_bytes: int,
        log_backups: int,
        log_observer: LogObserver | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._events = events
        self._runner = runner
        self._log_dir = log_dir
        self._log_max_bytes = log_max_bytes
        self._log_backups = log_backups
        self._log_observer = log_observer  # disk budget, forwarding to log sinks
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng
        self._components: dict[str, _Component] = {}
        self._order: list[str] = []  # names, least recently started first
        self._tg: asyncio.TaskGroup | None = None
        self._base_env = {
            key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ
        }
        self._base_env.setdefault("PATH", _DEFAULT_PATH)

    def __repr__(self) -> str:
        return f"<Supervisor of {len(self._components)} components>"

    async def __aenter__(self) -> Self:
        if self._tg is not None:
            raise RuntimeError("this Supervisor is already running")
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        try:
            await self.stop_all(list(reversed(self._order)), reason="supervisor shutting down")
        except BaseException:
            self._abort()  # cancelled while stopping: no grace left
            raise
        finally:
            for comp in self._components.values():
                comp.log.close()
            tg, self._tg = self._tg, None
            await tg.__aexit__(exc_type, exc, tb)

    # -- operations (the engine's and the API's surface) ---------------------------------

    async def install(self, plan: RunPlan) -> None:
        """Install ``plan``: create the work dir and run its install script.

        A component that is not active goes to INSTALLED, or to FAILED when the script
        fails. A component that is active keeps running its current version: the new one
        is installed beside it and *pending*, and the next stop ends in INSTALLED with the
        new version instead of STOPPED (``RUNNING -> STOPPING -> INSTALLED``). If the
        script fails then, the running version is left alone and nothing changes state.
        Failures raise :class:`ComponentError` with the exit code or signal and the tail of
        the script's output.
        """
        self._require_running()
        comp = self._components.get(plan.name) or self._register(plan)
        async with comp.lock:
            active = comp.state in ACTIVE_STATES
            comp.pending = None
            if not active:
                comp.plan = plan
            try:
                await self._run_install(comp, plan)
            except ComponentError as exc:
                if active:
                    log.warning("%s: %s (the running version stays)", plan.name, exc)
                else:
                    ended = exc.exit_code is not None or exc.signal is not None
                    status = ExitStatus(exc.exit_code, exc.signal) if ended else None
                    self._transition(comp, Trigger.INSTALL_FAILED, str(exc), status=status)
                raise
            if active:
                comp.pending = plan
            else:
                self._transition(comp, Trigger.INSTALLED_OK, f"installed {plan.version}")

    async def adopt(self, plan: RunPlan) -> None:
        """Take over a component installed before the agent restarted: INSTALLED at once.

        Its install script already ran (the state store says so); only the work dir is
        made sure of. Adopting a component the supervisor already knows does nothing.
        """
        self._require_running()
        if plan.name in self._components:
            return
        comp = self._register(plan)
        async with comp.lock:
            try:
                self._prepare_work_dir(plan)
            except (ComponentError, OSError) as exc:
                message = f"{plan.name} {plan.version}: cannot adopt: {exc}"
                self._transition(comp, Trigger.INSTALL_FAILED, message)
                raise ComponentError(message, component=plan.name) from exc
            self._transition(
                comp, Trigger.INSTALLED_OK, f"adopted {plan.version} (installed before)"
            )

    async def start(self, plan: RunPlan) -> None:
        """Start an installed (or stopped, or failed) component; returns once it is spawned.

        Starting a component that already runs this exact plan does nothing.
        """
        self._require_running()
        comp = self._components.get(plan.name)
        if comp is None:
            raise InvalidTransition(plan.name, State.NONE.value, Trigger.START.value)
        async with comp.lock:
            if comp.state in ACTIVE_STATES:
                if comp.plan == plan:
                    return
                # Another version or config: stop this one first (install() does not).
                raise InvalidTransition(comp.name, comp.state.value, Trigger.START.value)
            apply(comp.name, comp.state, Trigger.START)  # refuse before changing anything
            comp.plan = plan
            await self._start_locked(comp, "start requested")

    async def wait_ready(self, name: str, timeout: float | None = None) -> None:
        """Return once ``name`` is ready; raise ComponentError if it fails, stops or times out.

        Crashes that are restarted do not end the wait; a restart budget running out does.
        """
        comp = self._get(name)
        try:
            async with asyncio.timeout(timeout):
                while not comp.ready:
                    if comp.state in _NOT_GOING_TO_BE_READY:
                        raise self._not_ready(comp, f"is {comp.state} and not ready")
                    await comp.changed.wait()
        except TimeoutError:
            assert timeout is not None
            raise self._not_ready(
                comp, f"was not ready within {Duration(timeout).text} (it is {comp.state})"
            ) from None

    async def stop(self, name: str, reason: str = "requested") -> None:
        """Stop ``name`` (shutdown script, SIGTERM, SIGKILL after stop_timeout); no restart."""
        comp = self._get(name)
        async with comp.lock:
            if comp.state in ACTIVE_STATES:
                self._finish_stop(comp, await self._halt(comp, reason))
            elif comp.pending is not None:
                # The old version already ended on its own; the new one takes over now.
                self._finish_stop(comp, f"{reason}; {comp.plan.version} was not running")
            # Otherwise nothing runs, and a FAILED component keeps its reason.

    async def restart(self, name: str, reason: str = "requested") -> None:
        """Stop ``name`` if it runs, then start it again with a fresh restart budget."""
        self._require_running()
        comp = self._get(name)
        async with comp.lock:
            if comp.state in ACTIVE_STATES:
                await self._halt(comp, f"restart: {reason}")
            else:
                apply(comp.name, comp.state, Trigger.START)  # NONE: refuse before anything
            await self._start_locked(comp, f"restart: {reason}")

    async def resume(self, name: str) -> None:
        """Start a STOPPED, FAILED or INSTALLED component again with its last plan."""
        self._require_running()
        comp = self._get(name)
        async with comp.lock:
            if comp.state in ACTIVE_STATES:
                return
            await self._start_locked(comp, "resumed")

    async def remove(self, name: str) -> None:
        """Stop ``name`` if it runs and forget it (its last event goes to NONE)."""
        comp = self._get(name)
        async with comp.lock:
            if comp.state in ACTIVE_STATES:
                self._finish_stop(comp, await self._halt(comp, "removing"))
            if comp.state is not State.NONE:
                self._transition(comp, Trigger.REMOVE, "removed")
            comp.log.close()
            del self._components[name]
            if name in self._order:
                self._order.remove(name)

    def status(self, name: str) -> ComponentStatus:
        comp = self._get(name)
        return ComponentStatus(
            name=comp.name,
            version=comp.plan.version,
            state=comp.state,
            pid=comp.pid(),
            restarts=comp.tracker.restarts,
            last_exit=comp.last_exit,
            reason=comp.reason,
            ready=comp.ready,
            since=comp.since,
            health=comp.health,
            isolation_warnings=comp.isolation_warnings,
        )

    def statuses(self) -> list[ComponentStatus]:
        return [self.status(name) for name in self._components]

    async def stop_all(self, order: Sequence[str], *, reason: str = "requested") -> None:
        """Stop components one by one in ``order``, then any others, latest started first."""
        names = [name for name in order if name in self._components]
        names += [n for n in reversed(self._order) if n in self._components and n not in names]
        names += [n for n in self._components if n not in names]
        for name in names:
            try:
                await self.stop(name, reason)
            except Exception:
                # One component failing to stop must not keep the others running.
                log.exception("%s: stop failed", name)

    # -- the supervising machinery -------------------------------------------------------

    async def _run_install(self, comp: _Component, plan: RunPlan) -> None:
        try:
            self._prepare_work_dir(plan)
        except OSError as exc:
            message = f"{plan.name} {plan.version}: cannot prepare {plan.work_dir}: {exc}"
            raise ComponentError(message, component=plan.name) from exc
        install = plan.recipe.lifecycle.install
        if install is None:
            return
        spec = self._script_spec(
            comp,
            install.script,
            install.timeout,
            "install",
            plan=plan,
            privileged=install.require_privilege,
        )
        result = await self._runner.run_script(spec)
        if not result.ok:
            message = f"{plan.name} {plan.version}: install script {result.describe()}"
            if last := result.last_line():
                message = f"{message}: {last[:200]}"
            raise ComponentError(
                message,
                component=plan.name,
                exit_code=result.status.code,
                signal=result.status.signal,
                output=result.output,
            )

    def _finish_stop(self, comp: _Component, note: str) -> None:
        """STOPPING -> STOPPED, or -> INSTALLED when a new version waits to take over."""
        pending, comp.pending = comp.pending, None
        if pending is None:
            self._transition(comp, Trigger.STOPPED, note, status=comp.last_exit)
            return
        comp.plan = pending
        reason = f"installed {pending.version} ({note})"
        self._transition(comp, Trigger.INSTALLED_OK, reason, status=comp.last_exit)

    async def _start_locked(self, comp: _Component, reason: str) -> None:
        plan = comp.plan
        run = plan.recipe.lifecycle.run
        comp.check = None
        if run is not None and run.health is not None:
            try:
                comp.check = HealthCheck.parse(run.health.check)
            except ValueError as exc:
                raise ComponentError(f"{plan.name}: {exc}", component=plan.name) from None
        comp.tracker = RestartTracker(
            run.restart_policy if run is not None else "never",
            run.backoff if run is not None else Backoff(),
            rng=self._rng,
        )
        comp.intent = None
        comp.pending = None  # a start decides which version runs
        comp.last_exit = None
        comp.health = HealthStatus.UNKNOWN if comp.check is not None else None
        self._transition(comp, Trigger.START, reason)
        if comp.name in self._order:
            self._order.remove(comp.name)
        self._order.append(comp.name)
        if run is None:
            comp.ready = True
            self._transition(comp, Trigger.READY, "nothing to run (no lifecycle.run)")
            return
        handle = await self._spawn(comp)
        self._begin_run(comp, handle)
        comp.task = self._task(comp, "supervise", lambda: self._supervise(comp, handle))

    async def _spawn(self, comp: _Component) -> ProcessHandle:
        try:
            handle = await self._runner.start(self._launch_spec(comp))
        except ComponentError as exc:
            self._transition(comp, Trigger.SPAWN_FAILED, str(exc))
            raise
        self._note_isolation(comp, handle.warnings)
        return handle

    def _note_isolation(self, comp: _Component, warnings: tuple[str, ...]) -> None:
        """Keep the controls this start skipped; publish them once per version."""
        comp.isolation_warnings = warnings
        published = (comp.plan.version, warnings)
        if warnings and comp.published_warnings != published:
            comp.published_warnings = published
            self._events.publish(
                "component.isolation",
                component=comp.name,
                version=comp.plan.version,
                level="warning",
                warnings=list(warnings),
            )

    def _report_limits(self, comp: _Component, status: ExitStatus) -> None:
        """An exit caused by a resource limit gets an event of its own."""
        isolation = comp.plan.isolation
        cgroup = isolation.cgroup if isolation is not None else None
        if status.oom_killed:
            self._events.publish(
                "component.oom",
                component=comp.name,
                version=comp.plan.version,
                reason=status.describe(),
                memory_limit=cgroup.limits.memory_text if cgroup is not None else None,
            )
        if status.pids_limit_hits and not status.ok:
            self._events.publish(
                "component.pids_limit",
                component=comp.name,
                version=comp.plan.version,
                reason=status.describe(),
                pids_limit=cgroup.limits.pids_max if cgroup is not None else None,
                refused_forks=status.pids_limit_hits,
            )

    def _begin_run(self, comp: _Component, handle: ProcessHandle) -> None:
        comp.handle = handle
        comp.ready = False
        comp.kill_cause = None
        now = self._clock.monotonic()
        comp.tracker.started(now)
        run = comp.plan.recipe.lifecycle.run
        assert run is not None
        if run.health is not None and comp.check is not None:
            comp.health = HealthStatus.UNKNOWN
            health, check = run.health, comp.check
            comp.watch = self._task(
                comp, "probe", lambda: self._watch_health(comp, handle, check, health, now)
            )
        elif run.start_period > 0:
            period = float(run.start_period)
            comp.watch = self._task(comp, "ready", lambda: self._ready_after(comp, handle, period))
        else:
            self._mark_ready(comp, "started")

    def _end_run(self, comp: _Component, status: ExitStatus) -> None:
        comp.last_exit = status
        comp.handle = None
        comp.ready = False
        if comp.watch is not None:
            comp.watch.cancel()  # no await: the TaskGroup reaps it, the respawn goes first
            comp.watch = None

    async def _supervise(self, comp: _Component, handle: ProcessHandle) -> None:
        try:
            while True:
                status = await handle.wait()
                now = self._clock.monotonic()
                if comp.handle is handle:
                    self._end_run(comp, status)
                if comp.intent is not None:
                    return  # stop/restart/install is in charge of what follows
                self._report_limits(comp, status)
                cause = comp.kill_cause or status.describe()
                failed = comp.kill_cause is not None or not status.ok
                decision = comp.tracker.exited(now, failed=failed, cause=cause)
                if isinstance(decision, DontRestart):
                    self._transition(comp, Trigger.EXITED, decision.reason, status=status)
                    return
                if isinstance(decision, GiveUp):
                    self._transition(comp, Trigger.GIVE_UP, decision.reason, status=status)
                    return
                assert isinstance(decision, Restart)
                self._transition(comp, Trigger.RESTART_SCHEDULED, decision.reason, status=status)
                if decision.delay > 0:
                    await self._clock.sleep(decision.delay)
                try:
                    handle = await self._spawn(comp)
                except ComponentError:
                    return  # SPAWN_FAILED already recorded why
                self._begin_run(comp, handle)
        except BaseException:
            handle.kill()  # cancelled or broken: never leave an unsupervised process
            raise

    async def _watch_health(
        self,
        comp: _Component,
        handle: ProcessHandle,
        check: HealthCheck,
        health: Health,
        started_at: float,
    ) -> None:
        tracker = HealthTracker(
            interval=float(health.interval),
            failure_threshold=health.failure_threshold,
            start_period=float(health.start_period),
            started_at=started_at,
        )
        plan = comp.plan

        async def run_command(command: str, timeout: float) -> ScriptResult:
            spec = self._script_spec(comp, command, timeout, "probe", log_output=False)
            try:
                return await self._runner.run_script(spec)
            except ComponentError as exc:  # e.g. the launcher failed: a failed probe
                status = ExitStatus(exc.exit_code, exc.signal, detail="could not run")
                return ScriptResult(status=status, output=str(exc), timeout=timeout)

        while True:
            result = await probe(check, float(health.timeout), run_command=run_command)
            if comp.handle is not handle:
                return
            now = self._clock.monotonic()
            update = tracker.observe(now, result.ok)
            comp.health = update.status
            if update.publish:
                self._events.publish(
                    "component.health",
                    component=plan.name,
                    version=plan.version,
                    ok=result.ok,
                    detail=result.detail,
                    latency=result.latency_seconds,
                    status=update.status.value,
                    failures=update.failures,
                )
            if update.verdict in (Verdict.READY, Verdict.RECOVERED):
                self._mark_ready(comp, f"health check passed: {result.detail}")
            elif update.verdict is Verdict.UNHEALTHY:
                times = "once" if update.failures == 1 else f"{update.failures} times in a row"
                cause = f"health check failed {times}: {result.detail}"
                self._transition(comp, Trigger.PROBE_FAILED, cause)
                if comp.tracker.policy != "never":
                    comp.kill_cause = cause
                    self._transition(comp, Trigger.STOP, f"restarting: {cause}")
                    await handle.stop(float(_run(comp).stop_timeout))
                    return
            await self._clock.sleep(tracker.next_delay(now))

    async def _ready_after(self, comp: _Component, handle: ProcessHandle, period: float) -> None:
        await self._clock.sleep(period)
        if comp.handle is handle:
            self._mark_ready(comp, f"up for {Duration(period).text}")

    def _mark_ready(self, comp: _Component, reason: str) -> None:
        comp.ready = True
        if comp.state is State.STARTING:
            self._transition(comp, Trigger.READY, reason)
        elif comp.state is State.DEGRADED:
            self._transition(comp, Trigger.PROBE_RECOVERED, reason)

    async def _halt(self, comp: _Component, reason: str) -> str:
        """Bring an active component down to STOPPING with no process and no task left.

        Returns a note for the final event (how the process ended, script trouble).
        """
        comp.intent = reason
        if comp.state is not State.STOPPING:
            self._transition(comp, Trigger.STOP, reason)
        notes = [reason]
        handle = comp.handle
        if handle is not None and handle.returncode is None:
            try:
                if problem := await self._run_shutdown(comp):
                    notes.append(problem)
                status = await handle.stop(float(_run(comp).stop_timeout))
            except BaseException:
                handle.kill()
                raise
            comp.last_exit = status
            self._report_limits(comp, status)
            notes.append(status.describe())
        for task in (comp.watch, comp.task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                await asyncio.wait([task])
        comp.watch = comp.task = None
        comp.handle = None
        comp.ready = False
        return "; ".join(notes)

    async def _run_shutdown(self, comp: _Component) -> str | None:
        shutdown = comp.plan.recipe.lifecycle.shutdown
        if shutdown is None:
            return None
        spec = self._script_spec(comp, shutdown.script, shutdown.timeout, "shutdown")
        try:
            result = await self._runner.run_script(spec)
        except ComponentError as exc:
            log.warning("%s: shutdown script could not run: %s", comp.name, exc)
            return f"shutdown script could not run: {exc}"
        if not result.ok:
            log.warning("%s: shutdown script %s", comp.name, result.describe())
            return f"shutdown script {result.describe()}"
        return None

    def _transition(
        self, comp: _Component, trigger: Trigger, reason: str, *, status: ExitStatus | None = None
    ) -> None:
        before = comp.state
        after = apply(comp.name, before, trigger)
        comp.state = after
        comp.reason = reason
        comp.since = self._clock.monotonic()
        self._events.publish(
            "component.state",
            component=comp.name,
            version=comp.plan.version,
            from_state=before.value,
            to_state=after.value,
            trigger=trigger.value,
            reason=reason,
            pid=comp.pid(),
            restarts=comp.tracker.restarts,
            exit_code=status.code if status is not None else None,
            signal=status.signal if status is not None else None,
        )
        changed, comp.changed = comp.changed, asyncio.Event()
        changed.set()

    def _task(
        self, comp: _Component, what: str, body: Callable[[], Coroutine[Any, Any, None]]
    ) -> asyncio.Task[None]:
        assert self._tg is not None

        async def guarded() -> None:
            try:
                await body()
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the TaskGroup
                self._fail(comp, exc)

        return self._tg.create_task(guarded(), name=f"{what} {comp.name}")

    def _fail(self, comp: _Component, exc: Exception) -> None:
        log.error("%s: supervisor error, marking it FAILED", comp.name, exc_info=exc)
        comp.intent = "internal error"
        if comp.handle is not None:
            comp.handle.kill()
            comp.handle = None
        for task in (comp.watch, comp.task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        comp.watch = comp.task = None
        comp.ready = False
        self._transition(comp, Trigger.ERROR, f"internal error: {exc!r}")

    def _abort(self) -> None:
        for comp in self._components.values():
            comp.intent = "supervisor aborted"
            if comp.handle is not None:
                comp.handle.kill()
            for task in (comp.watch, comp.task):
                if task is not None:
                    task.cancel()

    # -- building what the runner needs ---------------------------------------------------

    def _environment(self, plan: RunPlan) -> dict[str, str]:
        env = dict(self._base_env)
        run = plan.recipe.lifecycle.run
        if run is not None and run.exec is not None:
            env.update(run.exec.env)
        env.update(plan.env)
        return env

    def _launch_spec(self, comp: _Component) -> LaunchSpec:
        plan = comp.plan
        run = _run(comp)
        cwd = plan.cwd or plan.work_dir
        if run.exec is not None:
            if run.exec.working_dir:
                cwd = cwd / run.exec.working_dir
            command = run.exec.command
            if "/" in command and not command.startswith("/"):
                command = str(cwd / command)
            argv = [command, *run.exec.args]
        elif run.script is not None:
            argv = ["/bin/sh", "-c", run.script]
        else:
            raise ComponentError(
                f"{plan.name}: lifecycle.run has neither exec nor script", component=plan.name
            )
        if plan.isolation_error is not None:
            raise ComponentError(plan.isolation_error, component=plan.name)
        user, group = (None, None)
        if plan.isolation is None:
            user, group = split_run_as(plan.recipe.security.run_as)
        return LaunchSpec(
            name=plan.name,
            argv=argv,
            env=self._environment(plan),
            cwd=cwd,
            user=user,
            group=group,
            log=comp.log,
            isolation=plan.isolation,
        )

    def _script_spec(
        self,
        comp: _Component,
        script: str,
        timeout: float,
        label: str,
        *,
        plan: RunPlan | None = None,
        privileged: bool = False,
        log_output: bool = True,
    ) -> ScriptSpec:
        plan = plan or comp.plan
        if plan.isolation_error is not None:
            raise ComponentError(plan.isolation_error, component=plan.name)
        policy = plan.privileged_isolation if privileged else plan.isolation
        user, group = (None, None)
        if policy is not None:
            from keystone_edge.isolation import script_policy

            policy = script_policy(policy, label)
        elif plan.isolation is None and not privileged:
            user, group = split_run_as(plan.recipe.security.run_as)
        return ScriptSpec(
            name=plan.name,
            script=script,
            cwd=plan.cwd or plan.work_dir,
            env=self._environment(plan),
            timeout=float(timeout),
            user=user,
            group=group,
            log=comp.log if log_output else None,
            label=label,
            isolation=policy,
        )

    def _prepare_work_dir(self, plan: RunPlan) -> None:
        plan.work_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        # The component owns its work dir (and nothing else the agent made). With an
        # isolation policy the launcher asserts this again at every start.
        if plan.isolation is not None:
            who = plan.isolation.identity
            if who is not None:
                os.chown(plan.work_dir, who.uid, who.gid)
        elif plan.isolation_error is None:
            user, group = split_run_as(plan.recipe.security.run_as)
            identity = resolve_run_as(user, group) if user else None
            if identity is not None:
                os.chown(plan.work_dir, identity.uid, identity.gid)

    # -- small helpers --------------------------------------------------------------------

    def _register(self, plan: RunPlan) -> _Component:
        log_file = RotatingLog(
            self._log_dir / f"{plan.name}.log",
            max_bytes=self._log_max_bytes,
            backups=self._log_backups,
            observer=self._log_observer,
        )
        comp = _Component(plan, log_file, self._clock.monotonic())
        self._components[plan.name] = comp
        return comp

    def _get(self, name: str) -> _Component:
        try:
            return self._components[name]
        except KeyError:
            raise NotFound(f"no component named {name!r}") from None

    def _require_running(self) -> None:
        if self._tg is None:
            raise RuntimeError("use the Supervisor as `async with Supervisor(...) as supervisor`")

    def _not_ready(self, comp: _Component, what: str) -> ComponentError:
        last = comp.last_exit
        return ComponentError(
            f"{comp.name} {comp.plan.version} {what}: {comp.reason}",
            component=comp.name,
            exit_code=last.code if last is not None else None,
            signal=last.signal if last is not None else None,
        )


def _run(comp: _Component) -> Run:
    run = comp.plan.recipe.lifecycle.run
    assert run is not None
    return run
