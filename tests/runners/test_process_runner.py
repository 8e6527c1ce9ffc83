"""ProcessRunner with real processes: exits, signals, stop escalation, groups, run_as."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from keystone_edge.errors import ComponentError
from keystone_edge.runners.base import (
    ExitStatus,
    LaunchSpec,
    ScriptResult,
    ScriptSpec,
    split_run_as,
)
from keystone_edge.runners.logfile import RotatingLog
from keystone_edge.runners.process import ProcessRunner, install_child_watcher, resolve_run_as

from .conftest import ENV, NewLog, gone, read_pids, run

PY = sys.executable
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def launch(tmp_path: Path, argv: list[str], *, log: RotatingLog | None = None) -> LaunchSpec:
    return LaunchSpec(name="com.example.app", argv=argv, env=ENV, cwd=tmp_path, log=log)


def script(
    tmp_path: Path,
    text: str,
    timeout: float = 10.0,
    *,
    user: str | None = None,
    group: str | None = None,
    log: RotatingLog | None = None,
    label: str = "script",
) -> ScriptSpec:
    return ScriptSpec(
        name="com.example.app",
        script=text,
        cwd=tmp_path,
        env=ENV,
        timeout=timeout,
        user=user,
        group=group,
        log=log,
        label=label,
    )


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (ExitStatus(0), "exited with code 0"),
        (ExitStatus(3), "exited with code 3"),
        (ExitStatus(None, 9), "killed by signal 9 (SIGKILL)"),
        (ExitStatus(None, 15), "killed by signal 15 (SIGTERM)"),
        (ExitStatus(None, 77), "killed by signal 77"),
    ],
)
def test_exit_status_describes_itself(status: ExitStatus, text: str) -> None:
    assert status.describe() == text == str(status)
    assert ExitStatus.from_returncode(status.returncode) == status


def test_script_result_descriptions() -> None:
    assert ScriptResult(ExitStatus(None, 9), "", timed_out=True, timeout=300).describe() == (
        "timed out after 5m"
    )
    result = ScriptResult(ExitStatus(2), "first\nlast words\n\n")
    assert (result.describe(), result.last_line(), result.ok) == (
        "exited with code 2",
        "last words",
        False,
    )


def test_split_run_as() -> None:
    assert split_run_as(None) == (None, None)
    assert split_run_as("ks_user") == ("ks_user", None)
    assert split_run_as("ks_user:ks_group") == ("ks_user", "ks_group")


def test_exit_codes_and_signals_and_repr(tmp_path: Path) -> None:
    async def main() -> None:
        runner = ProcessRunner()
        proc = await runner.start(launch(tmp_path, ["/bin/sh", "-c", "read x; exit 3"]))
        assert repr(proc) == f"<Process 'com.example.app': running with PID {proc.pid}>"
        before = proc.returncode
        assert before is None
        # stdin is /dev/null: `read` hits EOF at once and the script goes on to exit 3.
        assert await proc.wait() == ExitStatus(3)
        assert proc.returncode == 3
        assert repr(proc) == f"<Process 'com.example.app': PID {proc.pid} exited with code 3>"

        proc = await runner.start(
            launch(tmp_path, [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"])
        )
        status = await proc.wait()
        assert status.describe() == "killed by signal 10 (SIGUSR1)"
        assert repr(proc).endswith("killed by signal 10 (SIGUSR1)>")

    run(main())


def test_the_child_gets_exactly_the_given_environment_and_directory(tmp_path: Path) -> None:
    result = run(ProcessRunner().run_script(script(tmp_path, "env | sort; pwd")))
    lines = result.output.splitlines()
    assert lines[-1] == str(tmp_path)
    env = dict(line.split("=", 1) for line in lines[:-1] if "=" in line)
    assert env.keys() - {"PWD", "SHLVL", "_"} == {"PATH", "LANG"}


def test_each_child_leads_its_own_process_group(tmp_path: Path) -> None:
    async def main() -> None:
        proc = await ProcessRunner().start(launch(tmp_path, ["sleep", "30"]))
        try:
            assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        finally:
            await proc.stop(1)

    run(main())


def test_stop_sends_sigterm_and_a_cooperative_child_exits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "keystone_edge.runners.process")

    async def main() -> ExitStatus:
        proc = await ProcessRunner().start(launch(tmp_path, ["sleep", "30"]))
        return await proc.stop(5)

    started = time.perf_counter()
    assert run(main()) == ExitStatus(None, signal.SIGTERM)
    assert time.perf_counter() - started < 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("sending SIGTERM to process group" in m for m in messages)
    assert not any("SIGKILL" in m for m in messages)


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_with_its_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_leftovers: list[int]
) -> None:
    caplog.set_level(logging.INFO, "keystone_edge.runners.process")
    pids = tmp_path / "pids"
    ready = tmp_path / "ready"
    # The leader and two grandchildren all ignore SIGTERM.
    body = (
        f"trap '' TERM; sleep 60 & echo $! >> {pids}; sleep 60 & echo $! >> {pids}; "
        f"touch {ready}; wait"
    )

    async def main() -> tuple[ExitStatus, float]:
        proc = await ProcessRunner().start(launch(tmp_path, ["/bin/sh", "-c", body]))
        async with asyncio.timeout(5):
            while not ready.exists():
                await asyncio.sleep(0.01)
        no_leftovers.extend([proc.pid, *read_pids(pids)])
        started = time.perf_counter()
        status = await proc.stop(0.3)
        return status, time.perf_counter() - started

    status, took = run(main())
    assert status == ExitStatus(None, signal.SIGKILL)
    assert 0.3 <= took < 2
    assert len(no_leftovers) == 3
    assert gone(*no_leftovers)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"com.example.app: process group {no_leftovers[0]} still running 300ms after SIGTERM; "
        "sending SIGKILL"
    ]


def test_when_the_leader_dies_the_rest_of_its_group_goes_too(
    tmp_path: Path, no_leftovers: list[int]
) -> None:
    pids = tmp_path / "pids"

    async def main() -> ExitStatus:
        proc = await ProcessRunner().start(
            launch(tmp_path, ["/bin/sh", "-c", f"sleep 60 & echo $! > {pids}; exit 4"])
        )
        return await proc.wait()

    assert run(main()) == ExitStatus(4)
    no_leftovers.extend(read_pids(pids))
    assert gone(*no_leftovers)


def test_script_output_tail_and_log_copy(tmp_path: Path, new_log: NewLog) -> None:
    log = new_log(tmp_path / "app.log", max_bytes=1 << 20, backups=1)
    text = (
        "i=0; while [ $i -lt 500 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; "
        "echo done >&2; exit 7"
    )
    result = run(ProcessRunner().run_script(script(tmp_path, text, log=log, label="install")))
    assert result.status == ExitStatus(7)
    assert not result.timed_out
    assert len(result.output.encode()) <= 4096
    assert result.output.endswith("line-499-xxxxxxxxxxxxxxxxxxxxxx\ndone\n")
    logged = (tmp_path / "app.log").read_text().splitlines()
    assert len(logged) == 501
    assert logged[0].endswith(" install line-0-xxxxxxxxxxxxxxxxxxxxxx")
    assert logged[-1].endswith(" install done")


def test_script_timeout_kills_the_whole_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_leftovers: list[int]
) -> None:
    pids = tmp_path / "pids"
    started = time.perf_counter()
    result = run(
        ProcessRunner().run_script(
            script(
                tmp_path,
                f"echo working; sleep 60 & echo $! > {pids}; sleep 60",
                timeout=0.25,
                label="install",
            )
        )
    )
    assert time.perf_counter() - started < 2
    assert result.timed_out
    assert result.describe() == "timed out after 250ms"
    assert result.status == ExitStatus(None, signal.SIGKILL)
    assert result.output == "working\n"
    no_leftovers.extend(read_pids(pids))
    assert gone(*no_leftovers)
    assert (
        "com.example.app: install script timed out after 250ms; killing its process group"
        in caplog.text
    )


def test_a_cancelled_script_is_killed(tmp_path: Path, no_leftovers: list[int]) -> None:
    pids = tmp_path / "pids"

    async def main() -> None:
        task = asyncio.create_task(
            ProcessRunner().run_script(script(tmp_path, f"echo $$ > {pids}; sleep 60"))
        )
        async with asyncio.timeout(5):
            while not pids.exists() or not pids.read_text():
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    no_leftovers.extend(read_pids(pids))
    assert gone(*no_leftovers)


def test_spawn_failures_are_component_errors(tmp_path: Path) -> None:
    runner = ProcessRunner()
    with pytest.raises(ComponentError) as info:
        run(runner.start(launch(tmp_path, ["./no-such-binary"])))
    assert (
        str(info.value) == "com.example.app: cannot start ./no-such-binary: "
        "No such file or directory: ./no-such-binary"
    )
    with pytest.raises(
        ComponentError, match="cannot start sleep: No such file or directory: /nope$"
    ):
        run(runner.start(LaunchSpec("com.example.app", ["sleep", "1"], ENV, Path("/nope"))))


def test_no_thread_per_child(tmp_path: Path) -> None:
    async def main() -> int:
        runner = ProcessRunner()
        before = threading.active_count()
        procs = [await runner.start(launch(tmp_path, ["sleep", "30"])) for _ in range(20)]
        during = threading.active_count()
        for proc in procs:
            await proc.stop(1)
        return during - before

    assert run(main()) == 0


def test_install_child_watcher_is_idempotent() -> None:
    assert install_child_watcher()
    assert install_child_watcher()
    if sys.version_info < (3, 12):
        assert isinstance(asyncio.get_child_watcher(), asyncio.PidfdChildWatcher)


def test_run_as_needs_root_unless_it_is_the_agent_itself() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    with pytest.raises(ComponentError) as info:
        resolve_run_as("nobody", euid=1000, egid=1000)
    assert (
        str(info.value)
        == "run_as nobody requires the agent to run as root; the agent runs as uid 1000"
    )
    with pytest.raises(
        ComponentError, match="^run_as nobody:nogroup requires the agent to run as root"
    ):
        resolve_run_as("nobody", "nogroup", euid=1000, egid=1000)
    nobody = pwd.getpwnam("nobody")
    assert resolve_run_as("nobody", euid=nobody.pw_uid, egid=nobody.pw_gid) is None
    assert resolve_run_as(None) is None
    assert me  # the agent's own name resolves, whatever it is


def test_run_as_unknown_user_or_group() -> None:
    with pytest.raises(
        ComponentError, match=r"^run_as ks_nobody_here: no such user 'ks_nobody_here'$"
    ):
        resolve_run_as("ks_nobody_here")
    with pytest.raises(
        ComponentError, match=r"^run_as nobody:ks_no_group: no such group 'ks_no_group'$"
    ):
        resolve_run_as("nobody", "ks_no_group")


def test_a_non_root_runner_refuses_to_switch_users(tmp_path: Path) -> None:
    runner = ProcessRunner(euid=1000)
    with pytest.raises(
        ComponentError, match="requires the agent to run as root; the agent runs as uid 1000"
    ):
        run(runner.run_script(script(tmp_path, "id -u", user="nobody")))


@needs_root
@pytest.mark.root
def test_run_as_switches_user_group_and_supplementary_groups(tmp_path: Path) -> None:
    result = run(
        ProcessRunner().run_script(
            script(
                tmp_path,
                'id -u; id -g; id -G; echo "$HOME $USER $LOGNAME"',
                user="nobody",
                group="nogroup",
            )
        )
    )
    assert result.ok, result.output
    uid, gid, groups, names = result.output.splitlines()
    nobody = pwd.getpwnam("nobody")
    assert (int(uid), int(gid)) == (nobody.pw_uid, 65534)
    assert set(groups.split()) == {str(g) for g in os.getgrouplist("nobody", 65534)}
    assert names == f"{nobody.pw_dir} nobody nobody"
