"""Component supervision: the lifecycle table, restart backoff, health, and the supervisor.

The sans-IO cores (:mod:`.lifecycle`, :mod:`.backoff`, the trackers in :mod:`.health`)
make every decision; :class:`Supervisor` carries them out with asyncio and a
:class:`~keystone_edge.runners.base.Runner`.
"""

from keystone_edge.supervise.backoff import Decision, DontRestart, GiveUp, Restart, RestartTracker
from keystone_edge.supervise.clock import Clock, ManualClock, SystemClock
from keystone_edge.supervise.health import (
    HealthCheck,
    HealthStatus,
    HealthTracker,
    HealthUpdate,
    ProbeResult,
    Verdict,
    probe,
)
from keystone_edge.supervise.lifecycle import TRANSITIONS, State, Trigger, apply
from keystone_edge.supervise.supervisor import ComponentStatus, RunPlan, Supervisor

__all__ = [
    "TRANSITIONS",
    "Clock",
    "ComponentStatus",
    "Decision",
    "DontRestart",
    "GiveUp",
    "HealthCheck",
    "HealthStatus",
    "HealthTracker",
    "HealthUpdate",
    "ManualClock",
    "ProbeResult",
    "Restart",
    "RestartTracker",
    "RunPlan",
    "State",
    "Supervisor",
    "SystemClock",
    "Trigger",
    "Verdict",
    "apply",
    "probe",
]
