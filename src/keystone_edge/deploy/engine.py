"""The deployment engine: applies deployment documents to the device, one at a time.

Flow (design.md, "Deployments"): a submitted document is validated and resolved at once
(so a bad one is refused with a 4xx, and nothing changes), its recipes are stored in the
component store, and it is queued. A single worker applies queued deployments in order:

1. ``resolve`` against the component store and what is installed;
2. ``diff`` the plan against the device (add / update / reconfigure / restart / remove);
3. snapshot the previous version, config and run flag of every component it touches
   (durable, before anything changes: rollback and crash recovery read it);
4. per dependency layer, in parallel within a layer, for each touched component:
   ``fetch`` artifacts, ``install`` (only when the version changes), ``stop-old``,
   ``start-new``, ``ready``. A layer starts only when the previous one is ready, so
   dependents never start before their hard dependencies; a failure never advances
   to dependents;
5. ``remove`` components listed for removal (reverse order), then ``commit``.

Each step is a checkpoint: a row written (fsynced) when it starts and when it ends.
On failure, deadline expiry or cancellation, policy ``rollback`` restores every touched
component to its snapshot (stop the new ones in reverse order, then start the previous
versions and configs in dependency order); ``do_nothing`` leaves the device as it is.
If the agent dies mid-deployment, the next start finds the deployment ``running`` and
rolls it back from the snapshot (:meth:`DeploymentEngine.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from keystone_edge.deploy.diff import Change, Current, Desired, diff
from keystone_edge.deploy.document import DeploymentDocument
from keystone_edge.deploy.recovery import decide_recovery
from keystone_edge.errors import (
    DeploymentError,
    KeyStoneError,
    NotFound,
    RecipeError,
    RequestError,
)
from keystone_edge.layout import Layout
from keystone_edge.observe.events import EventBus
from keystone_edge.recipe.model import Recipe
from keystone_edge.store import ComponentRecord, DeploymentRecord, StateStore

__all__ = ["ComponentRuntime", "DeploymentEngine"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Stored beside the document (not part of the format): the operator's --artifacts directory.
_ARTIFACTS_DIR_KEY = "x-keystone-artifacts-dir"


@dataclass(frozen=True)
class _Prepared:
    """Everything needed to run one component version with one config."""

    recipe: Recipe
    config: dict[str, Any]
    overrides: dict[str, Any]
    digest: str


class ComponentRuntime(Protocol):
    """What the engine needs from the rest of the agent to run components.

    Implemented by the agent with the supervisor, the artifact cache and the recipe
    renderer; kept as one small seam so the engine's rules can be read on their own.
    """

    async def fetch(self, recipe: Recipe, search_dirs: list[Path]) -> None: ...

    async def install(self, recipe: Recipe, config: Mapping[str, Any]) -> None: ...

    async def start(self, recipe: Recipe, config: Mapping[str, Any]) -> None: ...

    async def wait_ready(self, name: str, timeout: float | None) -> None: ...

    async def stop(self, name: str, reason: str) -> None: ...

    async def forget(self, name: str) -> None: ...

    def is_live(self, name: str) -> bool: ...


class DeploymentEngine:
    def __init__(
        self,
        *,
        store: StateStore,
        events: EventBus,
        layout: Layout,
        runtime: ComponentRuntime,
        effective_config: Callable[[Recipe, Mapping[str, Any]], dict[str, Any]],
        default_timeout: float,
        rollback_ready_timeout: float = 120.0,
        pause_at: str | None = None,
        after_each: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._events = events
        self._layout = layout
        self._runtime = runtime
        self._effective_config = effective_config
        self._default_timeout = default_timeout
        self._rollback_ready_timeout = rollback_ready_timeout
        # Crash tests only: "before:STEP[:COMPONENT]" or "after:STEP[:COMPONENT]" makes the
        # engine stop dead at that checkpoint so a test can kill the agent there.
        self._pause_at = tuple(pause_at.split(":", 2)) if pause_at else None
        # Housekeeping after each deployment (the agent collects artifact garbage).
        self._after_each = after_each
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._current: tuple[str, asyncio.Task[None]] | None = None
        self._cancel_requested: set[str] = set()
        self._resume: list[str] = []  # interrupted deployments to apply again, first
        self._idle = asyncio.Event()
        self._idle.set()

    # -- submitting -------------------------------------------------------------------

    async def submit(
        self,
        document: Mapping[str, Any],
        recipes: Sequence[Mapping[str, Any]],
        *,
        artifacts_dir: str | None = None,
        source: str = "local",
        rollback_of: str | None = None,
    ) -> DeploymentRecord:
        """Validate, resolve and queue a deployment; nothing on the device changes yet.

        Anti-rollback: a document whose ``sequence`` is lower than that of the last
        deployment applied from the same ``source`` is refused, unless it is an explicit
        rollback (``rollback_of`` names the deployment being rolled back).
        """
        from keystone_edge.deploy.resolve import resolve
        from keystone_edge.recipe import recipe_from_builtins

        doc = _decode_document(dict(document), "deployment")
        submitted: list[Recipe] = []
        problems: list[RecipeError] = []
        for index, data in enumerate(recipes):
            try:
                submitted.append(recipe_from_builtins(dict(data), source=f"recipes[{index}]"))
            except RecipeError as exc:
                problems.append(exc)
        if problems:
            raise RecipeError("invalid recipes", problems=problems)
        if artifacts_dir is not None and not Path(artifacts_dir).is_dir():
            raise RequestError(f"artifacts_dir {artifacts_dir!r} is not a directory")
        sequence = doc.deployment.sequence
        if sequence is not None and rollback_of is None:
            applied = self._last_applied_sequence(source)
            if applied is not None and sequence < applied:
                raise RequestError(
                    f"deployment sequence {sequence} is older than the last one applied from "
                    f"source {source!r} ({applied}); refusing a rollback that was not asked for",
                    code="stale_deployment",
                    hint="use `keystonectl deploy rollback` to go back on purpose",
                )
        # Resolve now so a bad deployment is refused before anything is stored.
        resolve(doc, [*submitted, *self._stored_recipes()], installed=self._installed())
        deployment_id = doc.deployment.id or _new_id()
        if self._store.has_deployment(deployment_id):
            raise RequestError(
                f"a deployment with id {deployment_id!r} already exists", code="conflict"
            )
        for recipe in submitted:
            self._store_recipe(recipe)
        stored_document = msgspec.to_builtins(doc, enc_hook=str)
        stored_document.setdefault("deployment", {})["id"] = deployment_id
        if artifacts_dir is not None:
            stored_document[_ARTIFACTS_DIR_KEY] = artifacts_dir
        record = self._store.insert_deployment(
            deployment_id,
            document=stored_document,
            description=doc.deployment.description,
            failure_policy=doc.deployment.failure_policy,
            source=source,
            sequence=doc.deployment.sequence,
        )
        self._events.publish("deployment.queued", deployment_id=deployment_id)
        self._idle.clear()
        self._queue.put_nowait(deployment_id)
        return record

    async def rollback(self) -> DeploymentRecord:
        """Redeploy the successful deployment before the last successful one."""
        succeeded = [d for d in self._store.deployments(limit=1000) if d.status == "succeeded"]
        if len(succeeded) < 2:
            raise RequestError(
                "there is no earlier successful deployment to roll back to", code="conflict"
            )
        current, previous = succeeded[0], succeeded[1]
        document = self._store.deployment_document(previous.id)
        artifacts_dir = document.pop(_ARTIFACTS_DIR_KEY, None)
        settings = document.setdefault("deployment", {})
        settings["id"] = _new_id()
        settings["description"] = f"rollback of {current.id} to {previous.id}"
        # Components the current deployment added that the previous one did not have go.
        settings["remove"] = sorted(
            (set(current.components) - set(previous.components)) | set(settings.get("remove", []))
        )
        return await self.submit(
            document, [], artifacts_dir=artifacts_dir, source=previous.source,
            rollback_of=current.id,
        )  # fmt: skip

    def _last_applied_sequence(self, source: str) -> int | None:
        sequences = [
            d.sequence
            for d in self._store.deployments(limit=10_000)
            if d.source == source and d.status == "succeeded" and d.sequence is not None
        ]
        return max(sequences, default=None)

    async def cancel(self, deployment_id: str) -> DeploymentRecord:
        record = self._store.deployment(deployment_id)
        if record.status == "queued":
            self._store.update_deployment(
                deployment_id, status="cancelled", finished_at=time.time(), error="cancelled"
            )
            self._events.publish(
                "deployment.done", deployment_id=deployment_id, status="cancelled", error=None
            )
        elif record.status == "running" and self._current and self._current[0] == deployment_id:
            self._cancel_requested.add(deployment_id)
            self._current[1].cancel()
        else:
            raise RequestError(
                f"deployment {deployment_id} is {record.status}; only queued or running "
                "deployments can be cancelled",
                code="conflict",
            )
        return self._store.deployment(deployment_id)

    async def wait_idle(self) -> None:
        """Return once no deployment is queued or running (for tests and shutdown)."""
        await self._idle.wait()

    # -- the worker -------------------------------------------------------------------

    async def run(self) -> None:
        """Apply queued deployments one at a time, forever (cancel to stop)."""
        while True:
            if self._queue.empty():
                self._idle.set()
            deployment_id = await self._queue.get()
            record = self._store.deployment(deployment_id)
            if record.status != "queued":
                continue
            task = asyncio.current_task()
            assert task is not None
            apply = asyncio.ensure_future(self._apply(deployment_id))
            self._current = (deployment_id, apply)
            try:
                await asyncio.shield(apply)
                if self._after_each is not None:
                    await self._after_each()
            except asyncio.CancelledError:
                if task.cancelling():
                    # The agent is stopping: leave the deployment `running`; the next start
                    # rolls it back from its snapshot.
                    apply.cancel()
                    with contextlib.suppress(BaseException):
                        await apply
                    raise
            finally:
                self._current = None

    def requeue_pending(self) -> None:
        """At start-up: queue again the deployments that were waiting, resumed ones first."""
        pending = [r.id for r in self._store.deployments_with_status("queued")]
        for deployment_id in [*self._resume, *(p for p in pending if p not in self._resume)]:
            self._idle.clear()
            self._queue.put_nowait(deployment_id)
        self._resume.clear()

    async def recover(self) -> list[str]:
        """At start-up: finish, roll back or resume deployments a stopped agent left
        unfinished (see :mod:`.recovery`). Returns their ids."""
        recovered = []
        for record in self._store.deployments_with_status("running", "rolling_back"):
            document = self._store.deployment_document(record.id)
            document.pop(_ARTIFACTS_DIR_KEY, None)
            timeout = float(_decode_document(document, record.id).deployment.timeout)
            action, reason = decide_recovery(
                record, self._store.steps(record.id), timeout=timeout, now=time.time()
            )
            log.warning("deployment %s: %s", record.id, reason)
            self._events.publish(
                "deployment.recovered", deployment_id=record.id, action=action, reason=reason
            )
            if action == "succeeded":
                self._finish(record.id, "succeeded", None)
            elif action == "rollback":
                self._store.update_deployment(record.id, status="rolling_back", error=reason)
                await self._rollback(record.id, reason)
                self._finish(record.id, "rolled_back", reason)
            elif action == "fail":
                self._finish(record.id, "failed", reason)
            else:
                self._store.update_deployment(record.id, status="queued")
                self._resume.append(record.id)
            recovered.append(record.id)
        return recovered

    async def _apply(self, deployment_id: str) -> None:
        from keystone_edge.deploy.resolve import resolve

        document = self._store.deployment_document(deployment_id)
        artifacts_dir = document.pop(_ARTIFACTS_DIR_KEY, None)
        doc = _decode_document(document, deployment_id)
        search_dirs = [Path(artifacts_dir)] if artifacts_dir else []
        timeout = float(doc.deployment.timeout) or self._default_timeout
        record = self._store.deployment(deployment_id)
        started_at = record.started_at if record.started_at is not None else time.time()
        # A resumed deployment keeps the deadline it was given when it first started.
        timeout = max(0.0, started_at + timeout - time.time())
        self._store.update_deployment(deployment_id, status="running", started_at=started_at)
        self._events.publish("deployment.started", deployment_id=deployment_id)
        try:
            async with asyncio.timeout(timeout):
                plan = await self._step(
                    deployment_id,
                    "resolve",
                    None,
                    lambda: _sync(
                        resolve, doc, self._stored_recipes(), installed=self._installed()
                    ),
                )
                prepared = {
                    name: self._prepare(name, recipe, doc)
                    for name, recipe in plan.components.items()
                }
                current = {r.name: self._current_of(r) for r in self._store.components()}
                changes = diff(
                    {n: Desired(p.recipe.version, p.config, p.digest) for n, p in prepared.items()},
                    current,
                    plan.removals,
                )
                touched = [c for c in changes.values() if c.touches]
                self._store.update_deployment(
                    deployment_id,
                    plan={
                        "components": {n: p.recipe.version for n, p in prepared.items()},
                        "removals": list(plan.removals),
                        "layers": plan.layers,
                        "changes": {c.name: c.kind for c in changes.values()},
                    },
                    snapshot=self._snapshot([c.name for c in touched]),
                )
                for layer in plan.layers:
                    work = [changes[n] for n in layer if changes[n].touches]
                    if work:
                        async with asyncio.TaskGroup() as group:
                            for change in work:
                                group.create_task(
                                    self._apply_change(
                                        deployment_id, change, prepared[change.name], search_dirs
                                    )
                                )
                for name in reversed(plan.removals):
                    await self._step(deployment_id, "remove", name, partial(self._remove, name))
                await self._step(deployment_id, "commit", None, lambda: _sync(lambda: None))
        except asyncio.CancelledError:
            if deployment_id not in self._cancel_requested:
                raise
            self._cancel_requested.discard(deployment_id)
            await self._fail(deployment_id, doc, "cancelled by the operator", cancelled=True)
            return
        except TimeoutError:
            await self._fail(deployment_id, doc, f"deadline of {doc.deployment.timeout} exceeded")
            return
        except (KeyStoneError, ExceptionGroup) as exc:
            await self._fail(deployment_id, doc, _describe(exc))
            return
        except Exception as exc:
            log.exception("deployment %s failed unexpectedly", deployment_id)
            await self._fail(deployment_id, doc, f"internal error: {exc!r}")
            return
        self._finish(deployment_id, "succeeded", None)

    async def _apply_change(
        self, deployment_id: str, change: Change, prepared: _Prepared, search_dirs: list[Path]
    ) -> None:
        name = change.name
        recipe, config = prepared.recipe, prepared.config
        self._store.upsert_component(name, deployment_id=deployment_id)
        if change.installs:
            # Download and install while the old version still runs: no downtime for them,
            # and a failed install leaves the old version untouched.
            await self._step(
                deployment_id, "fetch", name, lambda: self._runtime.fetch(recipe, search_dirs)
            )
            await self._step(
                deployment_id, "install", name, lambda: self._runtime.install(recipe, config)
            )
        if change.kind in ("update", "reconfigure") and self._runtime.is_live(name):
            await self._step(
                deployment_id,
                "stop-old",
                name,
                lambda: self._runtime.stop(name, f"deployment {deployment_id}"),
            )
        self._store.upsert_component(
            name,
            desired_version=recipe.version,
            version=recipe.version,
            config=config,
            overrides=prepared.overrides,
            run=True,
        )
        await self._step(
            deployment_id, "start-new", name, lambda: self._runtime.start(recipe, config)
        )
        await self._step(deployment_id, "ready", name, lambda: self._runtime.wait_ready(name, None))

    async def _remove(self, name: str) -> None:
        await self._runtime.stop(name, "removed by deployment")
        await self._runtime.forget(name)
        self._store.delete_component(name)

    # -- failure and rollback ---------------------------------------------------------

    async def _fail(
        self, deployment_id: str, doc: DeploymentDocument, error: str, *, cancelled: bool = False
    ) -> None:
        log.warning("deployment %s failed: %s", deployment_id, error)
        if doc.deployment.failure_policy == "rollback" or cancelled:
            self._store.update_deployment(deployment_id, status="rolling_back", error=error)
            await self._rollback(deployment_id, error)
            status = "cancelled" if cancelled else "rolled_back"
        else:
            status = "failed"
        self._finish(deployment_id, status, error)

    async def _rollback(self, deployment_id: str, error: str) -> None:
        """Restore every touched component to its snapshot. Best effort per component:
        one that cannot be restored is reported, the others are still restored."""
        snapshot = self._store.deployment_snapshot(deployment_id)
        plan_layers: list[list[str]] = self._store.deployment_plan(deployment_id).get("layers", [])
        order = [n for layer in plan_layers for n in layer if n in snapshot]
        order += sorted(n for n in snapshot if n not in order)
        # A component the deployment never got to change (e.g. its new version failed to
        # install while the old one kept running) is left alone: no needless restart.
        order = [n for n in order if not self._untouched(n, snapshot[n])]
        self._events.publish("deployment.rollback", deployment_id=deployment_id, error=error)
        for name in reversed(order):
            if self._runtime.is_live(name):
                await self._rollback_step(
                    deployment_id,
                    "rollback-stop",
                    name,
                    partial(self._runtime.stop, name, "rollback"),
                )
        for name in order:
            before = snapshot[name]
            if before["version"] is None:
                await self._rollback_step(
                    deployment_id, "rollback-remove", name, partial(self._forget, name)
                )
                continue
            await self._rollback_step(
                deployment_id,
                "rollback-restore",
                name,
                partial(self._restore, name, before),
            )

    def _untouched(self, name: str, before: Mapping[str, Any]) -> bool:
        now = self._store.find_component(name)
        if before["version"] is None or now is None:
            return False
        return (
            now.version == before["version"]
            and now.config == before["config"]
            and now.run == before["run"]
            and (self._runtime.is_live(name) == bool(before["run"]))
        )

    async def _forget(self, name: str) -> None:
        await self._runtime.forget(name)
        self._store.delete_component(name)

    async def _restore(self, name: str, before: Mapping[str, Any]) -> None:
        recipe = self._load_recipe(name, before["version"])
        config = dict(before["config"])
        record = self._store.find_component(name)
        if record is None or record.version != before["version"]:
            await self._runtime.fetch(recipe, [])
            await self._runtime.install(recipe, config)
        self._store.upsert_component(
            name,
            desired_version=before["desired_version"],
            version=before["version"],
            config=config,
            overrides=before["overrides"],
            run=before["run"],
            deployment_id=before["deployment_id"],
        )
        if before["run"]:
            await self._runtime.start(recipe, config)
            await self._runtime.wait_ready(name, self._rollback_ready_timeout)

    async def _rollback_step(
        self, deployment_id: str, step: str, name: str, action: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await self._step(deployment_id, step, name, action)
        except KeyStoneError as exc:
            log.error("rollback of %s failed at %s: %s", name, step, exc)  # noqa: TRY400

    # -- helpers ----------------------------------------------------------------------

    async def _step(
        self,
        deployment_id: str,
        step: str,
        component: str | None,
        action: Callable[[], Awaitable[T]],
    ) -> T:
        seq = self._store.begin_step(deployment_id, step, component)
        await self._maybe_pause("before", step, component)
        started = time.monotonic()
        self._events.publish(
            "deployment.step",
            deployment_id=deployment_id,
            step=step,
            component=component,
            status="running",
        )
        try:
            result = await action()
        except BaseException as exc:
            message = "cancelled" if isinstance(exc, asyncio.CancelledError) else _describe(exc)
            self._store.end_step(deployment_id, seq, status="failed", error=message)
            self._events.publish(
                "deployment.step",
                deployment_id=deployment_id,
                step=step,
                component=component,
                status="failed",
                error=message,
                duration=time.monotonic() - started,
            )
            raise
        self._store.end_step(deployment_id, seq)
        self._events.publish(
            "deployment.step",
            deployment_id=deployment_id,
            step=step,
            component=component,
            status="done",
            duration=time.monotonic() - started,
        )
        await self._maybe_pause("after", step, component)
        return result

    async def _maybe_pause(self, when: str, step: str, component: str | None) -> None:
        hook = self._pause_at
        if hook is None or hook[:2] != (when, step):
            return
        if len(hook) == 3 and hook[2] != component:
            return
        log.warning("test hook: pausing %s step %s of %s", when, step, component)
        self._events.publish("test.paused", when=when, step=step, component=component)
        await asyncio.Event().wait()

    def _finish(self, deployment_id: str, status: str, error: str | None) -> None:
        self._store.update_deployment(
            deployment_id, status=status, finished_at=time.time(), error=error
        )
        self._events.publish(
            "deployment.done", deployment_id=deployment_id, status=status, error=error
        )

    def _prepare(self, name: str, recipe: Recipe, doc: DeploymentDocument) -> _Prepared:
        request = doc.components.get(name)
        record = self._store.find_component(name)
        if request is not None:
            overrides = dict(request.config)
        elif record is not None:
            # A dependency pulled in by the plan keeps the overrides it was deployed with.
            overrides = record.overrides
        else:
            overrides = {}
        config = self._effective_config(recipe, overrides)
        return _Prepared(recipe, config, overrides, _digest(recipe))

    def _current_of(self, record: ComponentRecord) -> Current:
        digest = None
        if record.version is not None:
            with contextlib.suppress(KeyStoneError, OSError):
                digest = _digest(self._load_recipe(record.name, record.version))
        return Current(record.version, record.config, digest, record.run, record.state)

    def _snapshot(self, names: list[str]) -> dict[str, Any]:
        snapshot: dict[str, Any] = {}
        for name in names:
            r = self._store.find_component(name)
            if r is not None:
                snapshot[name] = {
                    "version": r.version,
                    "desired_version": r.desired_version,
                    "config": r.config,
                    "overrides": r.overrides,
                    "run": r.run,
                    "deployment_id": r.deployment_id,
                }
            else:
                snapshot[name] = {"version": None}
        return snapshot

    def _installed(self) -> dict[str, str]:
        return {
            r.name: r.desired_version
            for r in self._store.components()
            if r.desired_version is not None
        }

    def _store_recipe(self, recipe: Recipe) -> None:
        from keystone_edge.recipe import recipe_to_builtins

        path = self._layout.component_recipe(recipe.name, recipe.version)
        data = msgspec.json.format(msgspec.json.encode(recipe_to_builtins(recipe)), indent=2)
        if path.exists() and path.read_bytes() == data:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    def _load_recipe(self, name: str, version: str) -> Recipe:
        from keystone_edge.recipe import recipe_from_builtins

        path = self._layout.component_recipe(name, version)
        try:
            data = msgspec.json.decode(path.read_bytes())
        except (OSError, msgspec.DecodeError) as exc:
            raise NotFound(f"no stored recipe for {name}@{version} ({path}: {exc})") from exc
        return recipe_from_builtins(data, source=str(path))

    def load_recipe(self, name: str, version: str) -> Recipe:
        return self._load_recipe(name, version)

    def _stored_recipes(self) -> list[Recipe]:
        recipes = []
        root = self._layout.components
        if root.is_dir():
            for path in sorted(root.glob("*/*/recipe.json")):
                try:
                    recipes.append(self._load_recipe(path.parent.parent.name, path.parent.name))
                except KeyStoneError as exc:
                    log.warning("ignoring stored recipe %s: %s", path, exc)
        return recipes


async def _sync(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return func(*args, **kwargs)


def _decode_document(data: dict[str, Any], name: str) -> DeploymentDocument:
    from keystone_edge.documents import Source, decode

    return decode(data, DeploymentDocument, Source(name=name, data=data), DeploymentError)


def _digest(recipe: Recipe) -> str:
    from keystone_edge.recipe import recipe_to_builtins

    return hashlib.sha256(msgspec.json.encode(recipe_to_builtins(recipe))).hexdigest()


def _new_id() -> str:
    return time.strftime("d-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, KeyStoneError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
