"""Recovery decisions for deployments a stopped agent left unfinished."""

from __future__ import annotations

import pytest

from keystone_edge.deploy.recovery import decide_recovery
from keystone_edge.store import DeploymentRecord, StepRecord


def _record(
    status: str, policy: str = "rollback", started: float | None = 100.0
) -> DeploymentRecord:
    return DeploymentRecord(
        id="d1", seq=1, status=status, failure_policy=policy, created_at=90.0,  # type: ignore[arg-type]
        started_at=started,
    )  # fmt: skip


def _step(name: str, status: str) -> StepRecord:
    return StepRecord(seq=1, name=name, component=None, status=status, started_at=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "policy", "steps", "now", "expected"),
    [
        ("rolling_back", "rollback", [], 101.0, "rollback"),
        ("rolling_back", "do_nothing", [], 101.0, "rollback"),
        ("running", "rollback", [_step("commit", "done")], 101.0, "succeeded"),
        ("running", "do_nothing", [_step("commit", "running")], 101.0, "resume"),
        ("running", "rollback", [_step("install", "running")], 101.0, "rollback"),
        ("running", "do_nothing", [_step("install", "done")], 101.0, "resume"),
        ("running", "rollback", [], 200.0, "rollback"),
        ("running", "do_nothing", [], 200.0, "fail"),
    ],
)
def test_decisions(
    status: str, policy: str, steps: list[StepRecord], now: float, expected: str
) -> None:
    action, reason = decide_recovery(_record(status, policy), steps, timeout=60.0, now=now)
    assert action == expected
    assert reason


def test_deadline_counts_from_the_first_start() -> None:
    record = _record("running", "rollback", started=None)
    # Never started: the deadline counts from creation (90 + 60 = 150).
    assert decide_recovery(record, [], timeout=60.0, now=149.0)[0] == "rollback"
    assert "deadline" in decide_recovery(record, [], timeout=60.0, now=151.0)[1]
