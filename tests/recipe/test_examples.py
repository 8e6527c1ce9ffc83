"""examples/hello runs on this machine as its recipe says: real process, real socket."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from keystone_edge.recipe import RenderContext, effective_config, load_recipe, render
from tests.recipe.helpers import EXAMPLES

HELLO_DIR = EXAMPLES / "hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_hello_artifact_matches_its_sha256() -> None:
    recipe = load_recipe(HELLO_DIR / "com.wisewolf.hello.recipe.toml").recipe
    (artifact,) = recipe.artifacts
    assert artifact.uri == (HELLO_DIR / "hello").as_uri()
    assert artifact.sha256 == hashlib.sha256((HELLO_DIR / "hello").read_bytes()).hexdigest(), (
        "examples/hello/hello changed: update the sha256 in its recipe"
    )
    assert recipe.security.run_as is None


def test_the_rendered_hello_runs_and_answers_its_health_check(tmp_path: Path) -> None:
    recipe = load_recipe(HELLO_DIR / "com.wisewolf.hello.recipe.toml").recipe
    port = free_port()
    config = effective_config(recipe, deployment={"interval_seconds": 1, "port": port})
    context = RenderContext(artifacts_path=HELLO_DIR, work_path=tmp_path, device_id="test")
    rendered = render(recipe, config, context)
    run = rendered.lifecycle.run
    assert run is not None
    assert run.exec is not None
    assert run.health is not None
    assert run.health.check == f"http://127.0.0.1:{port}/health"
    # The program is Python: run it with this interpreter so the test does not depend on
    # the executable bit surviving a checkout.
    process = subprocess.Popen(
        [sys.executable, run.exec.command, *run.exec.args],
        cwd=run.exec.working_dir,
        env={**run.exec.env, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(run.health.check, timeout=1) as response:
                    assert response.status == 200
                    assert response.read() == b"ok\n"
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"hello never answered on {run.health.check}")
                time.sleep(0.05)
        time.sleep(1.2)  # long enough for a second heartbeat at a 1 s interval
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == f"hello: health on http://127.0.0.1:{port}/health"
    assert lines[1] == "Hello from Keystone (heartbeat 1)"
    assert "Hello from Keystone (heartbeat 2)" in lines
    assert lines[-1] == "hello: stopped"
