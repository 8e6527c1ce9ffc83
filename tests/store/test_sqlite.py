"""The state store against real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from keystone_edge.errors import NotFound, StoreError
from keystone_edge.observe.events import EventBus
from keystone_edge.store import MIGRATIONS, StateStore


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state" / "keystone.db")


def test_creates_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keystone.db"
    store = StateStore(path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"components", "transitions", "deployments", "deployment_steps", "events"} <= tables


def test_refuses_a_database_from_a_newer_agent(tmp_path: Path) -> None:
    path = tmp_path / "keystone.db"
    StateStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this agent understands"):
        StateStore(path)


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises((StoreError, OSError)):
        StateStore(blocker / "keystone.db")


def test_component_upsert_and_transitions(store: StateStore) -> None:
    store.upsert_component(
        "com.a", desired_version="1.0.0", version="1.0.0", config={"x": 1}, run=True
    )
    store.record_transition("com.a", "NONE", "STARTING", "deployment d1", pid=42)
    store.record_transition("com.a", "STARTING", "RUNNING", "ready", pid=42, restarts=0)
    record = store.component("com.a")
    assert (record.state, record.pid, record.config, record.run) == ("RUNNING", 42, {"x": 1}, True)
    transitions = store.transitions("com.a")
    assert [(t.from_state, t.to_state) for t in transitions] == [
        ("NONE", "STARTING"),
        ("STARTING", "RUNNING"),
    ]
    store.upsert_component("com.a", run=False)
    assert store.component("com.a").run is False
    assert store.component("com.a").config == {"x": 1}


def test_unknown_component_is_not_found(store: StateStore) -> None:
    with pytest.raises(NotFound, match="no component named 'com.nope'"):
        store.component("com.nope")


def test_a_failed_transaction_changes_nothing(store: StateStore) -> None:
    store.upsert_component("com.a", version="1.0.0")
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("UPDATE components SET version = '2.0.0'")
        raise RuntimeError("boom")
    assert store.component("com.a").version == "1.0.0"


def test_deployments_and_steps(store: StateStore) -> None:
    record = store.insert_deployment(
        "d1", document={"components": {}}, description="first", failure_policy="rollback"
    )
    assert (record.status, record.seq) == ("queued", 1)
    second = store.insert_deployment("d2", document={}, description="", failure_policy="do_nothing")
    assert second.seq == 2
    with pytest.raises(StoreError, match="already exists"):
        store.insert_deployment("d1", document={}, description="", failure_policy="rollback")
    seq = store.begin_step("d1", "install", "com.a")
    store.end_step("d1", seq, status="failed", error="exit code 3")
    store.update_deployment("d1", status="rolled_back", plan={"components": {"com.a": "1.0.0"}})
    loaded = store.deployment("d1")
    assert loaded.status == "rolled_back"
    assert loaded.components == {"com.a": "1.0.0"}
    assert [(s.name, s.component, s.status, s.error) for s in loaded.steps] == [
        ("install", "com.a", "failed", "exit code 3")
    ]
    assert [d.id for d in store.deployments()] == ["d2", "d1"]
    assert [d.id for d in store.deployments_with_status("queued")] == ["d2"]
    assert store.deployment_document("d1") == {"components": {}}


def test_events_persist_and_prune(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "k.db", events_keep=20)
    bus = EventBus(first_id=store.last_event_id() + 1)
    bus.subscribe(store.append_event)
    for i in range(50):
        bus.publish("component.state", n=i)
    assert store.last_event_id() == 50
    kept = store.events(since=0)
    assert kept[-1].payload == {"n": 49}
    assert len(kept) <= 22
    assert [e.id for e in store.events(since=47)] == [48, 49, 50]
    store.close()
    # Ids keep increasing across restarts, so `since=ID` stays meaningful.
    reopened = StateStore(tmp_path / "k.db")
    assert EventBus(first_id=reopened.last_event_id() + 1).publish("x").id == 51
