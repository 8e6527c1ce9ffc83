"""What to do, at start-up, with a deployment the previous agent did not finish.

Sans-IO: the decision is made from the deployment's durable record (status, failure policy,
deadline) and its checkpoints; the engine carries it out. Rules:

- ``rolling_back``: the rollback itself was interrupted: roll back again (restoring a
  snapshot is idempotent).
- ``running`` whose ``commit`` step is done: every change was applied; it succeeded.
- ``running`` past its deadline (``started_at + timeout``): roll back with policy
  ``rollback``; with ``do_nothing`` it is marked failed and left as it is.
- ``running`` otherwise: policy ``rollback`` rolls it back to the previous complete state;
  ``do_nothing`` resumes it: it is applied again from the start, which skips whatever is
  already done (every step is idempotent: the diff finds finished components unchanged).

Either way the device ends in the new or the previous complete state, and the agent then
re-adopts the desired state, so every component that should run is running.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from keystone_edge.store import DeploymentRecord, StepRecord

__all__ = ["RecoveryAction", "decide_recovery"]

RecoveryAction = Literal["succeeded", "rollback", "resume", "fail"]


def decide_recovery(
    record: DeploymentRecord, steps: Sequence[StepRecord], *, timeout: float, now: float
) -> tuple[RecoveryAction, str]:
    """The action for an interrupted deployment, and the reason in words."""
    if record.status == "rolling_back":
        return "rollback", "the agent stopped during the rollback; rolling back again"
    if any(s.name == "commit" and s.status == "done" for s in steps):
        return "succeeded", "every step was done before the agent stopped"
    started = record.started_at if record.started_at is not None else record.created_at
    if now >= started + timeout:
        if record.failure_policy == "rollback":
            return "rollback", "the deadline passed while the agent was down"
        return "fail", "the deadline passed while the agent was down"
    if record.failure_policy == "rollback":
        return "rollback", "interrupted: the agent stopped during the deployment"
    return "resume", "interrupted: the agent stopped during the deployment; resuming"
