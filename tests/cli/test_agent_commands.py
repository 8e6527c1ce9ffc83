"""keystonectl component / deploy / events against a live API server: output and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keystone_edge.cli.component import local_time
from tests.api.harness import ServerThread
from tests.cli.conftest import Ctl


@pytest.fixture
def hello(server: ServerThread) -> str:
    server.call(server.agent.add_component, "com.example.hello")
    return "com.example.hello"


def _rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip()]


# -- unreachable agent ------------------------------------------------------------------


def test_an_agent_that_is_not_running_exits_3_with_a_hint(tmp_path: Path) -> None:
    ctl = Ctl(tmp_path / "agent.sock")
    for args in (("component", "list"), ("deploy", "list"), ("events",)):
        result = ctl(*args)
        assert result.exit_code == 3, args
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: cannot reach the agent at {ctl.socket_path}: ")
        assert "\nhint: is keystone-agent running?" in result.stderr


# -- component ----------------------------------------------------------------------------


def test_component_list_table_and_json(ctl: Ctl, server: ServerThread, hello: str) -> None:
    server.call(server.agent.add_component, "com.example.db", state="FAILED")
    server.call(server.agent.transition, "com.example.db", "FAILED", "retries exhausted")
    result = ctl("component", "list")
    assert result.exit_code == 0
    rows = _rows(result.stdout)
    assert rows[0] == ["NAME", "VERSION", "STATE", "PID", "RESTARTS", "SINCE", "REASON"]
    assert rows[1][:5] == ["com.example.db", "1.0.0", "FAILED", "-", "0"]
    assert rows[1][6:] == ["retries", "exhausted"]
    assert rows[2][:5] == ["com.example.hello", "1.0.0", "RUNNING", "4242", "0"]

    result = ctl("component", "list", "-o", "json")
    assert result.exit_code == 0
    assert [(c["name"], c["state"]) for c in json.loads(result.stdout)] == [
        ("com.example.db", "FAILED"),
        ("com.example.hello", "RUNNING"),
    ]
    # The global -o works too.
    assert json.loads(ctl("-o", "json", "component", "list").stdout)[0]["name"] == (
        "com.example.db"
    )


def test_component_list_when_empty(ctl: Ctl) -> None:
    assert ctl("component", "list").stdout == "no components\n"


def test_component_status(ctl: Ctl, server: ServerThread, hello: str) -> None:
    server.call(server.agent.transition, hello, "RUNNING", "restarted", last_signal=9)
    result = ctl("component", "status", hello)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:11] == [
        "name:       com.example.hello",
        "version:    1.0.0",
        "state:      RUNNING (ready)",
        "pid:        4242",
        "uptime:     12.5s",
        "restarts:   0",
        "last exit:  signal 9 (SIGKILL)",
        "reason:     restarted",
        "deployment: -",
        "health:     ok: 200 OK (3ms)",
        'config:     {"message":"hi"}',
    ]
    assert lines[12] == "recent transitions (oldest first):"
    assert lines[13].split() == ["TIME", "FROM", "TO", "REASON"]
    detail = json.loads(ctl("component", "status", hello, "-o", "json").stdout)
    assert detail["component"]["last_signal"] == 9
    assert [t["reason"] for t in detail["transitions"]] == ["deployed", "restarted"]


def test_component_not_found_exits_4(ctl: Ctl) -> None:
    for args in (("status", "com.example.nope"), ("restart", "com.example.nope")):
        result = ctl("component", *args)
        assert result.exit_code == 4
        assert result.stderr == "error: no component named 'com.example.nope'\n"


def test_component_actions(ctl: Ctl, hello: str) -> None:
    result = ctl("component", "stop", hello)
    assert (result.exit_code, result.stdout) == (0, "stopped com.example.hello: STOPPED\n")
    result = ctl("component", "start", hello)
    assert result.stdout == "started com.example.hello: RUNNING, pid 5151\n"
    result = ctl("component", "restart", hello, "-o", "json")
    record = json.loads(result.stdout)
    assert (record["state"], record["pid"], record["restarts"]) == ("RUNNING", 6161, 1)


def test_component_action_in_the_wrong_state(ctl: Ctl, hello: str) -> None:
    ctl("component", "stop", hello)
    result = ctl("component", "stop", hello)
    assert result.exit_code != 0
    assert result.stderr == ("error: com.example.hello: event stop is not valid in state STOPPED\n")


def test_component_logs(ctl: Ctl, server: ServerThread, hello: str) -> None:
    log = server.agent.log_dir / f"{hello}.log"
    log.write_text("".join(f"2026-01-01T00:00:00.000Z out line {n}\n" for n in range(5)))
    result = ctl("component", "logs", hello, "--tail", "2")
    assert (result.exit_code, result.stdout) == (
        0,
        "2026-01-01T00:00:00.000Z out line 3\n2026-01-01T00:00:00.000Z out line 4\n",
    )
    result = ctl("component", "logs", hello, "--tail", "1", "-o", "json")
    assert json.loads(result.stdout) == {
        "component": hello,
        "line": "2026-01-01T00:00:00.000Z out line 4",
    }
    assert ctl("component", "logs", hello, "--tail", "10001").exit_code == 2


class Follower:
    """keystonectl in its own process, for commands that run until stopped (``-f``)."""

    def __init__(self, socket_path: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from keystone_edge.cli import main; main()",
                "--socket",
                str(socket_path),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def finish(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=15)
        return self.process.returncode, out, err


def test_logs_follow_prints_new_lines_and_exits_3_when_the_agent_stops(
    server: ServerThread, hello: str
) -> None:
    log = server.agent.log_dir / f"{hello}.log"
    log.write_text("old\n")
    follower = Follower(server.socket_path, "component", "logs", hello, "-f", "--tail", "1")
    assert follower.line() == "old\n"
    with log.open("a") as file:
        file.write("new 1\nnew 2\n")
    assert [follower.line(), follower.line()] == ["new 1\n", "new 2\n"]
    server.stop()
    code, out, err = follower.finish()
    assert (code, out) == (3, "")
    assert err.startswith(f"error: the agent at {server.socket_path} closed the log stream\n")


# -- deployments --------------------------------------------------------------------------


def _recipes(root: Path, *names: str) -> Path:
    directory = root / "recipes"
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / f"{name}.recipe.toml").write_text(
            textwrap.dedent(
                f"""\
                [metadata]
                name = "{name}"
                version = "1.0.0"

                [lifecycle.run.exec]
                command = "/bin/true"
                """
            )
        )
    return directory


def _document(root: Path, deployment_id: str, *names: str) -> Path:
    path = root / f"{deployment_id}.toml"
    body = f'[deployment]\nid = "{deployment_id}"\n'
    for name in names:
        body += f'\n[components."{name}"]\nversion = "1.0.0"\n'
    path.write_text(body)
    return path


def test_deploy_apply_prints_the_id(ctl: Ctl, server: ServerThread, tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, "com.example.hello")
    document = _document(tmp_path, "d1", "com.example.hello")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    result = ctl(
        "deploy", "apply", "-f", str(document), "--recipes", str(recipes),
        "--artifacts", str(artifacts),
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (0, "d1\n")
    stored = server.call(server.agent.store.deployment_document, "d1")
    assert stored == {
        "deployment": {"id": "d1", "timeout": "10m"},
        "components": {"com.example.hello": {"version": "1.0.0"}},
    }


def test_deploy_apply_wait_succeeds(ctl: Ctl, tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, "com.example.hello")
    document = _document(tmp_path, "d1", "com.example.hello")
    result = ctl("deploy", "apply", "-f", str(document), "--recipes", str(recipes), "--wait")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "deployment d1 queued"
    steps = [line.split()[:3] for line in lines[1:-1]]
    assert steps == [
        [component, step, status]
        for step in ("fetch", "install", "start-new", "ready")
        for component, status in (("com.example.hello", "done"),)
    ]
    assert lines[-1].startswith("deployment d1 succeeded in ")


def test_deploy_apply_wait_draws_a_live_table_on_a_terminal(ctl: Ctl, tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, "com.example.hello")
    document = _document(tmp_path, "d1", "com.example.hello")
    result = ctl(
        "deploy", "apply", "-f", str(document), "--recipes", str(recipes), "--wait",
        env={"TTY_COMPATIBLE": "1"},  # rich: treat the output as a terminal
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout  # cursor movement: the table was redrawn in place
    assert "deployment d1: succeeded" in result.stdout
    assert "COMPONENT" in result.stdout
    assert "\x1b[?25hdeployment d1 succeeded in " in result.stdout  # cursor shown again


def test_deploy_apply_wait_failure_exits_1_with_the_step_error(ctl: Ctl, tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, "com.example.bad")
    document = _document(tmp_path, "d2", "com.example.bad")
    result = ctl(
        "deploy", "apply", "-f", str(document), "--recipes", str(recipes), "--wait"
    )  # fmt: skip
    assert result.exit_code == 1
    assert "  com.example.bad  install  failed" in result.stdout
    assert result.stderr == (
        "deployment d2 rolled_back\n"
        "  step install of com.example.bad failed: install script exited with code 3\n"
        "  error: com.example.bad: install script exited with code 3\n"
    )


def test_deploy_apply_wait_json(ctl: Ctl, tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, "com.example.hello")
    document = _document(tmp_path, "d1", "com.example.hello")
    result = ctl(
        "deploy", "apply", "-f", str(document), "--recipes", str(recipes), "--wait", "-o", "json"
    )  # fmt: skip
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert (record["id"], record["status"], len(record["steps"])) == ("d1", "succeeded", 4)


def test_deploy_apply_wait_timeout(ctl: Ctl, server: ServerThread, tmp_path: Path) -> None:
    server.agent.step_gate = server.call(asyncio.Event)  # never set: the deployment stalls
    recipes = _recipes(tmp_path, "com.example.hello")
    document = _document(tmp_path, "d1", "com.example.hello")
    result = ctl(
        "deploy", "apply", "-f", str(document), "--recipes", str(recipes), "--wait",
        "--timeout", "1s",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr == (
        "error: gave up waiting for deployment d1 after 1.0s; it is still queued\n"
        "hint: follow it with `keystonectl deploy status d1`\n"
    )
    assert ctl("deploy", "apply", "-f", str(document), "--timeout", "soon").exit_code == 2


def test_deploy_apply_reports_local_mistakes_before_contacting_the_agent(
    tmp_path: Path,
) -> None:
    ctl = Ctl(tmp_path / "no-agent.sock")  # reaching for the agent would exit 3
    bad_document = tmp_path / "bad.toml"
    bad_document.write_text('[components."com.example.hello"]\nversoin = "1.0.0"\n')
    result = ctl("deploy", "apply", "-f", str(bad_document))
    assert result.exit_code == 1  # the document is bad, like a bad recipe
    assert result.stderr.startswith(f"error: {bad_document}:2: ")
    assert "versoin" in result.stderr

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "x.recipe.toml").write_text('[metadata]\nname = "Not Valid"\n')
    document = _document(tmp_path, "d1", "com.example.hello")
    result = ctl("deploy", "apply", "-f", str(document), "--recipes", str(recipes))
    assert result.exit_code == 1
    assert "x.recipe.toml" in result.stderr


def test_deploy_list_status_cancel(ctl: Ctl, server: ServerThread, tmp_path: Path) -> None:
    recipes = _recipes(tmp_path, "com.example.hello", "com.example.bad")
    ok = _document(tmp_path, "d1", "com.example.hello")
    bad = _document(tmp_path, "d2", "com.example.bad")
    assert ctl("deploy", "apply", "-f", str(ok), "--recipes", str(recipes), "--wait").exit_code == 0
    assert ctl("deploy", "apply", "-f", str(bad), "--recipes", str(recipes), "--wait").exit_code
    rows = _rows(ctl("deploy", "list").stdout)
    assert rows[0] == ["ID", "STATUS", "CREATED", "DURATION", "COMPONENTS"]
    assert [(r[0], r[1], r[-1]) for r in rows[1:]] == [
        ("d2", "rolled_back", "com.example.bad@1.0.0"),
        ("d1", "succeeded", "com.example.hello@1.0.0"),
    ]
    assert [d["id"] for d in json.loads(ctl("deploy", "list", "-o", "json").stdout)] == [
        "d2",
        "d1",
    ]

    result = ctl("deploy", "status", "d1")
    assert result.exit_code == 0
    record = server.call(server.agent.store.deployment, "d1")
    lines = result.stdout.splitlines()
    assert lines[:2] == ["id:          d1", "status:      succeeded"]
    assert f"created:     {local_time(record.created_at)}" in lines
    assert "components:  com.example.hello@1.0.0" in lines
    table = _rows("\n".join(lines[lines.index("") + 1 :]))
    assert table[0] == ["#", "COMPONENT", "STEP", "STATUS", "STARTED", "DURATION", "ERROR"]
    assert [row[1:4] for row in table[1:]] == [
        ["com.example.hello", step, "done"] for step in ("fetch", "install", "start-new", "ready")
    ]

    result = ctl("deploy", "status", "d2")
    assert result.exit_code == 1  # rolled back: scripts can test it
    assert "install script exited with code 3" in result.stdout

    assert ctl("deploy", "status", "nope").exit_code == 4

    result = ctl("deploy", "cancel", "d1")
    assert result.exit_code == 5
    assert result.stderr == (
        "error: deployment d1 is succeeded; only queued or running deployments can be cancelled\n"
    )


def test_deploy_cancel(ctl: Ctl, server: ServerThread, tmp_path: Path) -> None:
    server.agent.step_gate = server.call(asyncio.Event)
    recipes = _recipes(tmp_path, "com.example.hello")
    document = _document(tmp_path, "d1", "com.example.hello")
    ctl("deploy", "apply", "-f", str(document), "--recipes", str(recipes))
    result = ctl("deploy", "cancel", "d1")
    assert (result.exit_code, result.stdout) == (0, "deployment d1: cancelled\n")


# -- events -------------------------------------------------------------------------------


def test_events_lines_and_json(ctl: Ctl, server: ServerThread, hello: str) -> None:
    event = server.publish("deployment.step", deployment_id="d1", step="fetch", error="a b")
    result = ctl("events", "--since", "1")
    assert result.exit_code == 0
    assert result.stdout == (
        f'{local_time(event.ts)}  #2  deployment.step  deployment_id=d1 step=fetch error="a b"\n'
    )
    lines = ctl("events", "-o", "json").stdout.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["component.state", "deployment.step"]


def test_events_follow_exits_3_when_the_agent_stops(server: ServerThread, hello: str) -> None:
    follower = Follower(server.socket_path, "events", "-f", "--since", "0")
    assert follower.line().split()[3] == "component.state"
    server.publish("live", n=1)
    assert follower.line().split()[3:] == ["live", "n=1"]
    server.stop()
    code, out, err = follower.finish()
    assert (code, out) == (3, "")
    assert err == (
        f"error: the agent at {server.socket_path} closed the event stream\n"
        "hint: the agent is stopping or restarting; resume with --since 2\n"
    )
