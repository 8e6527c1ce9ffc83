"""``keystone-agent``: wires the parts together and runs them until told to stop.

Data flows one way (design.md): API -> deployment engine -> supervisor -> runner, with the
state store beside the engine; events flow back out through the bus, which the store
subscribes to (every lifecycle transition is persisted before anyone else sees it).

Start-up: open the store; stop processes a previous agent left behind (its components'
process groups, recognised by their ``KEYSTONE_COMPONENT`` environment, not by trusting a
stale pid); roll back any deployment a crash interrupted; re-adopt the desired state
(start every component that should run, dependencies first and ready before their
dependents); serve the API; tell systemd ``READY=1``.

Stop (SIGTERM/SIGINT): ``STOPPING=1``, stop serving, interrupt a running deployment (it is
rolled back on the next start), then stop every component in reverse dependency order
(shutdown script, SIGTERM, SIGKILL after the grace period).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import graphlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Coroutine, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystone_edge import __version__
from keystone_edge.api.control import (
    ComponentAction,
    ComponentDetail,
    DeploymentRequest,
    Readiness,
    ReadinessCheck,
)
from keystone_edge.config import AgentConfig, load_agent_config
from keystone_edge.errors import KeyStoneError, NotFound, RequestError
from keystone_edge.layout import Layout, default_root
from keystone_edge.observe.events import Event, EventBus, EventStream
from keystone_edge.observe.systemd import notify
from keystone_edge.recipe.model import Recipe
from keystone_edge.store import ComponentRecord, DeploymentRecord, StateStore

if TYPE_CHECKING:
    from keystone_edge.api.artifacts import ArtifactInfo, GcOutcome
    from keystone_edge.artifacts import ArtifactCache
    from keystone_edge.artifacts.fetch import FetchResult, ProgressCallback, ResumableFetcher
    from keystone_edge.artifacts.gc import Retention
    from keystone_edge.deploy.engine import DeploymentEngine
    from keystone_edge.observe.logs import LogSetup
    from keystone_edge.observe.metrics import Metrics, Snapshot
    from keystone_edge.observe.tracing import DeploymentTracing
    from keystone_edge.supervise import RunPlan, Supervisor

__all__ = ["Agent", "main"]

log = logging.getLogger("keystone_edge.agent")

_LIVE = frozenset({"STARTING", "RUNNING", "DEGRADED"})
# /readyz: a callback waiting longer than this means the loop is not keeping up.
_MAX_LOOP_LAG = 0.5
# /readyz: a deployment still running this long past its deadline is stuck (the engine
# cancels it at the deadline; rolling back then changes its status at once).
_STUCK_GRACE = 10.0


class Agent:
    """The running agent: implements the API's ``AgentControl`` and the engine's
    ``ComponentRuntime`` on top of the store, the supervisor and the artifact cache."""

    def __init__(
        self, layout: Layout, config: AgentConfig, *, logs: LogSetup | None = None
    ) -> None:
        self.layout = layout
        self.config = config
        self._logs = logs  # what main() installed: sinks, the log disk budget
        self._metrics: Metrics | None = None
        self._tracing: DeploymentTracing | None = None
        self.started = time.monotonic()
        self.stopping = asyncio.Event()
        self._store: StateStore | None = None
        self._events: EventBus | None = None
        self._supervisor: Supervisor | None = None
        self._engine: DeploymentEngine | None = None
        self._cache: ArtifactCache | None = None

    # -- wiring -----------------------------------------------------------------------

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "the agent is not running"
        return self._store

    @property
    def events(self) -> EventBus:
        assert self._events is not None, "the agent is not running"
        return self._events

    @property
    def supervisor(self) -> Supervisor:
        assert self._supervisor is not None, "the agent is not running"
        return self._supervisor

    @property
    def engine(self) -> DeploymentEngine:
        assert self._engine is not None, "the agent is not running"
        return self._engine

    @property
    def socket_path(self) -> Path:
        configured = self.config.api.socket
        return Path(configured) if configured else self.layout.socket

    async def run(self) -> None:
        from keystone_edge.api.artifacts import artifact_routes
        from keystone_edge.api.server import serve
        from keystone_edge.artifacts import ArtifactCache, HttpFetcher, LocalFetcher, UnpackLimits
        from keystone_edge.artifacts.http import http_options
        from keystone_edge.deploy.engine import DeploymentEngine
        from keystone_edge.runners.process import ProcessRunner
        from keystone_edge.supervise import Supervisor

        self.layout.create()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_stop, signum)
        self._store = store = StateStore(self.layout.state_db)
        self._events = events = EventBus(first_id=store.last_event_id() + 1)
        events.subscribe(self._persist)
        self._watch(events)
        settings = self.config.artifacts
        http = HttpFetcher(http_options(settings))  # httpcore is imported on first use
        self._cache = cache = ArtifactCache(
            self.layout.artifacts,
            [LocalFetcher(), _ReportedDownloads(http, events)],
            limits=UnpackLimits(max_bytes=int(settings.max_unpack_bytes)),
            partial_max_age=float(settings.partial_max_age),
        )
        watchdog = self._start_watchdog()
        try:
            async with Supervisor(
                events=events,
                runner=ProcessRunner(),
                log_dir=self.layout.logs,
                log_max_bytes=int(self.config.logs.max_bytes),
                log_backups=self.config.logs.backups,
                log_observer=self._logs.component_tap if self._logs is not None else None,
            ) as supervisor:
                self._supervisor = supervisor
                self._engine = engine = DeploymentEngine(
                    store=store,
                    events=events,
                    layout=self.layout,
                    runtime=self,
                    effective_config=self._effective_config,
                    default_timeout=float(self.config.deployments.default_timeout),
                    pause_at=os.environ.get("KEYSTONE_TEST_PAUSE_AT"),
                    after_each=self._collect_garbage,
                )
                for leftover in await cache.remove_leftovers():
                    log.info("removed an unfinished cache entry %s", leftover)
                await self._stop_leftovers()
                # Cgroups of components a crashed agent left (and, on v2, delegation).
                from keystone_edge.isolation import reclaim

                parent = self.config.isolation.parent_for(self.layout.root, default_root())
                for note in await asyncio.to_thread(reclaim, parent):
                    log.warning("%s", note)
                await engine.recover()
                await self._adopt()
                engine.requeue_pending()
                async with asyncio.TaskGroup() as group:
                    worker = group.create_task(engine.run(), name="deployment-worker")
                    serving = asyncio.Event()
                    api = group.create_task(
                        serve(
                            self,
                            self.socket_path,
                            mode=int(self.config.api.socket_mode, 8),
                            group=self.config.api.socket_group,
                            shutdown=self.stopping,
                            ready=serving,
                            extra_routes=artifact_routes(self),
                        ),
                        name="api",
                    )
                    await _first(serving.wait(), api)
                    if self._metrics is not None and self.config.metrics.tcp:
                        group.create_task(self._serve_metrics_tcp(), name="metrics-tcp")
                    log.info(
                        "agent %s ready: root %s, API on %s",
                        __version__,
                        self.layout.root,
                        self.socket_path,
                    )
                    notify("READY=1")
                    events.publish("agent.ready", version=__version__)
                    await self.stopping.wait()
                    notify("STOPPING=1")
                    log.info("stopping: components stop in reverse dependency order")
                    worker.cancel()
                await supervisor.stop_all(self._stop_order())
        finally:
            if watchdog is not None:
                watchdog.cancel()
                await asyncio.wait([watchdog])
            if self._tracing is not None:
                await asyncio.to_thread(self._tracing.close)
            await http.aclose()
            store.close()
            log.info("agent stopped")

    def _request_stop(self, signum: int) -> None:
        log.info("received %s", signal.Signals(signum).name)
        self.stopping.set()

    # -- observability (observe/): subscribers to the bus, nothing in the business code --

    def _watch(self, events: EventBus) -> None:
        """Subscribe what watches the agent: log lines, metrics, traces (after the store)."""
        from keystone_edge.observe.logs import EventLogger

        events.subscribe(EventLogger())
        if self.config.metrics.enabled:
            from keystone_edge.observe.metrics import Metrics

            self._metrics = Metrics(version=__version__)
            events.subscribe(self._metrics.tally)
        tracing = self.config.tracing
        if tracing.endpoint:
            from keystone_edge.observe.tracing import start_tracing

            self._tracing = start_tracing(
                tracing.endpoint,
                headers=tracing.headers,
                timeout=float(tracing.timeout),
                service_name=tracing.service_name,
                service_version=__version__,
                device_id=self.config.agent.device_id,
            )
            events.subscribe(self._tracing)

    def _start_watchdog(self) -> asyncio.Task[None] | None:
        """systemd's watchdog, from this loop (run() cancels it last, after the stop)."""
        from keystone_edge.observe.watchdog import run_watchdog, watchdog_interval

        interval = watchdog_interval()
        if interval is None:
            return None
        return asyncio.create_task(run_watchdog(interval), name="watchdog")

    async def _serve_metrics_tcp(self) -> None:
        from keystone_edge.observe.metrics import CONTENT_TYPE
        from keystone_edge.observe.scrape import serve_metrics

        await serve_metrics(
            self.metrics,
            host=self.config.metrics.address,
            port=self.config.metrics.port,
            content_type=CONTENT_TYPE,
            shutdown=self.stopping,
        )

    def _persist(self, event: Event) -> None:
        """Bus subscriber: every event, and every lifecycle transition, into the store."""
        store = self.store
        with store.transaction():
            if event.type == "component.state":
                p = event.payload
                fields: dict[str, Any] = {"pid": p.get("pid"), "restarts": p.get("restarts", 0)}
                if p.get("exit_code") is not None or p.get("signal") is not None:
                    fields["last_exit_code"] = p.get("exit_code")
                    fields["last_signal"] = p.get("signal")
                store.record_transition(
                    p["component"], p["from_state"], p["to_state"], p.get("reason", ""), **fields
                )
            store.append_event(event)

    # -- start-up ---------------------------------------------------------------------

    async def _stop_leftovers(self) -> None:
        """Stop component processes a previous agent instance left running.

        A pid in the store may have been reused by an unrelated process, and a process may
        have started just before the previous agent died, before its pid was recorded; so
        every process whose environment says it belongs to a component of this root is
        stopped (with its process group), whatever the store says.
        """
        import psutil

        root = str(self.layout.root)
        leftovers: list[psutil.Process] = []
        for proc in psutil.process_iter():
            try:
                env = proc.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("KEYSTONE_ROOT") == root and "KEYSTONE_COMPONENT" in env:
                leftovers.append(proc)
        if not leftovers:
            return
        for proc in leftovers:
            log.warning("stopping pid %d left over from a previous agent", proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, leftovers, 5)
        for proc in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
                os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
                proc.kill()

    async def _adopt(self) -> None:
        """Start every component the desired state says should run, in dependency order."""
        wanted: dict[str, tuple[Recipe, ComponentRecord]] = {}
        for record in self.store.components():
            if not record.run or record.version is None:
                continue
            try:
                wanted[record.name] = (self.engine.load_recipe(record.name, record.version), record)
            except KeyStoneError as exc:
                log.error("cannot adopt %s: %s", record.name, exc)  # noqa: TRY400
        failed: set[str] = set()
        for layer in _layers({n: r for n, (r, _) in wanted.items()}):
            started = []
            for name in layer:
                recipe, record = wanted[name]
                if self.is_live(name):  # restored by a crash recovery just now
                    started.append(name)
                    continue
                blocked = [
                    d.name for d in recipe.dependencies if d.type == "hard" and d.name in failed
                ]
                if blocked:
                    log.error("not starting %s: dependency %s is not ready", name, blocked[0])
                    failed.add(name)
                    continue
                try:
                    await self.start(recipe, record.config)
                    started.append(name)
                except KeyStoneError as exc:
                    log.error("cannot start %s: %s", name, exc)  # noqa: TRY400
                    failed.add(name)
            for name in started:
                try:
                    await self.wait_ready(name, None)
                except KeyStoneError as exc:
                    log.error("%s did not become ready: %s", name, exc)  # noqa: TRY400
                    failed.add(name)

    def _stop_order(self) -> list[str]:
        recipes: dict[str, Recipe] = {}
        for record in self.store.components():
            if record.version is not None:
                with contextlib.suppress(KeyStoneError):
                    recipes[record.name] = self.engine.load_recipe(record.name, record.version)
        order = [n for layer in _layers(recipes) for n in layer]
        others = sorted(s.name for s in self.supervisor.statuses() if s.name not in order)
        return [*reversed(order), *others]

    # -- ComponentRuntime (used by the deployment engine) ----------------------------------

    def _effective_config(self, recipe: Recipe, overrides: Mapping[str, Any]) -> dict[str, Any]:
        from keystone_edge.recipe import effective_config

        return effective_config(
            recipe,
            device=self.config.device_config.get(recipe.name),
            deployment=dict(overrides),
            source=f"{recipe.name}@{recipe.version}",
        )

    def _with_backoff_defaults(self, recipe: Recipe) -> Recipe:
        """The recipe with the agent's ``[backoff]`` for the keys it does not set itself."""
        defaults = self.config.backoff
        if not defaults or recipe.lifecycle.run is None:
            return recipe
        from keystone_edge.recipe import recipe_from_builtins, recipe_to_builtins

        data = recipe_to_builtins(recipe)  # omits defaults: what is left was set
        run = data.setdefault("lifecycle", {}).setdefault("run", {})
        run["backoff"] = {**defaults, **run.get("backoff", {})}
        return recipe_from_builtins(data, source=f"{recipe.name}@{recipe.version}")

    async def _plan(self, recipe: Recipe, config: Mapping[str, Any]) -> RunPlan:
        from keystone_edge.isolation import (
            IsolationPolicy,
            asks_for_isolation,
            policy_for,
            probe_host,
        )
        from keystone_edge.recipe import RenderContext, render
        from keystone_edge.supervise import RunPlan

        recipe = self._with_backoff_defaults(recipe)
        artifacts = self.layout.component_artifacts(recipe.name, recipe.version)
        work = self.layout.component_work(recipe.name)
        work.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        rendered = render(
            recipe,
            dict(config),
            RenderContext(
                artifacts_path=str(artifacts),
                work_path=str(work),
                device_id=self.config.agent.device_id,
            ),
        )
        settings = self.config.isolation
        parent = settings.parent_for(self.layout.root, default_root())

        def isolate() -> tuple[IsolationPolicy, IsolationPolicy | None]:
            # Blocking: reads /proc and /sys, may create a user, compiles the filter.
            host = probe_host()
            install = rendered.lifecycle.install
            privileged = None
            if install is not None and install.require_privilege:
                privileged = policy_for(
                    rendered,
                    cgroup_root=parent,
                    mode=settings.mode,
                    work_dir=str(work),
                    privileged=True,
                    host=host,
                )
            policy = policy_for(
                rendered,
                cgroup_root=parent,
                mode=settings.mode,
                namespaces=settings.namespaces_for(recipe.name),
                work_dir=str(work),
                create_user=settings.create_user,
                host=host,
            )
            who = policy.identity
            if who is not None:
                # A run_as user must reach its work dir and artifacts (its cwd, usually its
                # program) even when the agent runs with UMask=0027 (the systemd unit): the
                # directories above become traversable (o+x, not listable), the artifacts
                # directory readable by the component's group.
                layout, version_dir = self.layout, artifacts.parent
                for d in (
                    layout.work.parent,  # runtime/
                    layout.work,
                    layout.components,
                    version_dir.parent,
                    version_dir,
                ):
                    if not d.stat().st_mode & 0o001:
                        d.chmod(d.stat().st_mode & 0o7777 | 0o001)
                os.chown(artifacts, -1, who.gid)
                artifacts.chmod(artifacts.stat().st_mode & 0o7777 | 0o050)
            return policy, privileged

        isolation: IsolationPolicy | None = None
        privileged: IsolationPolicy | None = None
        refused: str | None = None
        plain = not settings.isolate_all and not asks_for_isolation(
            rendered, settings.namespaces_for(recipe.name)
        )
        try:
            if not plain:  # a recipe that asks for nothing runs without the launcher
                isolation, privileged = await asyncio.to_thread(isolate)
        except KeyStoneError as exc:
            # Strict-mode gaps, a missing run_as user, a bad seccomp profile: the component
            # is refused at its first spawn, with this reason (never run less isolated).
            refused = f"{exc}; {exc.hint}" if exc.hint else str(exc)
        return RunPlan(
            name=recipe.name,
            version=recipe.version,
            recipe=rendered,
            work_dir=work,
            # Lifecycle scripts run where the artifacts are (the seed's `./hello`).
            cwd=artifacts,
            isolation=isolation,
            privileged_isolation=privileged,
            isolation_error=refused,
            env={
                "KEYSTONE_COMPONENT": recipe.name,
                "KEYSTONE_COMPONENT_VERSION": recipe.version,
                "KEYSTONE_ROOT": str(self.layout.root),
                "KEYSTONE_ARTIFACTS_PATH": str(artifacts),
                "KEYSTONE_WORK_PATH": str(work),
                "KEYSTONE_DEVICE_ID": self.config.agent.device_id,
                "KEYSTONE_SOCKET": str(self.socket_path),
            },
        )

    async def fetch(self, recipe: Recipe, search_dirs: list[Path]) -> None:
        """Fetch and verify the artifacts, then lay them out fresh for this version."""
        assert self._cache is not None
        dest = self.layout.component_artifacts(recipe.name, recipe.version)
        staging = dest.with_name(dest.name + ".new")
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for artifact in recipe.artifacts:
            from keystone_edge.artifacts.verify import public_uri

            uri = public_uri(artifact.uri)
            try:
                cached = await self._cache.ensure(
                    artifact,
                    search_dirs=search_dirs,
                    progress=partial(self._progress, recipe, uri),
                )
            except Exception as exc:
                # For metrics and logs; the reason is the error's stable code.
                self.events.publish(
                    "artifact.failed",
                    component=recipe.name,
                    version=recipe.version,
                    uri=uri,
                    reason=exc.code if isinstance(exc, KeyStoneError) else type(exc).__name__,
                    error=str(exc),
                )
                raise
            await self._cache.materialize(cached, artifact, staging)
        await asyncio.to_thread(shutil.rmtree, dest, ignore_errors=True)
        staging.rename(dest)

    def _progress(self, recipe: Recipe, uri: str, done: int, total: int | None) -> None:
        # Called on the loop thread, at most a few times a second per artifact.
        self.events.publish(
            "artifact.progress",
            component=recipe.name,
            version=recipe.version,
            uri=uri,
            bytes_done=done,
            bytes_total=total,
        )

    async def install(self, recipe: Recipe, config: Mapping[str, Any]) -> None:
        await self.supervisor.install(await self._plan(recipe, config))

    async def start(self, recipe: Recipe, config: Mapping[str, Any]) -> None:
        """Start an installed component (one the supervisor has not seen since this agent
        started is adopted as installed: its install script ran before)."""
        self.store.upsert_component(recipe.name)
        plan = await self._plan(recipe, config)
        try:
            self.supervisor.status(recipe.name)
        except NotFound:
            await self.supervisor.adopt(plan)
        await self.supervisor.start(plan)

    async def wait_ready(self, name: str, timeout: float | None) -> None:
        await self.supervisor.wait_ready(name, timeout)

    async def stop(self, name: str, reason: str) -> None:
        with contextlib.suppress(NotFound):
            await self.supervisor.stop(name, reason)

    async def forget(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self.supervisor.remove(name)

    def is_live(self, name: str) -> bool:
        try:
            return self.supervisor.status(name).state.name in _LIVE
        except NotFound:
            return False

    # -- AgentControl (used by the local API) ---------------------------------------

    async def list_components(self) -> list[ComponentRecord]:
        return [r for r in self.store.components() if r.desired_version is not None]

    async def get_component(self, name: str) -> ComponentDetail:
        record = self.store.component(name)
        ready, uptime, health = False, None, None
        with contextlib.suppress(NotFound):
            status = self.supervisor.status(name)
            ready = status.ready
            if status.state.name in _LIVE and status.since is not None:
                uptime = time.monotonic() - status.since
            if status.health is not None:
                health = {"status": str(status.health)}
        return ComponentDetail(
            component=record,
            ready=ready,
            uptime=uptime,
            health=health,
            transitions=self.store.transitions(name, limit=20),
        )

    async def component_action(self, name: str, action: ComponentAction) -> ComponentRecord:
        record = self.store.component(name)
        if record.version is None:
            raise RequestError(f"component {name} is not installed", code="conflict")
        if action == "stop":
            self.store.upsert_component(name, run=False)
            await self.stop(name, "stopped by the operator")
        else:
            self.store.upsert_component(name, run=True)
            if action == "restart" and self.is_live(name):
                await self.supervisor.restart(name, "restarted by the operator")
            else:
                recipe = self.engine.load_recipe(name, record.version)
                if self.is_live(name):
                    raise RequestError(f"component {name} is already running", code="conflict")
                await self.start(recipe, record.config)
        return self.store.component(name)

    def component_log_path(self, name: str) -> Path:
        self.store.component(name)
        return self.layout.component_log(name)

    async def submit_deployment(self, request: DeploymentRequest) -> DeploymentRecord:
        return await self.engine.submit(
            request.document, request.recipes, artifacts_dir=request.artifacts_dir
        )

    async def list_deployments(self, limit: int = 100) -> list[DeploymentRecord]:
        return self.store.deployments(limit)

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        return self.store.deployment(deployment_id)

    async def cancel_deployment(self, deployment_id: str) -> DeploymentRecord:
        return await self.engine.cancel(deployment_id)

    async def rollback_deployment(self) -> DeploymentRecord:
        return await self.engine.rollback()

    async def list_artifacts(self) -> list[ArtifactInfo]:
        from keystone_edge.api.artifacts import artifact_infos

        assert self._cache is not None
        return artifact_infos(await self._cache.entries(), self._retention())

    async def gc_artifacts(self, dry_run: bool, quota_bytes: int | None = None) -> GcOutcome:
        from keystone_edge.api.artifacts import gc_outcome
        from keystone_edge.artifacts import collect_garbage

        assert self._cache is not None
        quota = int(self.config.artifacts.quota) if quota_bytes is None else quota_bytes
        report = await collect_garbage(
            self._cache,
            protected=set(self._retention().protected),
            quota_bytes=quota,
            dry_run=dry_run,
        )
        if not dry_run:
            self.events.publish(
                "artifact.gc", removed=len(report.removed), freed_bytes=report.freed_bytes
            )
        return gc_outcome(report)

    async def _collect_garbage(self) -> None:
        """After each deployment: keep the cache within its quota (never what is needed)."""
        try:
            outcome = await self.gc_artifacts(dry_run=False)
        except KeyStoneError as exc:
            log.warning("artifact garbage collection failed: %s", exc)
            return
        if outcome.removed:
            log.info("artifact GC freed %d bytes", outcome.freed_bytes)

    def _retention(self) -> Retention:
        """Which cached artifacts must stay: versions in use, the previous
        ``keep_versions`` of each component, and whatever a pending deployment needs."""
        from keystone_edge.artifacts import VersionArtifacts, retention

        in_use = {
            (r.name, v)
            for r in self.store.components()
            for v in (r.version, r.desired_version)
            if v is not None
        }
        versions = []
        paths = sorted(
            self.layout.components.glob("*/*/recipe.json"),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        recipes: dict[tuple[str, str], Recipe] = {}
        for path in paths:
            name, version = path.parent.parent.name, path.parent.name
            with contextlib.suppress(KeyStoneError):
                recipes[name, version] = self.engine.load_recipe(name, version)
        for (name, version), recipe in recipes.items():
            digests = frozenset(a.sha256 for a in recipe.artifacts if a.sha256)
            versions.append(
                VersionArtifacts(name, version, digests, in_use=(name, version) in in_use)
            )
        pending = self.store.deployments_with_status("queued", "running", "rolling_back")
        needed = {
            a.sha256
            for d in pending
            for name, version in d.components.items()
            if (name, version) in recipes
            for a in recipes[name, version].artifacts
            if a.sha256
        }
        return retention(
            versions, keep_versions=self.config.deployments.keep_versions, needed=needed
        )

    def events_since(self, since: int, limit: int = 1000) -> list[Event]:
        return self.store.events(since=since, limit=limit)

    def event_stream(self) -> EventStream:
        return self.events.stream()

    def health(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for record in self.store.components():
            if record.desired_version is not None:
                states[record.state] = states.get(record.state, 0) + 1
        return {
            "status": "stopping" if self.stopping.is_set() else "ok",
            "version": __version__,
            "uptime": round(time.monotonic() - self.started, 3),
            "device_id": self.config.agent.device_id,
            "components": states,
            # Controls each component's last start skipped (best effort); doctor lists them.
            "isolation_warnings": {
                s.name: list(s.isolation_warnings) for s in self.supervisor.statuses()
            },
        }

    async def readiness(self) -> Readiness:
        """``GET /readyz``: every check runs every time; ready only if all pass."""
        from keystone_edge.observe.loop import loop_lag

        lag = await loop_lag()
        checks = {
            "agent": ReadinessCheck(
                ok=not self.stopping.is_set(),
                detail="stopping" if self.stopping.is_set() else "running",
            ),
            "store": self._store_writable(),
            "event_loop": ReadinessCheck(
                ok=lag <= _MAX_LOOP_LAG,
                detail=f"callback ran after {lag * 1000:.1f} ms"
                + ("" if lag <= _MAX_LOOP_LAG else f" (limit {_MAX_LOOP_LAG * 1000:.0f} ms)"),
            ),
            "deployments": self._deployments_on_time(),
        }
        return Readiness(ready=all(c.ok for c in checks.values()), checks=checks)

    def _store_writable(self) -> ReadinessCheck:
        started = time.perf_counter()
        try:
            with self.store.transaction() as db:
                # Rewrites the newest event row unchanged: a real page write committed to
                # the WAL, so a read-only file, a full disk or a held lock shows here.
                db.execute("UPDATE events SET ts = ts WHERE id = (SELECT MAX(id) FROM events)")
        except KeyStoneError as exc:
            return ReadinessCheck(ok=False, detail=str(exc))
        elapsed = (time.perf_counter() - started) * 1000
        return ReadinessCheck(ok=True, detail=f"writable ({elapsed:.1f} ms)")

    def _deployments_on_time(self) -> ReadinessCheck:
        from keystone_edge.deploy.document import DeploymentSettings
        from keystone_edge.documents import Source, decode
        from keystone_edge.errors import DeploymentError

        running = self.store.deployments_with_status("running")
        if not running:
            return ReadinessCheck(ok=True, detail="none running")
        now = time.time()
        stuck: list[str] = []
        for record in running:
            if record.started_at is None:
                continue
            data = self.store.deployment_document(record.id).get("deployment", {})
            try:
                settings = decode(
                    data, DeploymentSettings, Source(name=record.id, data=data), DeploymentError
                )
                timeout = float(settings.timeout)
            except KeyStoneError:
                timeout = 0.0
            # As the engine does: a timeout of 0 means the agent's default.
            timeout = timeout or float(self.config.deployments.default_timeout)
            late = now - (record.started_at + timeout)
            if late > _STUCK_GRACE:
                stuck.append(f"{record.id} is {late:.0f} s past its deadline")
        if stuck:
            return ReadinessCheck(ok=False, detail="; ".join(stuck))
        return ReadinessCheck(ok=True, detail=f"{len(running)} running, within deadline")

    async def metrics(self) -> bytes:
        if self._metrics is None:
            raise NotFound(
                "metrics are disabled in the agent config",
                hint="set [metrics] enabled = true in agent.toml and restart the agent",
            )
        return self._metrics.render(await self._snapshot())

    async def _snapshot(self) -> Snapshot:
        """The state behind one scrape (the event-fed counters live in the tally)."""
        from keystone_edge.observe.loop import loop_lag
        from keystone_edge.observe.metrics import ComponentSample, Snapshot

        lag = await loop_lag()
        entries = await self._cache.entries() if self._cache is not None else []
        now = time.monotonic()
        samples = []
        for status in self.supervisor.statuses():
            live = status.state.name in _LIVE
            last = status.last_exit
            health = status.health
            samples.append(
                ComponentSample(
                    name=status.name,
                    version=status.version,
                    state=status.state.value,
                    pid=status.pid,
                    ready=status.ready,
                    uptime=now - status.since if live else None,
                    last_exit_code=last.code if last is not None else None,
                    last_exit_signal=last.signal if last is not None else None,
                    healthy=None
                    if health is None or health.value == "unknown"
                    else health.value == "healthy",
                )
            )
        logs = self._logs
        budget = logs.budget if logs is not None else None
        return Snapshot(
            components=samples,
            deployments_queued=len(self.store.deployments_with_status("queued")),
            deployments_running=len(self.store.deployments_with_status("running")),
            cache_bytes=sum(e.size for e in entries),
            cache_entries=len(entries),
            loop_lag=lag,
            log_drops=logs.drops() if logs is not None else {},
            log_disk_bytes=budget.used_bytes if budget is not None else None,
            log_disk_limit_bytes=budget.max_bytes if budget is not None else None,
        )


class _ReportedDownloads:
    """A network fetcher that reports each completed download as ``artifact.downloaded``.

    Only downloads reach a fetcher (cache hits and local copies do not), so the event's
    ``downloaded_bytes`` are bytes that came over the network; a download resumed after a
    restart is counted whole, once, when it completes.
    """

    def __init__(self, fetcher: ResumableFetcher, events: EventBus) -> None:
        self._fetcher = fetcher
        self._events = events

    @property
    def schemes(self) -> frozenset[str]:
        return self._fetcher.schemes

    async def fetch(
        self, uri: str, dest: Path, *, expected_sha256: str | None, expected_size: int | None
    ) -> FetchResult:
        result = await self._fetcher.fetch(
            uri, dest, expected_sha256=expected_sha256, expected_size=expected_size
        )
        return self._report(uri, result)

    async def fetch_resumable(
        self,
        uri: str,
        dest: Path,
        *,
        expected_sha256: str,
        expected_size: int | None,
        partial: Path,
        progress: ProgressCallback | None = None,
    ) -> FetchResult:
        result = await self._fetcher.fetch_resumable(
            uri,
            dest,
            expected_sha256=expected_sha256,
            expected_size=expected_size,
            partial=partial,
            progress=progress,
        )
        return self._report(uri, result)

    def _report(self, uri: str, result: FetchResult) -> FetchResult:
        from keystone_edge.artifacts.verify import public_uri

        self._events.publish(
            "artifact.downloaded",
            uri=public_uri(uri),
            sha256=result.sha256,
            downloaded_bytes=result.size,
        )
        return result


async def _first(event: Coroutine[Any, Any, Any], task: asyncio.Task[None]) -> None:
    """Wait for ``event``, unless ``task`` ends first (then its error propagates)."""
    waiter = asyncio.ensure_future(event)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()


def _layers(recipes: Mapping[str, Recipe]) -> list[list[str]]:
    """Topological layers of the given components (edges to components outside ignored)."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, recipe in recipes.items():
        sorter.add(name, *(d.name for d in recipe.dependencies if d.name in recipes))
    try:
        sorter.prepare()
    except graphlib.CycleError:
        return [sorted(recipes)]
    layers = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        layers.append(ready)
        sorter.done(*ready)
    return layers


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="keystone-agent", description="Run the KeyStone edge agent in the foreground."
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="state and runtime directory (default: /opt/keystone as root, "
        "else ~/.local/share/keystone)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="agent config (default: ROOT/etc/agent.toml)"
    )
    parser.add_argument("--log-level", default=None, help="override [agent] log_level")
    parser.add_argument("--version", action="version", version=f"keystone-agent {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    layout = Layout((args.root or default_root()).expanduser().resolve())
    try:
        config = load_agent_config(args.config or layout.config_file)
    except KeyStoneError as exc:
        print(f"keystone-agent: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(1)
    from keystone_edge.observe.logs import configure_logging

    try:
        logs = configure_logging(
            config.logging,
            level=args.log_level or config.agent.log_level,
            logs_dir=layout.logs,
            device_id=config.agent.device_id,
        )
    except (KeyStoneError, ValueError) as exc:
        print(f"keystone-agent: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(1)
    from keystone_edge.runners.process import install_child_watcher

    install_child_watcher()
    try:
        asyncio.run(Agent(layout, config, logs=logs).run())
    except KeyStoneError as exc:
        log.error("%s", exc)  # noqa: TRY400
        sys.exit(1)
    finally:
        logs.close()
