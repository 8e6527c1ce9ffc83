"""Fixtures for the end-to-end tests (the harness is in ``harness.py``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Agent


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(name: str = "root", config: str | None = None) -> Agent:
        root = tmp_path / name
        if config is not None:
            (root / "etc").mkdir(parents=True, exist_ok=True)
            (root / "etc" / "agent.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTONE_")}
        agent = Agent(root=root, env=env)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        if agent.proc is not None and agent.proc.poll() is None:
            try:
                agent.stop(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.proc.pid, signal.SIGKILL)
    _kill_leftovers(tmp_path)


@pytest.fixture
def agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory().start()


def _kill_leftovers(tmp_path: Path) -> None:
    """Belt and braces: no child of a test may outlive it."""
    import psutil

    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("KEYSTONE_ROOT", "").startswith(str(tmp_path)):
            with contextlib.suppress(psutil.Error):
                proc.kill()
