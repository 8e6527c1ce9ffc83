"""What the local API can ask of the agent: the one interface between ``api/`` and the rest.

The API server depends only on this protocol; the agent implements it by wiring the state
store, the supervisor and the deployment engine. Errors are raised as ``KeyStoneError``
subclasses (``NotFound``, ``RequestError``, ``RecipeError``, ``DeploymentError``,
``ResolutionError``...) and the server maps each ``code`` to an HTTP status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

from keystone_edge.api.artifacts import ArtifactInfo, GcOutcome
from keystone_edge.observe.events import Event, EventStream
from keystone_edge.store.records import ComponentRecord, DeploymentRecord, TransitionRecord

__all__ = [
    "AgentControl",
    "ComponentAction",
    "ComponentDetail",
    "DeploymentRequest",
    "Readiness",
    "ReadinessCheck",
]

ComponentAction = Literal["restart", "stop", "start"]


class DeploymentRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /v1/deployments``.

    ``document`` is the deployment document as plain data (what ``deployment.toml``
    parses to); ``recipes`` are canonical recipes (``recipe_to_builtins``), the set the
    agent resolves against and stores in its component store. ``artifacts_dir`` is an
    optional local directory searched for artifacts by file name.
    """

    document: dict[str, Any]
    recipes: list[dict[str, Any]] = msgspec.field(default_factory=list)
    artifacts_dir: str | None = None


class ComponentDetail(msgspec.Struct, kw_only=True):
    """``GET /v1/components/{name}``: the record plus live details."""

    component: ComponentRecord
    ready: bool
    uptime: float | None  # seconds in the current run, None when not running
    health: dict[str, Any] | None  # last probe: ok, detail, latency, failures
    transitions: list[TransitionRecord]


class ReadinessCheck(msgspec.Struct, kw_only=True):
    ok: bool
    detail: str


class Readiness(msgspec.Struct, kw_only=True):
    """``GET /readyz``: 200 when ``ready``, else 503; every check says why."""

    ready: bool
    checks: dict[str, ReadinessCheck]  # store, event_loop, deployments


class AgentControl(Protocol):
    async def list_components(self) -> list[ComponentRecord]: ...

    async def get_component(self, name: str) -> ComponentDetail: ...

    async def component_action(self, name: str, action: ComponentAction) -> ComponentRecord: ...

    def component_log_path(self, name: str) -> Path:
        """The component's current log file (raises NotFound for unknown components)."""
        ...

    async def submit_deployment(self, request: DeploymentRequest) -> DeploymentRecord:
        """Validate, resolve and queue a deployment; returns its record (status queued)."""
        ...

    async def list_deployments(self, limit: int = 100) -> list[DeploymentRecord]: ...

    async def get_deployment(self, deployment_id: str) -> DeploymentRecord: ...

    async def cancel_deployment(self, deployment_id: str) -> DeploymentRecord: ...

    async def rollback_deployment(self) -> DeploymentRecord:
        """Queue the successful deployment before the last successful one again."""
        ...

    async def list_artifacts(self) -> list[ArtifactInfo]:
        """The artifact cache: every entry, its size, last use and who references it."""
        ...

    async def gc_artifacts(self, dry_run: bool, quota_bytes: int | None = None) -> GcOutcome:
        """Evict unprotected cache entries, least recently used first, down to the quota."""
        ...

    def events_since(self, since: int, limit: int = 1000) -> list[Event]: ...

    def event_stream(self) -> EventStream: ...

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` body: status, version, uptime, components by state."""
        ...

    async def readiness(self) -> Readiness:
        """``GET /readyz``: store writable, event loop responsive, no deployment stuck."""
        ...

    async def metrics(self) -> bytes:
        """``GET /metrics``: Prometheus text (raises NotFound when metrics are disabled)."""
        ...
