"""ProcessRunner with an isolation policy: the launcher path, its status pipe, what an exit
means (OOM, pids_limit) and the plain path for policies that change nothing.

Real processes; the tests that need cgroups, identity switches or namespaces run as root
and are skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from keystone_edge.errors import ComponentError
from keystone_edge.isolation import (
    IsolationPolicy,
    IsolationWarning,
    needs_launcher,
    policy_for,
    probe_host,
    script_policy,
)
from keystone_edge.isolation.caps import CAPABILITIES, read_capabilities
from keystone_edge.isolation.cgroups import CgroupWrite, procs
from keystone_edge.isolation.policy import FilePrep
from keystone_edge.recipe.model import Metadata, Recipe, Resources, Security
from keystone_edge.runners.base import ExitStatus, LaunchSpec, ScriptSpec
from keystone_edge.runners.process import Process, ProcessRunner
from keystone_edge.units import Size

from .conftest import ENV, run

PY = sys.executable
HOST = probe_host()
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups, setuid)")
needs_memory = pytest.mark.skipif(
    os.geteuid() != 0 or "memory" not in HOST.cgroup.controllers(),
    reason="needs root and a memory cgroup controller",
)
needs_pids = pytest.mark.skipif(
    os.geteuid() != 0 or "pids" not in HOST.cgroup.controllers(),
    reason="needs root and a pids cgroup controller",
)
needs_seccomp = pytest.mark.skipif(
    not HOST.seccomp or HOST.arch is None, reason="no seccomp filters on this host"
)
NAME = "com.example.app"


@pytest.fixture
def parent() -> Iterator[str]:
    """A cgroup parent of this test's own; nothing may be left in it afterwards."""
    name = f"keystone-test-{os.getpid()}"
    yield name
    for h in HOST.cgroup.hierarchies:
        left = Path(h.mount + h.own, name)
        assert not left.exists(), f"cgroup {left} left behind"


def recipe(*, security: Security | None = None, resources: Resources | None = None) -> Recipe:
    return Recipe(
        metadata=Metadata(name=NAME, version="1.0.0"),
        security=security or Security(),
        resources=resources or Resources(),
    )


def launch(tmp_path: Path, argv: list[str], policy: IsolationPolicy | None) -> LaunchSpec:
    return LaunchSpec(name=NAME, argv=argv, env=ENV, cwd=tmp_path, isolation=policy)


def status_of(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


# -- decisions (no processes) --------------------------------------------------------------


def test_needs_launcher_only_when_something_is_enforced() -> None:
    bare = IsolationPolicy(component="c", mode="best_effort", no_new_privileges=False)
    everything = tuple(sorted(CAPABILITIES))
    # Nothing to do: every capability kept, no no_new_privs, no seccomp.
    assert not needs_launcher(msgspec.structs.replace(bare, capabilities=everything))
    # no_new_privs, a seccomp filter, an identity or a limit each need the launcher.
    assert needs_launcher(
        msgspec.structs.replace(bare, capabilities=everything, no_new_privileges=True)
    )
    assert needs_launcher(bare) == (read_capabilities("self").effective != 0)
    privileged = msgspec.structs.replace(bare, privileged=True)
    assert not needs_launcher(privileged)
    tracking = policy_for(recipe(), privileged=True, cgroup_root="keystone-decide")
    assert not needs_launcher(tracking)  # a cgroup without limits only tracks
    limited = policy_for(
        recipe(resources=Resources(pids_limit=10)), privileged=True, cgroup_root="keystone-decide"
    )
    assert needs_launcher(limited) == (limited.cgroup is not None)


def test_script_policy_gets_a_cgroup_of_its_own_and_no_namespaces() -> None:
    policy = policy_for(recipe(resources=Resources(pids_limit=10)), cgroup_root="keystone-decide")
    policy = msgspec.structs.replace(
        policy, namespaces=msgspec.structs.replace(policy.namespaces, pid=True)
    )
    scoped = script_policy(policy, "install")
    assert not scoped.namespaces.any
    assert scoped.seccomp == policy.seccomp
    if policy.cgroup is not None:
        assert scoped.cgroup is not None
        assert scoped.cgroup.relpath == f"keystone-decide/{NAME}@install"
        assert all(d.path.endswith(f"/{NAME}@install") for d in scoped.cgroup.dirs)
        assert scoped.cgroup.limits == policy.cgroup.limits
    with pytest.raises(ValueError, match="invalid script label"):
        script_policy(policy, "../x")


def test_a_policy_that_changes_nothing_takes_the_plain_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_launcher(*_args: object, **_kwargs: object) -> list[str]:
        raise AssertionError("the launcher was used")

    monkeypatch.setattr("keystone_edge.isolation.wrap_argv", no_launcher)
    warning = IsolationWarning(control="security.run_as", message="kept the agent's user")
    policy = IsolationPolicy(
        component=NAME, mode="best_effort", privileged=True, warnings=(warning,)
    )

    async def main() -> tuple[ExitStatus, tuple[str, ...]]:
        proc = await ProcessRunner().start(launch(tmp_path, ["/bin/sh", "-c", "exit 5"], policy))
        return await proc.wait(), proc.warnings

    status, warnings = run(main())
    assert status == ExitStatus(5)
    # Controls the agent already knew it could not enforce are reported either way.
    assert warnings == ("security.run_as: kept the agent's user",)


def test_user_and_policy_together_are_refused(tmp_path: Path) -> None:
    spec = LaunchSpec(
        name=NAME,
        argv=["true"],
        env=ENV,
        cwd=tmp_path,
        user="nobody",
        isolation=IsolationPolicy(component=NAME, mode="strict"),
    )
    with pytest.raises(ComponentError, match="decided by the isolation policy"):
        run(ProcessRunner().start(spec))


# -- the launcher path ---------------------------------------------------------------------


@needs_seccomp
def test_the_workload_runs_under_the_policy(tmp_path: Path, parent: str) -> None:
    policy = policy_for(
        recipe(security=Security(capabilities=["CAP_NET_BIND_SERVICE"])), cgroup_root=parent
    )

    async def main() -> None:
        proc = await ProcessRunner().start(launch(tmp_path, ["sleep", "30"], policy))
        try:
            fields = status_of(proc.pid)
            assert fields["Seccomp"] == "2"
            assert fields["NoNewPrivs"] == "1"
            kept = 1 << CAPABILITIES["CAP_NET_BIND_SERVICE"] if os.geteuid() == 0 else 0
            assert int(fields["CapEff"], 16) == kept
            assert proc.warnings == ()
            # The launcher exec'd the workload itself: same PID, same process group.
            assert Path(f"/proc/{proc.pid}/cmdline").read_bytes() == b"sleep\x0030\x00"
            assert os.getpgid(proc.pid) == proc.pid
            if policy.cgroup is not None:
                assert procs(policy.cgroup) == {proc.pid}
        finally:
            status = await proc.stop(5)
        assert status == ExitStatus(None, signal.SIGTERM)
        if policy.cgroup is not None:
            assert not any(Path(d.path).exists() for d in policy.cgroup.dirs)

    run(main())


@root_only
def test_an_isolation_failure_is_a_component_error_with_the_launchers_message(
    tmp_path: Path, parent: str
) -> None:
    policy = policy_for(
        recipe(resources=Resources(pids_limit=10)), cgroup_root=parent, mode="strict"
    )
    if policy.cgroup is None or not any(d.writes for d in policy.cgroup.dirs):
        pytest.skip("no pids controller to write a bogus value to")
    bogus = CgroupWrite("resources.pids_limit", ("pids.max",), "bogus")
    dirs = tuple(
        msgspec.structs.replace(d, writes=(bogus,)) if d.writes else d for d in policy.cgroup.dirs
    )
    policy = msgspec.structs.replace(
        policy, cgroup=msgspec.structs.replace(policy.cgroup, dirs=dirs)
    )
    with pytest.raises(ComponentError) as caught:
        run(ProcessRunner().start(launch(tmp_path, ["sleep", "30"], policy)))
    message = str(caught.value)
    assert message.startswith(f"{NAME}: isolation failed: cannot write bogus to ")
    assert message.endswith("/pids.max: Invalid argument")
    assert caught.value.exit_code == 125
    assert not any(Path(d.path).exists() for d in dirs)  # cleaned up


@pytest.mark.parametrize(
    ("program", "code", "text"),
    [
        ("no-such-program-anywhere", 127, "no-such-program-anywhere: command not found"),
        ("{tmp}/data.txt", 126, "cannot execute {tmp}/data.txt: Permission denied"),
    ],
)
def test_exec_failures_come_from_the_status_pipe(
    tmp_path: Path, program: str, code: int, text: str
) -> None:
    (tmp_path / "data.txt").write_text("not a program\n")  # mode 0644: no exec bit
    policy = policy_for(recipe(), cgroup_root=f"keystone-test-{os.getpid()}")
    argv = [program.format(tmp=tmp_path)]
    with pytest.raises(ComponentError) as caught:
        run(ProcessRunner().start(launch(tmp_path, argv, policy)))
    assert str(caught.value) == f"{NAME}: {text.format(tmp=tmp_path)}"
    assert caught.value.exit_code == code


def test_a_warning_on_the_status_pipe_is_kept_on_the_process(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    policy = policy_for(recipe(), cgroup_root=f"keystone-test-{os.getpid()}")
    prep = FilePrep(path=str(tmp_path / "link" / "f"), create="file")
    policy = msgspec.structs.replace(policy, files=(prep,))

    async def main() -> tuple[str, ...]:
        proc = await ProcessRunner().start(launch(tmp_path, ["true"], policy))
        await proc.wait()
        return proc.warnings

    (warning,) = run(main())
    assert warning.startswith("permissions.files: ")
    assert warning.endswith("it goes through a symbolic link")
    assert not (tmp_path / "real" / "f").exists()


@needs_memory
def test_an_oom_kill_says_so(tmp_path: Path, parent: str) -> None:
    policy = policy_for(
        recipe(resources=Resources(memory_limit=Size.parse("32Mi"))), cgroup_root=parent
    )
    hog = "chunks = []\nwhile True:\n    chunks.append(b'x' * (4 << 20))\n"

    async def main() -> ExitStatus:
        proc = await ProcessRunner().start(launch(tmp_path, [PY, "-c", hog], policy))
        async with asyncio.timeout(30):
            return await proc.wait()

    status = run(main())
    assert status.signal == signal.SIGKILL
    assert status.oom_killed
    assert status.detail == status.describe() == "killed by the OOM killer (memory_limit 32Mi)"
    assert not status.ok


@needs_pids
def test_forks_refused_by_pids_limit_are_named_in_the_exit(tmp_path: Path, parent: str) -> None:
    policy = policy_for(recipe(resources=Resources(pids_limit=3)), cgroup_root=parent)
    forker = (
        "import os, time\nfor _ in range(10):\n    if os.fork() == 0:\n        time.sleep(60)\n"
    )

    async def main() -> ExitStatus:
        proc = await ProcessRunner().start(launch(tmp_path, [PY, "-c", forker], policy))
        return await proc.wait()

    status = run(main())
    assert status.code == 1
    assert status.pids_limit_hits >= 1
    assert status.describe().startswith("exited with code 1 (forks refused ")
    assert status.describe().endswith("pids_limit 3 reached)")


@root_only
def test_a_script_runs_through_the_launcher_as_the_components_user(
    tmp_path: Path, parent: str
) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    tmp_path.chmod(0o755)
    policy = script_policy(
        policy_for(recipe(security=Security(run_as="nobody")), cgroup_root=parent), "install"
    )
    spec = ScriptSpec(
        name=NAME, script="id -un; echo $HOME", cwd=tmp_path, env=ENV, timeout=10, isolation=policy
    )
    result = run(ProcessRunner().run_script(spec))
    assert result.ok, result.output
    assert result.output.split() == ["nobody", nobody.pw_dir]


def test_process_repr_and_returncode_after_an_isolated_exit(tmp_path: Path) -> None:
    policy = policy_for(recipe(), cgroup_root=f"keystone-test-{os.getpid()}")

    async def main() -> Process:
        proc = await ProcessRunner().start(launch(tmp_path, ["/bin/sh", "-c", "exit 3"], policy))
        await proc.wait()
        return proc

    proc = run(main())
    assert proc.returncode == 3
    assert repr(proc) == f"<Process '{NAME}': PID {proc.pid} exited with code 3>"
