"""Least privilege end to end: a real agent (as root) enforcing recipes' security and
resources sections through the isolation launcher, on this host's cgroups.

Every agent here lives in a root below a world-traversable temporary directory (not
pytest's 0700 ``tmp_path``), so that what a ``run_as`` component cannot read is denied by
the agent's own permissions, not by a parent directory it never reaches.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from keystone_edge.isolation import probe_host
from keystone_edge.isolation.caps import CAPABILITIES
from tests.e2e.harness import Agent, deployment, recipe, wait_for, write_program

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs an agent running as root"),
]

PY = sys.executable
HOST = probe_host()
needs_memory_cgroup = pytest.mark.skipif(
    "memory" not in HOST.cgroup.controllers(), reason="no memory cgroup controller on this host"
)
needs_pids_cgroup = pytest.mark.skipif(
    "pids" not in HOST.cgroup.controllers(), reason="no pids cgroup controller on this host"
)
needs_seccomp = pytest.mark.skipif(
    not HOST.seccomp or HOST.arch is None, reason="no seccomp filters on this host"
)
needs_nobody = pytest.mark.skipif(
    not any(p.pw_name == "nobody" for p in pwd.getpwall()), reason="no user 'nobody'"
)


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="keystone-isolation-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    _kill_leftovers(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent_at(base: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(config: str | None = None, name: str = "root") -> Agent:
        root = base / name
        if config is not None:
            (root / "etc").mkdir(parents=True, exist_ok=True)
            (root / "etc" / "agent.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTONE_")}
        agent = Agent(root=root, env=env)
        agents.append(agent)
        return agent.start()

    yield make
    for agent in agents:
        if agent.proc is not None and agent.proc.poll() is None:
            try:
                agent.stop(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.proc.pid, signal.SIGKILL)


def _kill_leftovers(base: Path) -> None:
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("KEYSTONE_ROOT", "").startswith(str(base)):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def program(base: Path, name: str, source: str) -> list[str]:
    """A Python workload run by this interpreter (components running as root only)."""
    bin_dir = base / "bin"
    bin_dir.mkdir(exist_ok=True)
    return [PY, str(write_program(bin_dir / name, source))]


def events(agent: Agent, type_: str, component: str | None = None) -> list[dict[str, Any]]:
    with agent.client() as client:
        got = client.events(since=0)
    return [
        {"id": e.id, **e.payload}
        for e in got
        if e.type == type_ and (component is None or e.payload.get("component") == component)
    ]


def result(agent: Agent, component: str, name: str = "result.json") -> Any:
    """What a component wrote into its work directory (waiting for it to appear)."""
    path = agent.root / "runtime" / "work" / component / name
    wait_for(path.exists, what=f"{component} to write {name}")
    return json.loads(path.read_text())


# Writes a JSON document atomically into the component's work directory.
REPORT = """
import json, os
def report(data, name="result.json"):
    work = os.environ["KEYSTONE_WORK_PATH"]
    with open(os.path.join(work, name + ".tmp"), "w") as f:
        json.dump(data, f)
    os.replace(os.path.join(work, name + ".tmp"), os.path.join(work, name))
"""


# -- resources -----------------------------------------------------------------------------


@needs_memory_cgroup
def test_oom_kill_is_reported_and_counts_as_a_failure(
    agent_at: Callable[..., Agent], base: Path
) -> None:
    hog = program(
        base,
        "hog.py",
        # Bytes written, not just mapped: the pages count against the limit.
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (8 << 20))\n",
    )
    r = recipe(
        "com.test.hog",
        argv=hog,
        run={
            "restart_policy": "on-failure",
            "backoff": {"initial": "10ms", "max_retries": 1, "reset_after": "1h"},
        },
        resources={"memory_limit": "64Mi"},
    )
    agent = agent_at()
    agent.deploy(deployment("com.test.hog", failure_policy="do_nothing"), [r])
    record = agent.wait_state("com.test.hog", "FAILED", timeout=60)
    # Restarted once (the policy saw a failure), then the budget ran out.
    assert record.restarts == 1
    assert record.last_signal == signal.SIGKILL
    assert "killed by the OOM killer (memory_limit 64Mi)" in record.reason
    ooms = events(agent, "component.oom", "com.test.hog")
    assert len(ooms) == 2
    assert ooms[0]["reason"] == "killed by the OOM killer (memory_limit 64Mi)"
    assert ooms[0]["memory_limit"] == "64Mi"
    states = events(agent, "component.state", "com.test.hog")
    restart = next(e for e in states if e["trigger"] == "RESTART_SCHEDULED")
    assert restart["reason"].startswith("killed by the OOM killer (memory_limit 64Mi)")
    assert restart["id"] > ooms[0]["id"]  # the cause is published before the consequence


@needs_pids_cgroup
def test_forking_past_pids_limit_fails_and_is_reported(
    agent_at: Callable[..., Agent], base: Path
) -> None:
    forker = program(
        base,
        "forker.py",
        "import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        time.sleep(3600)\n",
    )
    r = recipe(
        "com.test.forker",
        argv=forker,
        run={"restart_policy": "never"},
        resources={"pids_limit": 4},
    )
    agent = agent_at()
    agent.deploy(deployment("com.test.forker", failure_policy="do_nothing"), [r])
    record = agent.wait_state("com.test.forker", "FAILED", timeout=30)
    assert record.last_exit_code == 1  # BlockingIOError: fork refused
    assert "pids_limit 4 reached" in record.reason, record.reason
    hits = events(agent, "component.pids_limit", "com.test.forker")
    assert hits
    assert hits[0]["pids_limit"] == 4
    assert hits[0]["refused_forks"] >= 1
    # The children it did fork went with it: nothing of the component is left.
    assert not [
        p for p in psutil.process_iter() if _env(p).get("KEYSTONE_COMPONENT") == "com.test.forker"
    ]


@pytest.mark.skipif("cpu" not in HOST.cgroup.controllers(), reason="no cpu cgroup controller")
def test_cpu_quota_caps_a_busy_loop(agent_at: Callable[..., Agent], base: Path) -> None:
    spin = program(base, "spin.py", "while True:\n    pass\n")
    r = recipe("com.test.spin", argv=spin, resources={"cpu_quota": 20})
    agent = agent_at()
    assert agent.deploy_and_wait(deployment("com.test.spin"), [r]).status == "succeeded"
    record = agent.wait_state("com.test.spin", "RUNNING")
    assert record.pid is not None
    proc = psutil.Process(record.pid)
    before, started = proc.cpu_times(), time.monotonic()
    time.sleep(2.0)
    after, elapsed = proc.cpu_times(), time.monotonic() - started
    share = (after.user + after.system - before.user - before.system) / elapsed
    # 20% of one CPU (CFS period 100 ms); unconfined it would take a whole core.
    assert 0.05 < share < 0.3, share


def _env(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return {}


# -- identity, capabilities, seccomp, namespaces -------------------------------------------


@needs_nobody
def test_run_as_nobody_cannot_read_the_agents_state(
    agent_at: Callable[..., Agent], base: Path
) -> None:
    agent = agent_at()
    root = agent.root
    # The agent's own directories are closed to other users.
    assert stat.S_IMODE((root / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "etc").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "logs").stat().st_mode) == 0o750
    script = (
        'try() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }\n'
        'db=$(try cat "$KEYSTONE_ROOT/state/keystone.db")\n'
        'config=$(try ls "$KEYSTONE_ROOT/etc")\n'
        'own=$(try cat "$KEYSTONE_ARTIFACTS_PATH/../recipe.json")\n'
        'printf \'{"user": "%s", "db": "%s", "etc": "%s", "own_recipe": "%s"}\' '
        '"$(id -un)" "$db" "$config" "$own" > "$KEYSTONE_WORK_PATH/result.json"\n'
        "exec sleep 3600\n"
    )
    r = recipe(
        "com.test.nobody",
        script=script,
        security={"run_as": "nobody"},
        install={"script": 'id -un > "$KEYSTONE_WORK_PATH/installed-by"'},
    )
    assert agent.deploy_and_wait(deployment("com.test.nobody"), [r]).status == "succeeded"
    found = result(agent, "com.test.nobody")
    assert found == {"user": "nobody", "db": "no", "etc": "no", "own_recipe": "yes"}
    work = root / "runtime" / "work" / "com.test.nobody"
    nobody = pwd.getpwnam("nobody")
    assert work.stat().st_uid == nobody.pw_uid  # the component owns its work dir
    # The install script ran through the launcher as that user too.
    assert (work / "installed-by").read_text().strip() == "nobody"
    assert (work / "installed-by").stat().st_uid == nobody.pw_uid


def _caps(status: str) -> dict[str, int]:
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {k: int(fields[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")} | {
        "NoNewPrivs": int(fields["NoNewPrivs"]),
        "Seccomp": int(fields["Seccomp"]),
    }


@needs_nobody
def test_capabilities_are_really_dropped(agent_at: Callable[..., Agent]) -> None:
    dump = 'cat /proc/self/status > "$KEYSTONE_WORK_PATH/status.txt"; exec sleep 3600'
    bind = 1 << CAPABILITIES["CAP_NET_BIND_SERVICE"]
    agent = agent_at()
    recipes = [
        recipe(
            "com.test.rootcaps", script=dump, security={"capabilities": ["CAP_NET_BIND_SERVICE"]}
        ),
        recipe(
            "com.test.usercaps",
            script=dump,
            security={"run_as": "nobody", "capabilities": ["CAP_NET_BIND_SERVICE"]},
        ),
    ]
    doc = deployment("com.test.rootcaps", "com.test.usercaps")
    assert agent.deploy_and_wait(doc, recipes).status == "succeeded"
    for name in ("com.test.rootcaps", "com.test.usercaps"):
        path = agent.root / "runtime" / "work" / name / "status.txt"

        def written(p: Path = path) -> bool:
            return p.exists() and p.stat().st_size > 0

        wait_for(written, what=f"{name}'s status")
        caps = _caps(path.read_text())
        # Only the kept capability, in every set; CAP_SYS_ADMIN and friends are gone.
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == bind, (name, caps)
        assert not caps["CapEff"] >> CAPABILITIES["CAP_SYS_ADMIN"] & 1
        assert caps["NoNewPrivs"] == 1
        assert caps["Seccomp"] == 2  # filter mode: the default profile
    # A non-root user keeps it through exec as an ambient capability.
    user = _caps((agent.root / "runtime/work/com.test.usercaps/status.txt").read_text())
    assert user["CapAmb"] == bind


KEYCTL = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
# keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0): harmless, allowed to anyone
got = libc.syscall({number}, 0, -3, 0)
report({{"result": got, "errno": errno.errorcode.get(ctypes.get_errno(), "0") if got < 0 else ""}})
import time
time.sleep(3600)
"""


@needs_seccomp
def test_default_seccomp_profile_denies_keyctl_with_eperm(
    agent_at: Callable[..., Agent], base: Path
) -> None:
    from keystone_edge.isolation._syscalls import SYSCALLS

    assert HOST.arch is not None
    argv = program(base, "keyctl.py", REPORT + KEYCTL.format(number=SYSCALLS[HOST.arch]["keyctl"]))
    agent = agent_at()
    recipes = [
        # Any isolation request brings the least-privilege defaults; here, explicitly.
        recipe("com.test.confined", argv=argv, security={"seccomp_profile": "default"}),
        recipe("com.test.unconfined", argv=argv, security={"seccomp_profile": "unconfined"}),
    ]
    doc = deployment("com.test.confined", "com.test.unconfined")
    assert agent.deploy_and_wait(doc, recipes).status == "succeeded"
    assert result(agent, "com.test.confined") == {"result": -1, "errno": "EPERM"}
    assert result(agent, "com.test.unconfined")["result"] > 0  # the same call, allowed


def test_pid_namespace_hides_host_processes(agent_at: Callable[..., Agent], base: Path) -> None:
    argv = program(
        base,
        "ps.py",
        REPORT + "import os, time\n"
        "report({'pid': os.getpid(), 'visible': sorted(int(p) for p in os.listdir('/proc') "
        "if p.isdigit())})\n"
        "time.sleep(3600)\n",
    )
    config = '[isolation.namespaces]\n"com.test.pidns" = ["pid"]\n'
    agent = agent_at(config)
    r = recipe("com.test.pidns", argv=argv)
    assert agent.deploy_and_wait(deployment("com.test.pidns"), [r]).status == "succeeded"
    found = result(agent, "com.test.pidns")
    # The launcher's init is PID 1, the workload PID 2; the agent, pytest and everything
    # else on the host are invisible.
    assert found == {"pid": 2, "visible": [1, 2]}
    assert len(psutil.pids()) > 10  # while the host has plenty
    # Stopping works through the relay: SIGTERM reaches the workload, nothing is left.
    record = agent.component("com.test.pidns")
    relay = record.pid
    assert relay is not None
    assert agent.ctl("component", "stop", "com.test.pidns").returncode == 0
    agent.wait_state("com.test.pidns", "STOPPED")
    assert not psutil.pid_exists(relay) or psutil.Process(relay).status() == "zombie"


# -- strict and best effort ----------------------------------------------------------------

needs_no_apparmor = pytest.mark.skipif(
    HOST.apparmor, reason="AppArmor is enabled here: the unavailable control must be another"
)


@needs_no_apparmor
def test_strict_mode_fails_the_deployment_with_the_reason(agent_at: Callable[..., Agent]) -> None:
    agent = agent_at('[isolation]\nmode = "strict"\n')
    r = recipe(
        "com.test.strict",
        script="exec sleep 3600",
        security={"apparmor_profile": "keystone-test"},
    )
    record = agent.deploy_and_wait(deployment("com.test.strict"), [r])
    assert record.status in ("failed", "rolled_back"), record
    assert record.error is not None
    assert "isolation cannot be enforced on this host" in record.error
    assert "security.apparmor_profile: AppArmor is not enabled on this host" in record.error
    step = next(s for s in record.steps if s.status == "failed")
    assert step.name == "start-new"
    failed = [
        e
        for e in events(agent, "component.state", "com.test.strict")
        if e["trigger"] == "SPAWN_FAILED"
    ]
    assert len(failed) == 1  # refused once, not a crash loop
    assert failed[0]["to_state"] == "FAILED"
    assert "AppArmor is not enabled" in failed[0]["reason"]


def test_a_launcher_failure_is_a_failed_start_not_a_crash_loop(
    agent_at: Callable[..., Agent], base: Path
) -> None:
    # Only the launcher finds out: it refuses to chown a path that goes through a symlink
    # (a component could redirect it to any file); strict mode makes that fatal.
    (base / "real").mkdir()
    (base / "link").symlink_to(base / "real")
    agent = agent_at('[isolation]\nmode = "strict"\n')
    r = recipe(
        "com.test.symlink",
        script="exec sleep 3600",
        run={"restart_policy": "always"},
        permissions={"files": [{"path": str(base / "link" / "data.txt"), "mode": "0600"}]},
    )
    record = agent.deploy_and_wait(deployment("com.test.symlink"), [r])
    assert record.status in ("failed", "rolled_back"), record
    assert record.error is not None
    assert "com.test.symlink: isolation failed: " in record.error
    assert "it goes through a symbolic link" in record.error
    states = events(agent, "component.state", "com.test.symlink")
    triggers = [e["trigger"] for e in states]
    assert triggers.count("SPAWN_FAILED") == 1
    assert "RESTART_SCHEDULED" not in triggers
    assert not (base / "real" / "data.txt").exists()


def test_a_launcher_warning_in_best_effort_mode_is_recorded(
    agent_at: Callable[..., Agent], base: Path
) -> None:
    (base / "real").mkdir()
    (base / "link").symlink_to(base / "real")
    agent = agent_at()
    r = recipe(
        "com.test.symlink",
        script="exec sleep 3600",
        permissions={"files": [{"path": str(base / "link" / "data.txt")}]},
    )
    assert agent.deploy_and_wait(deployment("com.test.symlink"), [r]).status == "succeeded"
    (warned,) = events(agent, "component.isolation", "com.test.symlink")
    (warning,) = warned["warnings"]
    assert warning.startswith("permissions.files: ")
    assert warning.endswith("it goes through a symbolic link")


@needs_no_apparmor
def test_best_effort_runs_and_records_the_warning_once_per_version(
    agent_at: Callable[..., Agent],
) -> None:
    agent = agent_at()  # best_effort is the default
    r = recipe(
        "com.test.lenient",
        script="exec sleep 3600",
        security={"apparmor_profile": "keystone-test"},
    )
    assert agent.deploy_and_wait(deployment("com.test.lenient"), [r]).status == "succeeded"
    first = agent.wait_state("com.test.lenient", "RUNNING")
    assert first.pid is not None
    warned = events(agent, "component.isolation", "com.test.lenient")
    assert len(warned) == 1
    assert warned[0]["level"] == "warning"
    assert warned[0]["version"] == "1.0.0"
    (warning,) = warned[0]["warnings"]
    assert warning.startswith("security.apparmor_profile: AppArmor is not enabled")
    with agent.client() as client:
        assert client.health()["isolation_warnings"] == {"com.test.lenient": [warning]}
    # A restart of the same version does not repeat it.
    os.kill(first.pid, signal.SIGKILL)
    wait_for(
        lambda: agent.component("com.test.lenient").pid not in (None, first.pid),
        what="the restart",
    )
    assert len(events(agent, "component.isolation", "com.test.lenient")) == 1
    # doctor, against the live agent, lists the component whose isolation is not enforced.
    doctor = agent.ctl("doctor", "-o", "json")
    assert doctor.returncode in (0, 1), doctor.stderr
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["agent"]["status"] == "ok"
    finding = checks["isolation enforced"]
    assert finding["status"] == "warn"
    assert "com.test.lenient: security.apparmor_profile" in finding["detail"]
    assert checks["privileges"]["status"] == "ok"
    assert checks["seccomp"]["status"] in ("ok", "warn")


def test_doctor_lists_the_isolation_check_for_a_clean_agent(agent_at: Callable[..., Agent]) -> None:
    agent = agent_at()
    r = recipe("com.test.clean", script="exec sleep 3600")
    assert agent.deploy_and_wait(deployment("com.test.clean"), [r]).status == "succeeded"
    doctor = agent.ctl("doctor")
    assert doctor.returncode in (0, 1), doctor.stderr
    assert "isolation enforced" in doctor.stdout
    assert "every component's isolation is enforced (1 checked)" in " ".join(doctor.stdout.split())


def test_the_default_cgroup_parent_is_per_root() -> None:
    from keystone_edge.config import IsolationSection

    default = Path("/opt/keystone")
    assert IsolationSection().parent_for(default, default) == "keystone"
    other = IsolationSection().parent_for(Path("/srv/ks"), default)
    assert other.startswith("keystone/")
    assert len(other) == len("keystone/") + 8
    assert other != IsolationSection().parent_for(Path("/srv/ks2"), default)
    assert IsolationSection(cgroup_parent="edge").parent_for(Path("/srv/ks"), default) == "edge"
    spaces = IsolationSection(namespaces={"com.a": ["net"], "*": ["pid"]})
    assert (spaces.namespaces_for("com.a"), spaces.namespaces_for("com.b")) == (["net"], ["pid"])


# -- run_as users --------------------------------------------------------------------------

USER = "keystone-e2e-user"


@pytest.fixture
def no_test_user() -> Iterator[None]:
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    subprocess.run(["userdel", USER], capture_output=True, check=False)
    yield
    subprocess.run(["userdel", USER], capture_output=True, check=False)
    subprocess.run(["groupdel", USER], capture_output=True, check=False)


def test_a_missing_run_as_user_is_a_clear_error(
    agent_at: Callable[..., Agent], no_test_user: None
) -> None:
    agent = agent_at()
    r = recipe("com.test.ghost", script="exec sleep 3600", security={"run_as": USER})
    record = agent.deploy_and_wait(deployment("com.test.ghost"), [r])
    assert record.status in ("failed", "rolled_back"), record
    assert record.error is not None
    assert f"security.run_as: user {USER!r} does not exist on this device" in record.error
    assert "create_user = true" in record.error


def test_create_user_creates_the_missing_run_as_user(
    agent_at: Callable[..., Agent], no_test_user: None
) -> None:
    agent = agent_at("[isolation]\ncreate_user = true\n")
    r = recipe(
        "com.test.created",
        script='id -un > "$KEYSTONE_WORK_PATH/whoami"; exec sleep 3600',
        security={"run_as": USER},
    )
    assert agent.deploy_and_wait(deployment("com.test.created"), [r]).status == "succeeded"
    whoami = agent.root / "runtime/work/com.test.created/whoami"
    wait_for(lambda: whoami.exists() and whoami.read_text().strip(), what="whoami")
    assert whoami.read_text().strip() == USER
    assert pwd.getpwnam(USER).pw_shell == "/usr/sbin/nologin"


# -- cgroups: cleanup and sweep ------------------------------------------------------------


def _cgroup_dirs(pid: int) -> list[Path]:
    """The component's cgroup directories (one per hierarchy KeyStone uses)."""
    dirs: list[Path] = []
    for h in HOST.cgroup.hierarchies:
        path = None
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, rel = line.split(":", 2)
            names = set(controllers.split(",")) if controllers else {""}
            if (h.version == 2 and "" in names) or (set(h.controllers) & names):
                path = rel
        if path and "/keystone" in path:
            dirs.append(Path(h.mount + path))
    return dirs


ESCAPE = (
    # A child that leaves the process group and the environment behind: neither the
    # process-group kill nor the environment search of a restarted agent finds it.
    'setsid env -i sleep 3600 & echo $! > "$KEYSTONE_WORK_PATH/escapee"\nexec sleep 3600\n'
)


def test_stop_kills_escaped_children_and_removes_the_cgroup(
    agent_at: Callable[..., Agent],
) -> None:
    agent = agent_at()
    # Tracking by cgroup comes with isolation (a plain exec is a process group only).
    r = recipe("com.test.escape", script=ESCAPE, security={"no_new_privileges": True})
    assert agent.deploy_and_wait(deployment("com.test.escape"), [r]).status == "succeeded"
    record = agent.wait_state("com.test.escape", "RUNNING")
    assert record.pid is not None
    pidfile = agent.root / "runtime/work/com.test.escape/escapee"
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the escapee")
    escapee = int(pidfile.read_text())
    assert os.getpgid(escapee) != record.pid  # really out of the group
    dirs = _cgroup_dirs(record.pid)
    assert dirs, "the component runs in no keystone cgroup"
    assert agent.ctl("component", "stop", "com.test.escape").returncode == 0
    agent.wait_state("com.test.escape", "STOPPED")
    wait_for(lambda: not psutil.pid_exists(escapee), what="the escapee to be killed")
    assert not [d for d in dirs if d.exists()]


def test_agent_start_sweeps_cgroups_a_crashed_agent_left(agent_at: Callable[..., Agent]) -> None:
    agent = agent_at()
    r = recipe("com.test.orphan", script=ESCAPE, security={"no_new_privileges": True})
    assert agent.deploy_and_wait(deployment("com.test.orphan"), [r]).status == "succeeded"
    record = agent.wait_state("com.test.orphan", "RUNNING")
    assert record.pid is not None
    pidfile = agent.root / "runtime/work/com.test.orphan/escapee"
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the escapee")
    escapee = int(pidfile.read_text())
    dirs = _cgroup_dirs(record.pid)
    agent.kill()  # SIGKILL: no cleanup at all
    assert psutil.pid_exists(escapee)
    agent.start()
    wait_for(lambda: not psutil.pid_exists(escapee), what="the sweep to kill the escapee")
    # The component is adopted again and runs in a fresh cgroup of the same name.
    again = agent.wait_state("com.test.orphan", "RUNNING")
    assert again.pid not in (None, record.pid)
    assert _cgroup_dirs(again.pid) == dirs


def test_a_component_that_asks_for_nothing_runs_without_the_launcher(
    agent_at: Callable[..., Agent], base: Path
) -> None:
    # The fast path: nothing to enforce (unconfined, no no_new_privs, every capability
    # kept, no limits), so the agent execs the workload itself, with no cgroup.
    agent = agent_at()
    plain = recipe(
        "com.test.plain",
        script="exec sleep 3600",
        security={
            "seccomp_profile": "unconfined",
            "no_new_privileges": False,
            "capabilities": sorted(CAPABILITIES),
        },
    )
    assert agent.deploy_and_wait(deployment("com.test.plain"), [plain]).status == "succeeded"
    record = agent.wait_state("com.test.plain", "RUNNING")
    assert record.pid is not None
    caps = _caps(Path(f"/proc/{record.pid}/status").read_text())
    assert caps["Seccomp"] == 0
    assert caps["NoNewPrivs"] == 0
    assert not _cgroup_dirs(record.pid)
    assert platform.system() == "Linux"


def test_a_recipe_that_sets_nothing_is_plain_unless_isolate_all(
    agent_at: Callable[..., Agent],
) -> None:
    # By default a recipe that asks for no control runs as a plain exec (fast restarts);
    # `[isolation] isolate_all = true` gives every component the least-privilege defaults.
    bare = recipe("com.test.bare", script="exec sleep 3600")
    default = agent_at(name="plain")
    assert default.deploy_and_wait(deployment("com.test.bare"), [bare]).status == "succeeded"
    pid = default.wait_state("com.test.bare", "RUNNING").pid
    caps = _caps(Path(f"/proc/{pid}/status").read_text())
    assert (caps["Seccomp"], caps["NoNewPrivs"]) == (0, 0)
    assert not _cgroup_dirs(pid)  # type: ignore[arg-type]
    default.stop()

    strict = agent_at(config="[isolation]\nisolate_all = true\n", name="isolated")
    assert strict.deploy_and_wait(deployment("com.test.bare"), [bare]).status == "succeeded"
    pid = strict.wait_state("com.test.bare", "RUNNING").pid
    caps = _caps(Path(f"/proc/{pid}/status").read_text())
    assert (caps["Seccomp"], caps["NoNewPrivs"]) == (2, 1)
    assert _cgroup_dirs(pid)  # type: ignore[arg-type]
