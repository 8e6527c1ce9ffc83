"""``keystonectl artifacts list|gc`` against the real API app serving a real cache.

The app is :func:`keystone_edge.api.server.create_app` with :func:`artifact_routes`
mounted (what the agent does), on a Unix socket, in a thread with its own event loop.
The control behind it implements the two artifact methods the way the agent should:
entries from the cache, protection from :func:`retention`, collection by
:func:`collect_garbage`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import uvicorn
from click.testing import CliRunner, Result

from keystone_edge.api.artifacts import (
    ArtifactInfo,
    GcOutcome,
    artifact_infos,
    artifact_routes,
    gc_artifacts,
    gc_outcome,
    list_artifacts,
)
from keystone_edge.api.client import AgentClient
from keystone_edge.api.server import bind_unix_socket, create_app
from keystone_edge.artifacts import (
    ArtifactCache,
    LocalFetcher,
    VersionArtifacts,
    collect_garbage,
    retention,
)
from keystone_edge.cli import cli
from keystone_edge.cli.artifacts import artifacts, human_size
from keystone_edge.errors import RequestError
from keystone_edge.recipe.model import Artifact

KIB = 1024


class ArtifactAgent:
    """The artifact half of AgentControl over a real cache, as the agent implements it."""

    def __init__(self, root: Path, versions: list[VersionArtifacts], quota: int) -> None:
        self.cache = ArtifactCache(root, [LocalFetcher()])
        self.versions = versions
        self.quota = quota

    async def list_artifacts(self) -> list[ArtifactInfo]:
        kept = retention(self.versions, keep_versions=1)
        return artifact_infos(await self.cache.entries(), kept)

    async def gc_artifacts(self, dry_run: bool, quota_bytes: int | None = None) -> GcOutcome:
        kept = retention(self.versions, keep_versions=1)
        report = await collect_garbage(
            self.cache,
            protected=set(kept.protected),
            quota_bytes=self.quota if quota_bytes is None else quota_bytes,
            dry_run=dry_run,
        )
        return gc_outcome(report)


class AppThread:
    """uvicorn serving the app on a Unix socket, in a thread with its own loop."""

    def __init__(self, agent: ArtifactAgent, socket_path: Path) -> None:
        self.socket_path = socket_path
        app = create_app(cast(Any, agent))
        app.router.routes.extend(artifact_routes(agent))  # the lead's one-line mount
        config = uvicorn.Config(
            app, loop="none", http="h11", lifespan="off", log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        sock = bind_unix_socket(self.socket_path, mode=0o600)
        asyncio.run(self.server.serve(sockets=[sock]))

    def __enter__(self) -> AppThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive(), "the API server thread died"
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _fill(root: Path, sources: Path, sizes: dict[str, int]) -> dict[str, str]:
    """Cache one artifact per name (of that many KiB); return name -> digest."""

    async def fill() -> dict[str, str]:
        cache = ArtifactCache(root, [LocalFetcher()])
        digests = {}
        for name, kib in sizes.items():
            data = name.encode()[:1] * (kib * KIB)
            (sources / name).write_bytes(data)
            artifact = Artifact(
                uri=(sources / name).as_uri(), sha256=hashlib.sha256(data).hexdigest()
            )
            digests[name] = (await cache.ensure(artifact)).sha256
        return digests

    return asyncio.run(fill())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], AppThread]]:
    root = tmp_path / "runtime" / "artifacts"
    sources = tmp_path / "sources"
    sources.mkdir()
    digests = _fill(root, sources, {"app-2.tgz": 40, "app-1.tgz": 30, "old.tgz": 20, "x.bin": 10})
    day = 86400.0
    base = time.time() - 10 * day
    for age, name in enumerate(["x.bin", "old.tgz", "app-1.tgz", "app-2.tgz"]):
        os.utime(root / digests[name], (base + age * day, base + age * day))
    versions = [
        VersionArtifacts("com.acme.app", "2.0.0", frozenset({digests["app-2.tgz"]}), in_use=True),
        VersionArtifacts("com.acme.app", "1.0.0", frozenset({digests["app-1.tgz"]})),
        VersionArtifacts("com.acme.app", "0.1.0", frozenset({digests["old.tgz"]})),
    ]
    agent = ArtifactAgent(root, versions, quota=90 * KIB)
    # A short directory: a Unix socket path must fit in 108 bytes.
    with (
        tempfile.TemporaryDirectory(prefix="ks-") as sock_dir,
        AppThread(agent, Path(sock_dir) / "agent.sock") as app,
    ):
        yield root, digests, app


def ctl(app: AppThread, *args: str) -> Result:
    if "artifacts" not in cli.commands:
        cli.add_command(artifacts)  # what the lead adds to keystone_edge.cli
    return CliRunner().invoke(
        cli,
        ["--socket", str(app.socket_path), *args],
        env={"COLUMNS": "200", "KEYSTONE_SOCKET": None, "TZ": "UTC"},
        catch_exceptions=False,
    )


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip()]


def test_list_shows_every_artifact_most_recent_first(
    setup: tuple[Path, dict[str, str], AppThread],
) -> None:
    _root, digests, app = setup
    result = ctl(app, "artifacts", "list")
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert rows[0] == ["SHA256", "NAME", "SIZE", "LAST", "USED", "REFERENCED", "BY", "KEPT"]
    names = [r[1] for r in rows[1:5]]
    assert names == ["app-2.tgz", "app-1.tgz", "old.tgz", "x.bin"]
    assert rows[1][0] == digests["app-2.tgz"][:12]
    assert rows[1][2:4] == ["40.0", "KiB"]
    assert rows[1][6:] == ["com.acme.app@2.0.0", "yes"]
    assert rows[2][6:] == ["com.acme.app@1.0.0", "yes"]  # kept for rollback
    assert rows[3][6:] == ["com.acme.app@0.1.0", "-"]
    assert rows[4][6:] == ["-", "-"]
    assert " ".join(rows[5]) == (
        "4 artifacts, 100.0 KiB; 2 kept for components in use, rollback or deployments"
    )


def test_list_as_json(setup: tuple[Path, dict[str, str], AppThread]) -> None:
    _root, digests, app = setup
    result = ctl(app, "artifacts", "list", "-o", "json")
    assert result.exit_code == 0, result.output
    items = {i["file"]: i for i in json.loads(result.stdout)}
    assert items["app-1.tgz"]["sha256"] == digests["app-1.tgz"]
    assert items["app-1.tgz"]["size"] == 30 * KIB
    assert items["app-1.tgz"]["protected"] == ["com.acme.app@1.0.0 kept for rollback"]
    assert items["x.bin"]["referenced_by"] == []


def test_gc_dry_run_then_for_real(setup: tuple[Path, dict[str, str], AppThread]) -> None:
    root, digests, app = setup

    dry = ctl(app, "artifacts", "gc", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert lines[0] == (
        "would remove 1 artifact, freeing 10.0 KiB (cache 100.0 KiB -> 90.0 KiB, quota 90.0 KiB)"
    )
    assert [r[1] for r in _rows(dry.stdout)[2:]][:1] == ["x.bin"]
    assert (root / digests["x.bin"]).exists()

    real = ctl(app, "artifacts", "gc", "--quota", "0", "-o", "json")
    assert real.exit_code == 0, real.output
    outcome = json.loads(real.stdout)
    assert outcome["dry_run"] is False
    assert [r["file"] for r in outcome["removed"]] == ["x.bin", "old.tgz"]
    assert outcome["freed_bytes"] == 30 * KIB
    assert outcome["over_quota_bytes"] == 70 * KIB
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [digests["app-2.tgz"], digests["app-1.tgz"]]
    )

    again = ctl(app, "artifacts", "gc")
    assert again.stdout.splitlines() == [
        "nothing to remove (cache 70.0 KiB -> 70.0 KiB, quota 90.0 KiB)"
    ]


def test_gc_refuses_a_bad_quota(setup: tuple[Path, dict[str, str], AppThread]) -> None:
    _root, _digests, app = setup
    result = ctl(app, "artifacts", "gc", "--quota", "lots")
    assert result.exit_code == 2
    assert "invalid size 'lots'" in result.stderr


def test_the_client_functions_and_a_bad_body(
    setup: tuple[Path, dict[str, str], AppThread],
) -> None:
    _root, _digests, app = setup
    with AgentClient(app.socket_path, timeout=10) as client:
        assert len(list_artifacts(client)) == 4
        outcome = gc_artifacts(client, dry_run=True, quota_bytes=0)
        assert [r.file for r in outcome.removed] == ["x.bin", "old.tgz"]
        with pytest.raises(RequestError, match="invalid GcRequest"):
            client._call("POST", "/v1/artifacts:gc", GcOutcome, body=b'{"dry_run": "yes"}')


def test_an_unreachable_agent_exits_3(tmp_path: Path) -> None:
    if "artifacts" not in cli.commands:
        cli.add_command(artifacts)
    result = CliRunner().invoke(cli, ["--socket", str(tmp_path / "none.sock"), "artifacts", "list"])
    assert result.exit_code == 3
    assert result.stderr.startswith("error: cannot reach the agent at ")


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (2**30, "1.0 GiB"), (2**50, "1024.0 TiB")],
)
def test_human_sizes(nbytes: int, text: str) -> None:
    assert human_size(nbytes) == text
