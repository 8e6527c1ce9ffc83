"""A real API server for tests: uvicorn on a Unix socket, in a thread with its own loop.

:class:`FakeAgent` implements :class:`AgentControl` over a real :class:`StateStore` file
and a real :class:`EventBus` (every event persisted before streams see it, as in the
agent). It stands in for the supervisor and the deployment engine only: a deployment
runs a fixed list of steps per component, and a component whose name contains ``bad``
fails its install step. The lead's end-to-end tests run the real agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpcore
import msgspec
from starlette.routing import BaseRoute

from keystone_edge.api.artifacts import ArtifactInfo, GcOutcome, artifact_infos, gc_outcome
from keystone_edge.api.control import (
    ComponentAction,
    ComponentDetail,
    DeploymentRequest,
    Readiness,
    ReadinessCheck,
)
from keystone_edge.api.server import ApiLimits, serve
from keystone_edge.artifacts import ArtifactCache, LocalFetcher, collect_garbage, retention
from keystone_edge.errors import (
    DeploymentError,
    InvalidTransition,
    RecipeError,
    RequestError,
    ResolutionError,
)
from keystone_edge.observe.events import Event, EventBus, EventStream
from keystone_edge.store import ComponentRecord, DeploymentRecord, StateStore

T = TypeVar("T")

STEPS = ("fetch", "install", "start-new", "ready")
TERMINAL = {"succeeded", "failed", "rolled_back", "cancelled"}


class FakeAgent:
    """AgentControl over a real store and bus; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.store = StateStore(root / "state" / "keystone.db")
        self.bus = EventBus(first_id=self.store.last_event_id() + 1)
        self.bus.subscribe(self.store.append_event)
        self.log_dir = root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.explode: set[str] = set()  # method names that raise an unexpected error
        self.step_gate: asyncio.Event | None = None  # when set, each step waits for it
        self.stream_maxsize = 1000
        # Called around the store read in events_since, to publish "in between" events.
        self.before_backlog: Callable[[], object] | None = None
        self.after_backlog: Callable[[], object] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.cache = ArtifactCache(root / "runtime" / "artifacts", [LocalFetcher()])

    # test helpers (run them in the server's loop: ServerThread.call)

    def add_component(self, name: str, version: str = "1.0.0", state: str = "RUNNING") -> None:
        self.store.upsert_component(
            name,
            desired_version=version,
            version=version,
            state="NONE",
            config={"message": "hi"},
        )
        self.transition(name, state, "deployed", pid=4242 if state == "RUNNING" else None)

    def transition(self, name: str, to_state: str, reason: str, **fields: Any) -> None:
        before = self.store.component(name).state
        self.store.record_transition(name, before, to_state, reason, **fields)
        self.bus.publish(
            "component.state", component=name, from_state=before, to_state=to_state, reason=reason
        )

    def _check(self, method: str) -> None:
        if method in self.explode:
            raise RuntimeError(f"{method} exploded on purpose")

    # AgentControl

    async def list_components(self) -> list[ComponentRecord]:
        self._check("list_components")
        return self.store.components()

    async def get_component(self, name: str) -> ComponentDetail:
        self._check("get_component")
        record = self.store.component(name)
        running = record.state == "RUNNING"
        return ComponentDetail(
            component=record,
            ready=running,
            uptime=12.5 if running else None,
            health={"ok": True, "detail": "200 OK", "latency": 0.003, "failures": 0}
            if running
            else None,
            transitions=self.store.transitions(name),
        )

    async def component_action(self, name: str, action: ComponentAction) -> ComponentRecord:
        self._check("component_action")
        record = self.store.component(name)
        if action == "stop":
            if record.state == "STOPPED":
                raise InvalidTransition(name, record.state, "stop")
            self.store.upsert_component(name, run=False)
            self.transition(name, "STOPPED", "stopped over the API", pid=None)
        elif action == "start":
            self.store.upsert_component(name, run=True)
            self.transition(name, "RUNNING", "started over the API", pid=5151)
        else:
            self.transition(
                name, "RUNNING", "restarted over the API", pid=6161, restarts=record.restarts + 1
            )
        return self.store.component(name)

    def component_log_path(self, name: str) -> Path:
        self.store.component(name)
        return self.log_dir / f"{name}.log"

    async def submit_deployment(self, request: DeploymentRequest) -> DeploymentRecord:
        self._check("submit_deployment")
        document = request.document
        components = document.get("components")
        if not isinstance(components, dict) or not components:
            raise DeploymentError(
                "a deployment needs at least one component", file="<request>", key="components"
            )
        available = {(r.get("name"), r.get("version")) for r in _recipe_ids(request.recipes)}
        plan: dict[str, str] = {}
        for name, wanted in components.items():
            version = str(wanted.get("version", "")) if isinstance(wanted, dict) else ""
            if (name, version) not in available:
                raise ResolutionError(
                    f"no recipe for {name} {version}", chain=["<deployment>", f"{name} {version}"]
                )
            plan[name] = version
        settings = document.get("deployment", {})
        deployment_id = settings.get("id") or f"dep-{next(self._ids)}"
        record = self.store.insert_deployment(
            deployment_id,
            document=document,
            description=settings.get("description", ""),
            failure_policy=settings.get("failure_policy", "rollback"),
        )
        self.store.update_deployment(deployment_id, plan={"components": plan})
        self.bus.publish("deployment.queued", deployment_id=deployment_id)
        task = asyncio.create_task(self._run(deployment_id, plan))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return self.store.deployment(record.id)

    async def _run(self, deployment_id: str, plan: dict[str, str]) -> None:
        store, bus = self.store, self.bus
        if self.step_gate is not None:
            await self.step_gate.wait()
        if store.deployment(deployment_id).status != "queued":
            return
        store.update_deployment(deployment_id, status="running", started_at=time.time())
        bus.publish("deployment.started", deployment_id=deployment_id)
        for name in plan:
            for step in STEPS:
                seq = store.begin_step(deployment_id, step, name)
                bus.publish(
                    "deployment.step",
                    deployment_id=deployment_id,
                    step=step,
                    component=name,
                    status="running",
                )
                if self.step_gate is not None:
                    await self.step_gate.wait()
                await asyncio.sleep(0)
                if "bad" in name and step == "install":
                    error = "install script exited with code 3"
                    store.end_step(deployment_id, seq, status="failed", error=error)
                    bus.publish(
                        "deployment.step",
                        deployment_id=deployment_id,
                        step=step,
                        component=name,
                        status="failed",
                        error=error,
                    )
                    self._finish(deployment_id, "rolled_back", f"{name}: {error}")
                    return
                store.end_step(deployment_id, seq)
                bus.publish(
                    "deployment.step",
                    deployment_id=deployment_id,
                    step=step,
                    component=name,
                    status="done",
                )
        self._finish(deployment_id, "succeeded", None)

    def _finish(self, deployment_id: str, status: str, error: str | None) -> None:
        self.store.update_deployment(
            deployment_id, status=status, finished_at=time.time(), error=error
        )
        self.bus.publish("deployment.done", deployment_id=deployment_id, status=status)

    async def list_deployments(self, limit: int = 100) -> list[DeploymentRecord]:
        return self.store.deployments(limit)

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        return self.store.deployment(deployment_id)

    async def rollback_deployment(self) -> DeploymentRecord:
        succeeded = [d for d in self.store.deployments() if d.status == "succeeded"]
        if len(succeeded) < 2:
            raise RequestError(
                "there is no earlier successful deployment to roll back to", code="conflict"
            )
        return self.store.insert_deployment(
            f"rollback-{succeeded[1].id}",
            document=self.store.deployment_document(succeeded[1].id),
            description=f"rollback to {succeeded[1].id}",
            failure_policy="rollback",
        )

    async def list_artifacts(self) -> list[ArtifactInfo]:
        return artifact_infos(await self.cache.entries(), retention([], keep_versions=2))

    async def gc_artifacts(self, dry_run: bool, quota_bytes: int | None = None) -> GcOutcome:
        report = await collect_garbage(
            self.cache, protected=set(), quota_bytes=quota_bytes or 0, dry_run=dry_run
        )
        return gc_outcome(report)

    async def cancel_deployment(self, deployment_id: str) -> DeploymentRecord:
        record = self.store.deployment(deployment_id)
        if record.status in TERMINAL:
            raise RequestError(
                f"deployment {deployment_id} is {record.status}; only queued or running "
                "deployments can be cancelled",
                code="conflict",
            )
        self._finish(deployment_id, "cancelled", "cancelled")
        return self.store.deployment(deployment_id)

    def events_since(self, since: int, limit: int = 1000) -> list[Event]:
        before, self.before_backlog = self.before_backlog, None
        if before is not None:
            before()
        events = self.store.events(since=since, limit=limit)
        after, self.after_backlog = self.after_backlog, None
        if after is not None:
            after()
        return events

    def event_stream(self) -> EventStream:
        return self.bus.stream(self.stream_maxsize)

    def health(self) -> dict[str, Any]:
        self._check("health")
        states: dict[str, int] = {}
        for record in self.store.components():
            states[record.state] = states.get(record.state, 0) + 1
        return {"status": "ok", "version": "0.1.0", "uptime": 1.5, "components": states}

    async def readiness(self) -> Readiness:
        self._check("readiness")
        return Readiness(ready=True, checks={"store": ReadinessCheck(ok=True, detail="writable")})

    async def metrics(self) -> bytes:
        self._check("metrics")
        return b"# TYPE keystone_fake gauge\nkeystone_fake 1\n"


def _recipe_ids(recipes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for recipe in recipes:
        metadata = recipe.get("metadata")
        if not isinstance(metadata, dict):
            raise RecipeError(
                "missing required key",
                file="<request>",
                key="metadata",
                problems=[RecipeError("missing required key", file="<request>", key="metadata")],
            )
        yield metadata


class ServerThread:
    """``serve()`` on a real socket, in a daemon thread running its own event loop."""

    def __init__(
        self,
        root: Path,
        socket_path: Path,
        limits: ApiLimits | None = None,
        extra_routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.root = root
        self.socket_path = socket_path
        self.limits = limits or ApiLimits()
        self.extra_routes = extra_routes
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="api-server", daemon=True)
        self.loop: asyncio.AbstractEventLoop
        self.agent: FakeAgent
        self._shutdown: asyncio.Event

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("the API server did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread by start()/stop()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.agent = FakeAgent(self.root)
        self._shutdown = asyncio.Event()
        ready = asyncio.Event()
        server = asyncio.create_task(
            serve(
                self.agent,
                self.socket_path,
                shutdown=self._shutdown,
                ready=ready,
                limits=self.limits,
                extra_routes=self.extra_routes,
            )
        )
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({server, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if server.done():
            server.result()  # raises what serve() raised
        self._started.set()
        try:
            await server
        finally:
            for task in list(self.agent.tasks):
                task.cancel()
            self.agent.store.close()

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` in the server's loop thread (the store and bus live there)."""

        async def run() -> T:
            return func(*args, **kwargs)

        return self.run(run())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def publish(self, type: str, **payload: Any) -> Event:
        return self.call(self.agent.bus.publish, type, **payload)

    def stop(self) -> None:
        """Set the shutdown event and wait for serve() to return."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown.set)
            self._thread.join(15)
            assert not self._thread.is_alive(), "serve() did not return after shutdown"
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def short_tempdir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="ks-") as name:
        yield Path(name)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of an error body (asserting the shape on the way)."""
        body = self.json()
        assert set(body) == {"error"}, body
        assert {"code", "message", "details"} <= set(body["error"]), body
        error: dict[str, Any] = body["error"]
        return error


class Http:
    """Raw HTTP over the Unix socket, for asserting exactly what the server sends."""

    def __init__(self, socket_path: Path) -> None:
        self.pool = httpcore.ConnectionPool(uds=str(socket_path))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str | bytes, str | bytes] | None = None,
    ) -> Reply:
        response = self.pool.request(
            method,
            "http://keystone" + path,
            headers=headers or {},
            content=body,
            extensions={"timeout": {"connect": 5, "read": 10, "write": 10, "pool": 5}},
        )
        return Reply(
            response.status,
            {k.decode().lower(): v.decode() for k, v in response.headers},
            response.content,
        )

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Reply:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self.pool.close()


def recipe(name: str, version: str = "1.0.0") -> dict[str, Any]:
    """Enough of a canonical recipe for the fake agent to resolve against."""
    return {"metadata": {"name": name, "version": version}}


def deployment_body(*names: str, deployment_id: str | None = None) -> bytes:
    document: dict[str, Any] = {"components": {n: {"version": "1.0.0"} for n in names}}
    if deployment_id is not None:
        document["deployment"] = {"id": deployment_id}
    request = DeploymentRequest(document=document, recipes=[recipe(n) for n in names])
    return msgspec.json.encode(request)
