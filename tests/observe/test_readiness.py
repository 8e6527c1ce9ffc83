"""``/readyz`` checks against a real state database: writable, loop responsive, no
deployment stuck past its deadline."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keystone_edge.agent import Agent
from keystone_edge.config import AgentConfig
from keystone_edge.layout import Layout
from keystone_edge.observe.events import Event
from keystone_edge.store import StateStore


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = Agent(Layout(tmp_path), AgentConfig())
    agent._store = store = StateStore(tmp_path / "state" / "keystone.db")
    store.append_event(Event(id=1, ts=time.time(), type="agent.ready", payload={}))
    yield agent
    store.close()


def running_deployment(store: StateStore, name: str, started: float, timeout: str) -> None:
    store.insert_deployment(
        name,
        document={"deployment": {"timeout": timeout}, "components": {}},
        description="",
        failure_policy="rollback",
    )
    store.update_deployment(name, status="running", started_at=started)


def test_ready_with_every_check(agent: Agent) -> None:
    report = asyncio.run(agent.readiness())
    assert report.ready
    assert set(report.checks) == {"agent", "store", "event_loop", "deployments"}
    assert report.checks["store"].detail.startswith("writable")
    assert report.checks["deployments"].detail == "none running"


def test_a_deployment_past_its_deadline_is_not_ready(agent: Agent) -> None:
    running_deployment(agent.store, "on-time", time.time() - 60, "10m")
    report = asyncio.run(agent.readiness())
    assert report.ready, report
    running_deployment(agent.store, "stuck", time.time() - 120, "1m")
    report = asyncio.run(agent.readiness())
    assert not report.ready
    check = report.checks["deployments"]
    assert not check.ok
    assert check.detail.startswith("stuck is 60 s past its deadline")
    assert report.checks["store"].ok  # the other checks still report


def test_a_store_that_takes_no_writes_is_not_ready(agent: Agent, tmp_path: Path) -> None:
    agent.store._db.execute("PRAGMA busy_timeout=100")
    other = sqlite3.connect(tmp_path / "state" / "keystone.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        report = asyncio.run(agent.readiness())
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not report.ready
    assert not report.checks["store"].ok
    assert "locked" in report.checks["store"].detail
    assert asyncio.run(agent.readiness()).ready


def test_stopping_is_not_ready(agent: Agent) -> None:
    agent.stopping.set()
    report = asyncio.run(agent.readiness())
    assert not report.ready
    assert report.checks["agent"].detail == "stopping"


def test_a_busy_loop_is_not_ready(agent: Agent) -> None:
    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        loop.call_soon(time.sleep, 0.6)  # a callback queued ahead that hogs the loop
        report = await agent.readiness()
        return report.checks["event_loop"].ok

    assert asyncio.run(scenario()) is False
