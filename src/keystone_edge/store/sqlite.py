"""The agent's state store: one SQLite file (``state/keystone.db``).

Rules:

- WAL journal; the schema evolves only through the numbered migrations below, applied in
  order inside one transaction each and recorded in ``PRAGMA user_version``. A database
  newer than this code is refused rather than misread.
- One logical step is one transaction (:meth:`StateStore.transaction`). Deployment
  checkpoints are written with ``durable=True``, which fsyncs the WAL at commit
  (``synchronous=FULL``) so a step recorded as done survives a power loss; high-rate
  writes such as lifecycle transitions use ``synchronous=NORMAL`` (consistent after a
  crash, and made durable by the next checkpoint commit) so restarts stay fast.
- ``sqlite3.Error`` never leaves this module: it is wrapped in :class:`StoreError`.
- The events table keeps the newest ``events_keep`` events so clients can catch up with
  ``since=ID``; older ones are pruned as new ones arrive.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from keystone_edge.errors import NotFound, StoreError
from keystone_edge.observe.events import Event
from keystone_edge.store.records import (
    ComponentRecord,
    DeploymentRecord,
    StepRecord,
    TransitionRecord,
)

__all__ = ["MIGRATIONS", "StateStore"]

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema
    """
    CREATE TABLE components (
        name            TEXT PRIMARY KEY,
        desired_version TEXT,
        version         TEXT,
        run             INTEGER NOT NULL DEFAULT 1,
        state           TEXT NOT NULL DEFAULT 'NONE',
        config          TEXT NOT NULL DEFAULT '{}',
        overrides       TEXT NOT NULL DEFAULT '{}',
        pid             INTEGER,
        restarts        INTEGER NOT NULL DEFAULT 0,
        last_exit_code  INTEGER,
        last_signal     INTEGER,
        reason          TEXT NOT NULL DEFAULT '',
        deployment_id   TEXT,
        updated_at      REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE transitions (
        id         INTEGER PRIMARY KEY,
        component  TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state   TEXT NOT NULL,
        reason     TEXT NOT NULL DEFAULT '',
        at         REAL NOT NULL
    );
    CREATE INDEX transitions_component ON transitions(component, id);
    CREATE TABLE deployments (
        id             TEXT PRIMARY KEY,
        seq            INTEGER NOT NULL UNIQUE,
        status         TEXT NOT NULL,
        description    TEXT NOT NULL DEFAULT '',
        failure_policy TEXT NOT NULL DEFAULT 'rollback',
        source         TEXT NOT NULL DEFAULT 'local',
        sequence       INTEGER,
        document       TEXT NOT NULL,
        plan           TEXT NOT NULL DEFAULT '{}',
        snapshot       TEXT NOT NULL DEFAULT '{}',
        created_at     REAL NOT NULL,
        started_at     REAL,
        finished_at    REAL,
        error          TEXT
    );
    CREATE TABLE deployment_steps (
        deployment_id TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
        seq           INTEGER NOT NULL,
        name          TEXT NOT NULL,
        component     TEXT,
        status        TEXT NOT NULL,
        started_at    REAL NOT NULL,
        finished_at   REAL,
        error         TEXT,
        detail        TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (deployment_id, seq)
    );
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        ts      REAL NOT NULL,
        type    TEXT NOT NULL,
        payload TEXT NOT NULL
    );
    """,
)

_COMPONENT_COLUMNS = (
    "name, desired_version, version, run, state, config, overrides, pid, restarts, last_exit_code, "
    "last_signal, reason, deployment_id, updated_at"
)
_DEPLOYMENT_COLUMNS = (
    "id, seq, status, description, failure_policy, source, sequence, created_at, "
    "started_at, finished_at, error, plan"
)

_json_encode = msgspec.json.Encoder(enc_hook=str).encode
_json_decode = msgspec.json.decode


class StateStore:
    """Typed access to the state database. Not thread-safe: use it from the event loop."""

    def __init__(self, path: Path, *, events_keep: int = 10_000) -> None:
        self.path = path
        self.events_keep = events_keep
        self._events_since_prune = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the state database: {exc}") from exc
        self._durable = False

    # -- plumbing ---------------------------------------------------------------------

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this agent "
                f"understands ({len(MIGRATIONS)}); upgrade the agent or restore a backup"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One step, one transaction. ``durable`` fsyncs at commit (deployment checkpoints)."""
        if self._db.in_transaction:
            # Nested use joins the outer transaction (its durability wins).
            yield self._db
            return
        try:
            if durable != self._durable:
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    # -- components -------------------------------------------------------------------

    def upsert_component(self, name: str, **fields: Any) -> None:
        """Create the component row if needed and set the given columns."""
        for key in ("config", "overrides"):
            if key in fields:
                fields[key] = _json_encode(fields[key]).decode()
        if "run" in fields:
            fields["run"] = int(bool(fields["run"]))
        fields["updated_at"] = time.time()
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        updates = ", ".join(f"{c} = excluded.{c}" for c in fields)
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO components (name, {columns}) VALUES (?, {marks}) "  # noqa: S608 - column names are ours
                f"ON CONFLICT(name) DO UPDATE SET {updates}",
                (name, *fields.values()),
            )

    def delete_component(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM components WHERE name = ?", (name,))

    def find_component(self, name: str) -> ComponentRecord | None:
        """The component's record, or None when there is none."""
        rows = self._query(
            f"SELECT {_COMPONENT_COLUMNS} FROM components WHERE name = ?",  # noqa: S608
            (name,),
        )
        return _component(rows[0]) if rows else None

    def component(self, name: str) -> ComponentRecord:
        record = self.find_component(name)
        if record is None:
            raise NotFound(f"no component named {name!r}")
        return record

    def components(self) -> list[ComponentRecord]:
        rows = self._query(
            f"SELECT {_COMPONENT_COLUMNS} FROM components ORDER BY name"  # noqa: S608
        )
        return [_component(row) for row in rows]

    def record_transition(
        self, component: str, from_state: str, to_state: str, reason: str, **fields: Any
    ) -> None:
        """Persist one lifecycle transition and the component's new live fields."""
        now = time.time()
        fields = {"state": to_state, "reason": reason, **fields}
        sets = ", ".join(f"{c} = ?" for c in fields)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO transitions (component, from_state, to_state, reason, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (component, from_state, to_state, reason, now),
            )
            db.execute(
                f"UPDATE components SET {sets}, updated_at = ? WHERE name = ?",  # noqa: S608
                (*fields.values(), now, component),
            )

    def transitions(self, component: str, limit: int = 50) -> list[TransitionRecord]:
        rows = self._query(
            "SELECT id, component, from_state, to_state, reason, at FROM transitions "
            "WHERE component = ? ORDER BY id DESC LIMIT ?",
            (component, limit),
        )
        return [
            TransitionRecord(
                id=r[0], component=r[1], from_state=r[2], to_state=r[3], reason=r[4], at=r[5]
            )
            for r in reversed(rows)
        ]

    # -- deployments ------------------------------------------------------------------

    def insert_deployment(
        self,
        deployment_id: str,
        *,
        document: dict[str, Any],
        description: str,
        failure_policy: str,
        source: str = "local",
        sequence: int | None = None,
    ) -> DeploymentRecord:
        with self.transaction(durable=True) as db:
            if db.execute("SELECT 1 FROM deployments WHERE id = ?", (deployment_id,)).fetchone():
                raise StoreError(f"a deployment with id {deployment_id!r} already exists")
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM deployments").fetchone()
            db.execute(
                "INSERT INTO deployments (id, seq, status, description, failure_policy, source, "
                "sequence, document, created_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (
                    deployment_id,
                    seq,
                    description,
                    failure_policy,
                    source,
                    sequence,
                    _json_encode(document).decode(),
                    time.time(),
                ),
            )
        return self.deployment(deployment_id)

    def has_deployment(self, deployment_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM deployments WHERE id = ?", (deployment_id,)))

    def update_deployment(self, deployment_id: str, **fields: Any) -> None:
        for key in ("plan", "snapshot"):
            if key in fields:
                fields[key] = _json_encode(fields[key]).decode()
        sets = ", ".join(f"{c} = ?" for c in fields)
        with self.transaction(durable=True) as db:
            db.execute(
                f"UPDATE deployments SET {sets} WHERE id = ?",  # noqa: S608
                (*fields.values(), deployment_id),
            )

    def deployment(self, deployment_id: str) -> DeploymentRecord:
        rows = self._query(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?",  # noqa: S608
            (deployment_id,),
        )
        if not rows:
            raise NotFound(f"no deployment with id {deployment_id!r}")
        record = _deployment(rows[0])
        record.steps = self.steps(deployment_id)
        return record

    def deployments(self, limit: int = 100) -> list[DeploymentRecord]:
        rows = self._query(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments ORDER BY seq DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [_deployment(row) for row in rows]

    def deployment_document(self, deployment_id: str) -> dict[str, Any]:
        return self._deployment_json(deployment_id, "document")

    def deployment_snapshot(self, deployment_id: str) -> dict[str, Any]:
        return self._deployment_json(deployment_id, "snapshot")

    def deployment_plan(self, deployment_id: str) -> dict[str, Any]:
        return self._deployment_json(deployment_id, "plan")

    def _deployment_json(self, deployment_id: str, column: str) -> dict[str, Any]:
        rows = self._query(
            f"SELECT {column} FROM deployments WHERE id = ?",  # noqa: S608 - our column names
            (deployment_id,),
        )
        if not rows:
            raise NotFound(f"no deployment with id {deployment_id!r}")
        result: dict[str, Any] = _json_decode(rows[0][0])
        return result

    def deployments_with_status(self, *statuses: str) -> list[DeploymentRecord]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._query(
            f"SELECT {_DEPLOYMENT_COLUMNS} FROM deployments WHERE status IN ({marks}) "  # noqa: S608
            "ORDER BY seq",
            statuses,
        )
        return [_deployment(row) for row in rows]

    def begin_step(
        self,
        deployment_id: str,
        name: str,
        component: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Checkpoint: a step starts. Returns its sequence number within the deployment."""
        with self.transaction(durable=True) as db:
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_steps WHERE deployment_id = ?",
                (deployment_id,),
            ).fetchone()
            db.execute(
                "INSERT INTO deployment_steps (deployment_id, seq, name, component, status, "
                "started_at, detail) VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (
                    deployment_id,
                    seq,
                    name,
                    component,
                    time.time(),
                    _json_encode(detail or {}).decode(),
                ),
            )
        return int(seq)

    def end_step(
        self, deployment_id: str, seq: int, *, status: str = "done", error: str | None = None
    ) -> None:
        """Checkpoint: a step finished (done, failed or skipped)."""
        with self.transaction(durable=True) as db:
            db.execute(
                "UPDATE deployment_steps SET status = ?, finished_at = ?, error = ? "
                "WHERE deployment_id = ? AND seq = ?",
                (status, time.time(), error, deployment_id, seq),
            )

    def steps(self, deployment_id: str) -> list[StepRecord]:
        rows = self._query(
            "SELECT seq, name, component, status, started_at, finished_at, error, detail "
            "FROM deployment_steps WHERE deployment_id = ? ORDER BY seq",
            (deployment_id,),
        )
        return [
            StepRecord(
                seq=r[0],
                name=r[1],
                component=r[2],
                status=r[3],
                started_at=r[4],
                finished_at=r[5],
                error=r[6],
                detail=_json_decode(r[7]),
            )
            for r in rows
        ]

    # -- events -----------------------------------------------------------------------

    def last_event_id(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])

    def append_event(self, event: Event) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events (id, ts, type, payload) VALUES (?, ?, ?, ?)",
                (event.id, event.ts, event.type, _json_encode(event.payload).decode()),
            )
            self._events_since_prune += 1
            if self._events_since_prune >= max(1, self.events_keep // 10):
                self._events_since_prune = 0
                db.execute("DELETE FROM events WHERE id <= ?", (event.id - self.events_keep,))

    def events(
        self, *, since: int = 0, limit: int = 1000, types: tuple[str, ...] = ()
    ) -> list[Event]:
        """Events with id > ``since``, oldest first."""
        sql = "SELECT id, ts, type, payload FROM events WHERE id > ?"
        params: tuple[Any, ...] = (since,)
        if types:
            sql += f" AND type IN ({', '.join('?' for _ in types)})"
            params += types
        sql += " ORDER BY id LIMIT ?"
        rows = self._query(sql, (*params, limit))
        return [Event(id=r[0], ts=r[1], type=r[2], payload=_json_decode(r[3])) for r in rows]


def _component(row: tuple[Any, ...]) -> ComponentRecord:
    return ComponentRecord(
        name=row[0],
        desired_version=row[1],
        version=row[2],
        run=bool(row[3]),
        state=row[4],
        config=_json_decode(row[5]),
        overrides=_json_decode(row[6]),
        pid=row[7],
        restarts=row[8],
        last_exit_code=row[9],
        last_signal=row[10],
        reason=row[11],
        deployment_id=row[12],
        updated_at=row[13],
    )


def _deployment(row: tuple[Any, ...]) -> DeploymentRecord:
    plan = _json_decode(row[11])
    return DeploymentRecord(
        id=row[0],
        seq=row[1],
        status=row[2],
        description=row[3],
        failure_policy=row[4],
        source=row[5],
        sequence=row[6],
        created_at=row[7],
        started_at=row[8],
        finished_at=row[9],
        error=row[10],
        components=plan.get("components", {}),
        removals=plan.get("removals", []),
    )
