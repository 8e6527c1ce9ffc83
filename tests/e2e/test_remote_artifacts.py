"""Remote artifacts through the real agent: downloads, a lying server, a full disk.

The previous version must keep running whatever happens to the download of the next one.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.artifacts._http_server import ArtifactServer, Route, running
from tests.e2e.harness import Agent, deployment, python_argv, recipe, write_program

pytestmark = pytest.mark.slow

SLEEPER = "import time, sys\nprint('up', flush=True)\nwhile True: time.sleep(3600)\n"


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with running() as srv:
        yield srv


def _remote(name: str, version: str, url: str, data: bytes, sleeper: Path) -> dict[str, object]:
    return recipe(
        name,
        version,
        argv=[*python_argv(sleeper), version],
        artifacts=[{"uri": url, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}],
    )


def test_download_verify_and_use(agent: Agent, server: ArtifactServer, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    server.routes["/payload.bin"] = Route(data=data, drops=[100_000])  # one drop mid-body
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    r = _remote("com.remote.app", "1.0.0", server.url("/payload.bin"), data, sleeper)
    record = agent.deploy_and_wait(deployment("com.remote.app"), [r])
    assert record.status == "succeeded", record.error
    placed = agent.root / "runtime/components/com.remote.app/1.0.0/artifacts/payload.bin"
    assert placed.read_bytes() == data
    # The second request resumed where the dropped one stopped.
    ranges = [s.range for s in server.requests_to("/payload.bin")]
    assert ranges[0] is None
    assert ranges[1] is not None
    assert ranges[1].startswith("bytes=")
    listing = agent.ctl("artifacts", "list", "-o", "json")
    assert listing.returncode == 0, listing.stderr
    assert hashlib.sha256(data).hexdigest() in listing.stdout


def test_a_lying_server_fails_the_update_and_the_old_version_keeps_running(
    agent: Agent, server: ArtifactServer, tmp_path: Path
) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    good = b"good payload" * 1000
    server.routes["/v1.bin"] = Route(data=good)
    v1 = _remote("com.remote.svc", "1.0.0", server.url("/v1.bin"), good, sleeper)
    assert agent.deploy_and_wait(deployment("com.remote.svc"), [v1]).status == "succeeded"
    old = agent.wait_state("com.remote.svc", "RUNNING")
    promised = b"the real v2" * 1000
    server.routes["/v2.bin"] = Route(data=b"tampered v2" * 1000)
    v2 = _remote("com.remote.svc", "2.0.0", server.url("/v2.bin"), promised, sleeper)
    record = agent.deploy_and_wait(deployment(("com.remote.svc", "2.0.0")), [v2])
    assert record.status == "rolled_back"
    assert record.error is not None
    assert "sha256 mismatch" in record.error
    assert hashlib.sha256(promised).hexdigest() in record.error
    now = agent.wait_state("com.remote.svc", "RUNNING")
    assert (now.version, now.pid) == ("1.0.0", old.pid)
    # Nothing unverified entered the cache.
    assert not (agent.root / "runtime/artifacts" / hashlib.sha256(promised).hexdigest()).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_during_a_download_keeps_the_previous_version(
    agent_factory: Callable[..., Agent], server: ArtifactServer, tmp_path: Path
) -> None:
    agent = agent_factory()
    cache = agent.root / "runtime" / "artifacts"
    cache.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        agent.start()
        sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
        small = b"x" * 1000
        server.routes["/small.bin"] = Route(data=small)
        v1 = _remote("com.remote.full", "1.0.0", server.url("/small.bin"), small, sleeper)
        assert agent.deploy_and_wait(deployment("com.remote.full"), [v1]).status == "succeeded"
        old = agent.wait_state("com.remote.full", "RUNNING")
        big = os.urandom(3 * 1024 * 1024)
        server.routes["/big.bin"] = Route(data=big)
        v2 = _remote("com.remote.full", "2.0.0", server.url("/big.bin"), big, sleeper)
        record = agent.deploy_and_wait(deployment(("com.remote.full", "2.0.0")), [v2])
        assert record.status == "rolled_back"
        assert record.error is not None
        assert "No space left" in record.error or "ENOSPC" in record.error
        now = agent.wait_state("com.remote.full", "RUNNING")
        assert (now.version, now.pid) == ("1.0.0", old.pid)
        assert agent.client().health()["status"] == "ok"
    finally:
        agent.stop()
        subprocess.run(["umount", "-l", str(cache)], check=False)


def test_deploy_apply_wait_shows_download_progress(
    agent: Agent, server: ArtifactServer, tmp_path: Path
) -> None:
    data = os.urandom(512 * 1024)
    server.routes["/slow.bin"] = Route(data=data, chunk_delay=0.05)  # ~1.6 s in all
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    digest = hashlib.sha256(data).hexdigest()
    (recipes / "slow.recipe.toml").write_text(
        '[metadata]\nname = "com.remote.slow"\nversion = "1.0.0"\n'
        f'[[artifacts]]\nuri = "{server.url("/slow.bin")}"\nsha256 = "{digest}"\n'
        f"size = {len(data)}\n"
        f'[lifecycle.run.exec]\ncommand = "{python_argv(sleeper)[0]}"\n'
        f'args = ["{sleeper}"]\n'
    )
    document = tmp_path / "deployment.toml"
    document.write_text('[components."com.remote.slow"]\nversion = "1.0.0"\n')
    result = agent.ctl(
        "deploy", "apply", "-f", str(document), "--recipes", str(recipes), "--wait"
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    progress = [line for line in result.stdout.splitlines() if " download " in line]
    assert progress, result.stdout
    assert "512.0KiB/512.0KiB" in progress[-1]
    assert "/s" in progress[-1]
