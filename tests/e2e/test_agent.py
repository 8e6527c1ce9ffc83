"""The agent end to end: real agent process, real children, real socket API and CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpcore
import pytest

from keystone_edge.store import ComponentRecord
from tests.e2e.harness import (
    Agent,
    deployment,
    python_argv,
    recipe,
    wait_for,
    write_program,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

SLEEPER = "import time\nprint('up', flush=True)\nwhile True: time.sleep(3600)\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def events(agent: Agent, type_: str | None = None) -> list[dict[str, Any]]:
    with agent.client() as client:
        got = client.events(since=0)
    return [
        {"id": e.id, "type": e.type, **e.payload} for e in got if type_ is None or e.type == type_
    ]


def test_example_deployment_from_the_readme(agent: Agent) -> None:
    """The README's scenario: three components, dependency order, a crash that recovers."""
    result = agent.ctl(
        "deploy", "apply", "-f", str(REPO / "examples/deployment.toml"),
        "--recipes", str(REPO / "examples/recipes"), "--wait",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    listing = agent.ctl("component", "list", "-o", "json")
    assert listing.returncode == 0, listing.stderr
    states = {c["name"]: c for c in json.loads(listing.stdout)}
    assert set(states) == {"com.example.kvstore", "com.example.reporter", "com.example.flaky"}
    for name in states:
        agent.wait_state(name, "RUNNING")
    flaky = agent.wait_state("com.example.flaky", "RUNNING")
    assert flaky.restarts >= 1
    # The reporter (hard dependency on the kv-store) started only once the store was ready.
    transitions = events(agent, "component.state")
    store_running = next(
        e["id"]
        for e in transitions
        if e["component"] == "com.example.kvstore" and e["to_state"] == "RUNNING"
    )
    reporter_starting = next(
        e["id"]
        for e in transitions
        if e["component"] == "com.example.reporter" and e["to_state"] == "STARTING"
    )
    assert store_running < reporter_starting
    # The reporter really talks to the store through the configured port.
    wait_for(
        lambda: any("stored" in line for line in agent.client().component_logs(
            "com.example.reporter", tail=50)),
        what="a stored heartbeat",
    )  # fmt: skip


def test_crash_restarts_with_backoff_then_fails_when_retries_run_out(
    agent: Agent, tmp_path: Path
) -> None:
    crasher = write_program(tmp_path / "crash.py", "import sys\nprint('dying')\nsys.exit(4)\n")
    r = recipe(
        "com.test.crash",
        argv=python_argv(crasher),
        run={
            "restart_policy": "on-failure",
            "backoff": {"initial": "50ms", "factor": 2.0, "max": "200ms", "max_retries": 3},
        },
    )
    agent.deploy(deployment("com.test.crash", failure_policy="do_nothing"), [r])
    record = agent.wait_state("com.test.crash", "FAILED")
    assert record.restarts == 3
    assert record.last_exit_code == 4
    assert "exited with code 4" in record.reason


def test_kill_9_of_an_always_component_restarts_it(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    r = recipe("com.test.sleeper", argv=python_argv(sleeper), run={"restart_policy": "always"})
    assert agent.deploy_and_wait(deployment("com.test.sleeper"), [r]).status == "succeeded"
    first = agent.wait_state("com.test.sleeper", "RUNNING")
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)

    def restarted() -> ComponentRecord | None:
        now = agent.component("com.test.sleeper")
        return now if now.pid not in (None, first.pid) and now.state == "RUNNING" else None

    second = wait_for(restarted, what="a new pid")
    assert second.restarts == first.restarts + 1
    assert second.last_signal == signal.SIGKILL


def test_health_failure_degrades_and_restarts(agent: Agent, tmp_path: Path) -> None:
    port = free_port()
    flag = tmp_path / "sick"
    server = write_program(
        tmp_path / "server.py",
        f"""
import http.server, pathlib
FLAG = pathlib.Path({str(flag)!r})
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if FLAG.exists() else 200)
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
""",
    )
    r = recipe(
        "com.test.web",
        argv=python_argv(server),
        run={
            "restart_policy": "always",
            "health": {
                "check": f"http://127.0.0.1:{port}/healthz",
                "interval": "100ms",
                "timeout": "1s",
                "failure_threshold": 2,
            },
            "backoff": {"initial": "10ms"},
        },
    )
    assert agent.deploy_and_wait(deployment("com.test.web"), [r]).status == "succeeded"
    healthy = agent.wait_state("com.test.web", "RUNNING")
    flag.write_text("sick")

    def degraded_then_restarted() -> bool:
        seen = [
            e["to_state"] for e in events(agent, "component.state")
            if e["component"] == "com.test.web"
        ]  # fmt: skip
        return "DEGRADED" in seen and agent.component("com.test.web").restarts > healthy.restarts

    wait_for(degraded_then_restarted, what="DEGRADED then a restart")
    flag.unlink()
    agent.wait_state("com.test.web", "RUNNING")


def test_config_change_restarts_only_that_component(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    recipes = [
        recipe(
            name,
            argv=[*python_argv(sleeper), "${config.greeting}"],
            config={"defaults": {"greeting": "hi"}},
        )
        for name in ("com.test.a", "com.test.b")
    ]
    doc = deployment("com.test.a", "com.test.b")
    assert agent.deploy_and_wait(doc, recipes).status == "succeeded"
    before = {n: agent.wait_state(n, "RUNNING").pid for n in ("com.test.a", "com.test.b")}
    doc["components"]["com.test.a"] = {"config": {"greeting": "hello"}}
    record = agent.deploy_and_wait(doc, recipes)
    assert record.status == "succeeded", record.error
    after = {n: agent.wait_state(n, "RUNNING").pid for n in ("com.test.a", "com.test.b")}
    assert after["com.test.b"] == before["com.test.b"]
    assert after["com.test.a"] != before["com.test.a"]
    assert agent.component("com.test.a").config == {"greeting": "hello"}
    with open(f"/proc/{after['com.test.a']}/cmdline", "rb") as fh:
        assert b"hello" in fh.read()


def test_failing_install_of_a_new_version_rolls_back(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    v1 = recipe("com.test.app", "1.0.0", argv=python_argv(sleeper))
    v2 = recipe(
        "com.test.app",
        "2.0.0",
        argv=python_argv(sleeper),
        install={"script": "echo preparing; echo disk full >&2; exit 7"},
    )
    assert agent.deploy_and_wait(deployment("com.test.app"), [v1]).status == "succeeded"
    old_pid = agent.wait_state("com.test.app", "RUNNING").pid
    record = agent.deploy_and_wait(deployment(("com.test.app", "2.0.0")), [v2])
    assert record.status == "rolled_back"
    assert record.error is not None
    assert "7" in record.error
    failed = [s for s in record.steps if s.status == "failed"]
    assert failed[0].name == "install"
    after = agent.wait_state("com.test.app", "RUNNING")
    assert after.version == "1.0.0"
    # The install failed before the old version was stopped: it never stopped.
    assert after.pid == old_pid
    status = agent.ctl("deploy", "status", record.id)
    assert "install" in status.stdout
    assert "disk full" in status.stdout or "7" in status.stdout


def test_failing_start_of_a_new_version_restores_the_old_one(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    crasher = write_program(tmp_path / "crash.py", "import sys\nsys.exit(9)\n")
    v1 = recipe("com.test.svc", "1.0.0", argv=python_argv(sleeper))
    v2 = recipe(
        "com.test.svc",
        "1.1.0",
        argv=python_argv(crasher),
        run={"restart_policy": "never", "start_period": "1s"},
    )
    assert agent.deploy_and_wait(deployment("com.test.svc"), [v1]).status == "succeeded"
    record = agent.deploy_and_wait(deployment(("com.test.svc", "1.1.0")), [v2])
    assert record.status == "rolled_back", record
    restored = agent.wait_state("com.test.svc", "RUNNING")
    assert restored.version == "1.0.0"
    assert alive(restored.pid)


def test_cancel_a_running_deployment(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    port = free_port()  # nothing listens there: never ready
    r = recipe(
        "com.test.slow",
        argv=python_argv(sleeper),
        run={"health": {"check": f"tcp://127.0.0.1:{port}", "interval": "100ms"}},
    )
    submitted = agent.deploy(deployment("com.test.slow"), [r])
    agent.wait_state("com.test.slow", "STARTING")
    cancel = agent.ctl("deploy", "cancel", submitted.id)
    assert cancel.returncode == 0, cancel.stderr
    record = agent.wait_deployment(submitted.id)
    assert record.status == "cancelled"
    # Rolled back: the component did not exist before, so it is gone.
    listing = json.loads(agent.ctl("component", "list", "-o", "json").stdout)
    assert "com.test.slow" not in {c["name"] for c in listing}


def test_deployments_queue_one_at_a_time(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    first = agent.deploy(
        deployment("com.test.q1"),
        [recipe("com.test.q1", argv=python_argv(sleeper), run={"start_period": "1s"})],
    )
    second = agent.deploy(
        deployment("com.test.q2"), [recipe("com.test.q2", argv=python_argv(sleeper))]
    )
    assert second.status == "queued"
    done1 = agent.wait_deployment(first.id)
    done2 = agent.wait_deployment(second.id)
    assert (done1.status, done2.status) == ("succeeded", "succeeded")
    assert done1.finished_at is not None
    assert done2.started_at is not None
    assert done2.started_at >= done1.finished_at


def test_agent_restart_readopts_the_desired_state(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    marker = tmp_path / "shutdown-ran"
    agent = agent_factory().start()
    recipes = [
        recipe("com.test.base", argv=python_argv(sleeper)),
        recipe(
            "com.test.top",
            argv=python_argv(sleeper),
            shutdown={"script": f"echo bye > {marker}"},
            dependencies=[{"name": "com.test.base", "version": "^1"}],
        ),
    ]
    doc = deployment("com.test.top", "com.test.base")
    assert agent.deploy_and_wait(doc, recipes).status == "succeeded"
    pids = {n: agent.wait_state(n, "RUNNING").pid for n in ("com.test.base", "com.test.top")}
    assert agent.stop() == 0
    assert marker.read_text().strip() == "bye"
    assert not any(alive(pid) for pid in pids.values())
    # Stopped in reverse dependency order: the dependent first.
    log = agent.log()
    assert log.index("com.test.top") < log.rindex("com.test.base")

    again = agent_factory().start()
    for name, old_pid in pids.items():
        record = again.wait_state(name, "RUNNING")
        assert record.pid != old_pid

    # A killed agent leaves its children; the next one stops them before re-adopting.
    orphan = again.wait_state("com.test.base", "RUNNING").pid
    again.kill()
    assert alive(orphan)
    third = agent_factory().start()
    third.wait_state("com.test.base", "RUNNING")
    wait_for(lambda: not alive(orphan), what="the orphan to be stopped")


def test_log_capture_tail_and_size_cap(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    agent = agent_factory(config='[logs]\nmax_bytes = "64Ki"\nbackups = 2\n').start()
    flood = write_program(
        tmp_path / "flood.py",
        "import sys, time\n"
        "for i in range(200000): sys.stdout.write(f'line {i} ' + 'x' * 80 + '\\n')\n"
        "sys.stdout.write('flood done\\n'); sys.stdout.flush()\n"
        "while True: time.sleep(3600)\n",
    )
    r = recipe("com.test.flood", argv=python_argv(flood))
    assert agent.deploy_and_wait(deployment("com.test.flood"), [r]).status == "succeeded"
    wait_for(
        lambda: any("flood done" in line for line in agent.client().component_logs(
            "com.test.flood", tail=5)),
        what="the end of the flood",
    )  # fmt: skip
    files = list((agent.root / "logs").glob("com.test.flood.log*"))
    assert sum(f.stat().st_size for f in files) <= 64 * 1024 * 3 + 4096
    tail = agent.ctl("component", "logs", "com.test.flood", "--tail", "3")
    assert tail.returncode == 0
    assert "flood done" in tail.stdout


def _raw(agent: Agent, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    with httpcore.ConnectionPool(uds=str(agent.socket)) as pool:
        response = pool.request(
            method,
            f"http://localhost{path}",
            content=body,
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
    return response.status, json.loads(response.content)


def test_api_error_codes_for_bad_requests(agent: Agent) -> None:
    status, body = _raw(agent, "POST", "/v1/deployments", b"{not json")
    assert (status, body["error"]["code"]) == (400, "bad_request")
    status, body = _raw(agent, "GET", "/v1/components/com.nope")
    assert (status, body["error"]["code"]) == (404, "not_found")
    bad_recipe = {
        "metadata": {"name": "com.x", "version": "1.0.0"},
        "lifecycle": {
            "run": {"script": "true", "health": {"check": "tcp://127.0.0.1:1", "interval": "10 s"}}
        },
    }
    request = json.dumps({"document": deployment("com.x"), "recipes": [bad_recipe]}).encode()
    status, body = _raw(agent, "POST", "/v1/deployments", request)
    assert status in (400, 422)
    assert body["error"]["code"] == "recipe_invalid"
    assert "lifecycle.run.health.interval" in body["error"]["message"]
    request = json.dumps({"document": deployment(("com.missing", "^2")), "recipes": []}).encode()
    status, body = _raw(agent, "POST", "/v1/deployments", request)
    assert body["error"]["code"] == "resolution_failed"
    status, body = _raw(agent, "POST", "/v1/deployments/nope:cancel")
    assert status == 404
    # The agent is still fine.
    assert agent.client().health()["status"] == "ok"


def test_cli_exit_codes(agent: Agent, tmp_path: Path) -> None:
    missing = agent.ctl("component", "status", "com.nope")
    assert missing.returncode == 4
    assert "com.nope" in missing.stderr
    unreachable = agent.ctl("--socket", str(tmp_path / "none.sock"), "component", "list")
    assert unreachable.returncode == 3
    assert "hint" in unreachable.stderr


def test_rollback_and_the_anti_rollback_guard(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    v1 = recipe("com.test.guarded", "1.0.0", argv=[*python_argv(sleeper), "v1"])
    v2 = recipe("com.test.guarded", "2.0.0", argv=[*python_argv(sleeper), "v2"])
    first = agent.deploy_and_wait(deployment(("com.test.guarded", "1.0.0"), sequence=1), [v1])
    second = agent.deploy_and_wait(deployment(("com.test.guarded", "2.0.0"), sequence=2), [v2])
    assert (first.status, second.status) == ("succeeded", "succeeded")
    # An older document from the same source is refused: no silent downgrade.
    status, body = _raw(
        agent,
        "POST",
        "/v1/deployments",
        json.dumps({"document": deployment(("com.test.guarded", "1.0.0"), sequence=1)}).encode(),
    )
    assert (status, body["error"]["code"]) == (409, "stale_deployment")
    assert "older than the last one applied" in body["error"]["message"]
    # An explicit rollback goes back to the previous successful deployment.
    result = agent.ctl("deploy", "rollback", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    state = agent.wait_state("com.test.guarded", "RUNNING")
    assert state.version == "1.0.0"
    listing = json.loads(agent.ctl("deploy", "list", "-o", "json").stdout)
    assert listing[0]["description"].startswith(f"rollback of {second.id} to {first.id}")
    # History shows every deployment with its outcome.
    assert [d["status"] for d in listing] == ["succeeded", "succeeded", "succeeded"]


def test_a_deployment_past_its_deadline_rolls_back(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    v1 = recipe("com.test.late", "1.0.0", argv=python_argv(sleeper))
    assert agent.deploy_and_wait(deployment("com.test.late"), [v1]).status == "succeeded"
    never_ready = recipe(
        "com.test.late",
        "1.1.0",
        argv=python_argv(sleeper),
        run={"health": {"check": f"tcp://127.0.0.1:{free_port()}", "interval": "100ms"}},
    )
    record = agent.deploy_and_wait(
        deployment(("com.test.late", "1.1.0"), timeout="1500ms"), [never_ready]
    )
    assert record.status == "rolled_back"
    assert record.error == "deadline of 1500ms exceeded"
    assert agent.wait_state("com.test.late", "RUNNING").version == "1.0.0"


def test_agent_backoff_defaults_apply_to_recipes_that_set_none(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    agent = agent_factory(config='[backoff]\ninitial = "10ms"\nmax_retries = 1\n').start()
    crasher = write_program(tmp_path / "crash.py", "import sys\nsys.exit(5)\n")
    r = recipe("com.test.budget", argv=python_argv(crasher), run={"restart_policy": "always"})
    agent.deploy(deployment("com.test.budget", failure_policy="do_nothing"), [r])
    record = agent.wait_state("com.test.budget", "FAILED")
    assert record.restarts == 1  # the agent's budget, not the recipe model's 10


def test_a_bad_backoff_table_in_agent_config_is_refused(
    agent_factory: Callable[..., Agent],
) -> None:
    agent = agent_factory(config='[backoff]\nintial = "1s"\n')
    result = subprocess.run(
        [str(Path(sys.executable).parent / "keystone-agent"), "--root", str(agent.root)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "agent.toml:2: backoff: unknown key `intial` (did you mean `initial`?)" in result.stderr
