"""Crash tests: kill -9 the agent at every checkpoint of a two-component update, restart it,
and check that the device ends in the old or the new complete state, with every component
that should run running."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Agent, deployment, python_argv, recipe, wait_for, write_program

pytestmark = pytest.mark.slow

SLEEPER = "import time, sys\nprint('up', sys.argv[1:], flush=True)\nwhile True: time.sleep(3600)\n"

STEPS = ["fetch", "install", "stop-old", "start-new", "ready"]
BOUNDARIES = [
    "before:resolve",
    *(f"{when}:{step}:{name}" for name in ("com.crash.base", "com.crash.app")
      for step in STEPS for when in ("before", "after")),
    "before:commit",
    "after:commit",
]  # fmt: skip


def _recipes(tmp_path: Path, version: str) -> list[dict[str, Any]]:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    artifact = tmp_path / f"payload-{version}.txt"
    artifact.write_text(f"payload {version}\n")
    common: dict[str, Any] = {
        "artifacts": [{"uri": artifact.as_uri()}],
        "install": {"script": f"echo installing {version}"},
    }
    return [
        recipe("com.crash.base", version, argv=[*python_argv(sleeper), version], **common),
        recipe(
            "com.crash.app",
            version,
            argv=[*python_argv(sleeper), version],
            dependencies=[{"name": "com.crash.base", "version": ">=1.0.0"}],
            **common,
        ),
    ]


def _paused(agent: Agent) -> bool:
    with agent.client() as client:
        return any(e.type == "test.paused" for e in client.events(since=0))


def _versions(agent: Agent) -> dict[str, tuple[str | None, str]]:
    with agent.client() as client:
        return {c.name: (c.version, c.state) for c in client.list_components()}


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_kill_at_each_checkpoint_leaves_a_complete_state(
    boundary: str, agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    first = agent_factory().start()
    v1 = _recipes(tmp_path, "1.0.0")
    assert first.deploy_and_wait(deployment("com.crash.app"), v1).status == "succeeded"
    first.stop()

    paused = agent_factory()
    paused.env["KEYSTONE_TEST_PAUSE_AT"] = boundary
    paused.start()
    for name in ("com.crash.base", "com.crash.app"):
        paused.wait_state(name, "RUNNING")
    update = paused.deploy(
        deployment(("com.crash.app", "2.0.0"), ("com.crash.base", "2.0.0")),
        _recipes(tmp_path, "2.0.0"),
    )
    wait_for(lambda: _paused(paused), what=f"the agent to pause at {boundary}")
    paused.kill()

    after = agent_factory().start()
    record = after.wait_deployment(update.id)
    expected = "succeeded" if boundary == "after:commit" else "rolled_back"
    assert record.status == expected, (record.status, record.error)
    want = "2.0.0" if expected == "succeeded" else "1.0.0"
    for name in ("com.crash.base", "com.crash.app"):
        state = after.wait_state(name, "RUNNING")
        assert state.version == want, _versions(after)
        with open(f"/proc/{state.pid}/cmdline", "rb") as fh:
            assert want.encode() in fh.read()


def test_do_nothing_deployment_resumes_after_a_crash(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    first = agent_factory().start()
    v1 = _recipes(tmp_path, "1.0.0")
    assert first.deploy_and_wait(deployment("com.crash.app"), v1).status == "succeeded"
    first.stop()

    paused = agent_factory()
    paused.env["KEYSTONE_TEST_PAUSE_AT"] = "before:start-new:com.crash.base"
    paused.start()
    doc = deployment(
        ("com.crash.app", "2.0.0"), ("com.crash.base", "2.0.0"), failure_policy="do_nothing"
    )
    update = paused.deploy(doc, _recipes(tmp_path, "2.0.0"))
    wait_for(lambda: _paused(paused), what="the pause")
    paused.kill()

    after = agent_factory().start()
    record = after.wait_deployment(update.id)
    assert record.status == "succeeded", record.error
    for name in ("com.crash.base", "com.crash.app"):
        assert after.wait_state(name, "RUNNING").version == "2.0.0"
