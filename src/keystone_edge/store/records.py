"""Rows of the state store, as the API and CLI show them."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "ComponentRecord",
    "DeploymentRecord",
    "DeploymentStatus",
    "StepRecord",
    "StepStatus",
    "TransitionRecord",
]

DeploymentStatus = Literal[
    "queued", "running", "succeeded", "failed", "rolling_back", "rolled_back", "cancelled"
]
StepStatus = Literal["running", "done", "failed", "skipped"]


class ComponentRecord(msgspec.Struct, kw_only=True):
    """One component: what the device should run and what it runs now."""

    name: str
    desired_version: str | None  # None once removed from the desired state
    version: str | None  # installed version (None before the first install)
    run: bool  # desired to be running (False after `component stop`)
    state: str  # lifecycle state name
    config: dict[str, Any] = msgspec.field(default_factory=dict)  # effective config
    # The deployment-level overrides that produced ``config`` (kept for later deployments).
    overrides: dict[str, Any] = msgspec.field(default_factory=dict)
    pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_signal: int | None = None
    reason: str = ""
    deployment_id: str | None = None
    updated_at: float = 0.0  # wall clock, for humans


class TransitionRecord(msgspec.Struct, kw_only=True):
    id: int
    component: str
    from_state: str
    to_state: str
    reason: str
    at: float


class StepRecord(msgspec.Struct, kw_only=True):
    seq: int
    name: str  # resolve, fetch, verify, install, stop-old, start-new, ready, commit, rollback-*
    component: str | None
    status: StepStatus
    started_at: float
    finished_at: float | None = None
    error: str | None = None
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class DeploymentRecord(msgspec.Struct, kw_only=True):
    id: str
    seq: int  # order of arrival on this device
    status: DeploymentStatus
    description: str = ""
    failure_policy: str = "rollback"
    source: str = "local"
    sequence: int | None = None  # the document's own sequence number (anti-rollback)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    components: dict[str, str] = msgspec.field(default_factory=dict)  # planned name -> version
    removals: list[str] = msgspec.field(default_factory=list)
    steps: list[StepRecord] = msgspec.field(default_factory=list)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at
