"""Real workloads through the launcher: limits, identity, capabilities, seccomp, namespaces,
and how failures are reported. Run as root on a host with cgroups; skipped otherwise."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from keystone_edge.isolation import IsolationPolicy, wrap_argv
from keystone_edge.isolation._syscalls import SYSCALLS
from keystone_edge.isolation.caps import CAPABILITIES, CapabilitySets
from keystone_edge.isolation.cgroups import procs
from keystone_edge.isolation.host import HostFacts
from keystone_edge.isolation.launcher import EXIT_ISOLATION_FAILED
from keystone_edge.recipe.model import FilePermission, Permissions, Resources, Security
from keystone_edge.units import Size
from tests.isolation.conftest import Build, Launch, make_recipe, needs_root

pytestmark = needs_root

NET_BIND = 1 << CAPABILITIES["CAP_NET_BIND_SERVICE"]


def caps_of(stdout: str) -> CapabilitySets:
    return CapabilitySets.parse(stdout)


STATUS = "print(open('/proc/self/status').read())"


# -- resources -----------------------------------------------------------------------------


@pytest.mark.usefixtures("cgroup_limits")
def test_memory_hog_is_oom_killed_and_reported(
    name: str, isolated: Build, launch: Launch, py: str
) -> None:
    policy = isolated(make_recipe(name, resources=Resources(memory_limit=Size.parse("32Mi"))))
    run = launch(policy, [py, "-c", "data = b'x' * (256 << 20); print(len(data))"])
    assert run.returncode == -signal.SIGKILL
    assert run.report.reason == "oom_killed"
    assert run.report.oom_kills >= 1
    assert run.report.message == "killed by the OOM killer (memory_limit 32Mi)"
    assert run.stdout == ""


@pytest.mark.usefixtures("cgroup_limits")
def test_plain_crash_is_not_called_an_oom(
    name: str, isolated: Build, launch: Launch, py: str
) -> None:
    policy = isolated(make_recipe(name, resources=Resources(memory_limit=Size.parse("32Mi"))))
    run = launch(policy, [py, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert run.report.reason == "signaled"
    assert run.report.message == "killed by SIGKILL"


FORK_BOMB = """
import errno, os, sys, time
children = []
for _ in range(40):
    try:
        pid = os.fork()
    except OSError as exc:
        print(len(children), errno.errorcode[exc.errno])
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
else:
    print(len(children), "none")
for pid in children:
    os.kill(pid, 9)
sys.exit(1)
"""


@pytest.mark.usefixtures("cgroup_limits")
def test_forks_past_pids_limit_fail(name: str, isolated: Build, launch: Launch, py: str) -> None:
    policy = isolated(make_recipe(name, resources=Resources(pids_limit=8)))
    run = launch(policy, [py, "-c", FORK_BOMB])
    forked, error = run.stdout.split()
    assert error == "EAGAIN"
    assert int(forked) < 8
    assert run.report.pids_limit_hits >= 1
    assert run.report.message.startswith("exited with code 1 (pids_limit 8 reached ")


BUSY = """
import os, time
end = time.monotonic() + 2.0
while time.monotonic() < end:
    pass
t = os.times()
print(t.user + t.system)
"""


@pytest.mark.usefixtures("cgroup_limits")
def test_cpu_quota_caps_a_busy_loop(name: str, isolated: Build, launch: Launch, py: str) -> None:
    policy = isolated(make_recipe(name, resources=Resources(cpu_quota=20)))
    run = launch(policy, [py, "-c", BUSY])
    assert run.returncode == 0, run.stderr
    share = float(run.stdout) / 2.0
    # 20 % of one CPU; generous bounds for a busy, shared test machine.
    assert 0.05 < share < 0.35, f"busy loop got {share:.0%} of a CPU with cpu_quota = 20"


def test_rlimits_and_nice(isolated: Build, launch: Launch, py: str, host: HostFacts) -> None:
    policy = isolated(make_recipe(resources=Resources(open_files=64, nice=7)))
    assert host.arch is not None
    ioprio_get = SYSCALLS[host.arch]["ioprio_get"]
    script = (
        "import ctypes, os, resource\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
        "print(os.getpriority(os.PRIO_PROCESS, 0))\n"
        f"print(ctypes.CDLL(None).syscall({ioprio_get}, 1, 0))\n"
    )
    run = launch(policy, [py, "-c", script])
    assert run.returncode == 0, run.stderr
    nofile, nice, ioprio = run.stdout.splitlines()
    assert nofile == "64 64"
    assert nice == "7"
    assert int(ioprio) == 2 << 13 | (7 + 20) // 5  # best-effort class, level from nice


# -- identity and capabilities ---------------------------------------------------------------


def test_run_as_cannot_read_the_agents_state(
    isolated: Build, launch: Launch, py: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)
    db = state / "keystone.db"
    db.write_text("secrets")
    db.chmod(0o600)
    read = [py, "-c", f"print(open('{db}').read())"]

    as_nobody = launch(isolated(make_recipe(security=Security(run_as="nobody"))), read)
    assert as_nobody.returncode == 1
    assert "PermissionError: [Errno 13] Permission denied" in as_nobody.stderr
    assert as_nobody.stdout == ""
    # The same program as root (even without capabilities) reads it: the user made the
    # difference.
    as_root = launch(isolated(make_recipe()), read)
    assert as_root.stdout.strip() == "secrets"


def test_run_as_sets_user_group_and_groups(isolated: Build, launch: Launch) -> None:
    run = launch(isolated(make_recipe(security=Security(run_as="nobody:nogroup"))), ["id"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"


def test_dropped_capabilities_are_gone(isolated: Build, launch: Launch, py: str) -> None:
    run = launch(isolated(make_recipe()), [py, "-c", STATUS])
    sets = caps_of(run.stdout)
    assert (sets.effective, sets.permitted, sets.bounding, sets.ambient) == (0, 0, 0, 0)
    assert "NoNewPrivs:\t1" in run.stdout


def test_kept_capability_as_root(isolated: Build, launch: Launch, py: str) -> None:
    policy = isolated(make_recipe(security=Security(capabilities=["CAP_NET_BIND_SERVICE"])))
    sets = caps_of(launch(policy, [py, "-c", STATUS]).stdout)
    assert sets.effective == sets.permitted == sets.bounding == NET_BIND
    assert sets.ambient == 0


BIND_80 = """
import socket
s = socket.socket()
s.bind(("127.0.0.1", 80))
print("bound", s.getsockname()[1])
"""


def test_kept_capability_for_a_non_root_user_is_ambient(
    isolated: Build, launch: Launch, py: str
) -> None:
    policy = isolated(
        make_recipe(security=Security(run_as="nobody", capabilities=["net_bind_service"])),
        namespaces=["net"],  # port 80 is then ours, whatever the host runs
    )
    status = launch(policy, [py, "-c", STATUS])
    sets = caps_of(status.stdout)
    assert sets.effective == sets.permitted == sets.ambient == sets.bounding == NET_BIND
    assert "Uid:\t65534" in status.stdout
    run = launch(policy, [py, "-c", BIND_80])
    assert run.stdout.strip() == "bound 80", run.stderr
    without = isolated(make_recipe(security=Security(run_as="nobody")), namespaces=["net"])
    denied = launch(without, [py, "-c", BIND_80])
    assert "PermissionError" in denied.stderr


# -- seccomp -------------------------------------------------------------------------------

SYSCALL_PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, *args):
    result = getattr(libc, name)(*args)
    print(name, result, ctypes.get_errno() if result == -1 else 0)
probe("unshare", 0x10000000)   # CLONE_NEWUSER
probe("ptrace", 0, 0, 0, 0)    # PTRACE_TRACEME
"""


def test_default_seccomp_denies_with_eperm(isolated: Build, launch: Launch, py: str) -> None:
    confined = launch(
        isolated(make_recipe(security=Security(run_as="nobody"))), [py, "-c", SYSCALL_PROBE]
    )
    assert confined.stdout.splitlines() == [
        f"unshare -1 {errno.EPERM}",
        f"ptrace -1 {errno.EPERM}",
    ]
    assert (
        "Seccomp:\t2"
        in launch(
            isolated(make_recipe(security=Security(run_as="nobody"))), [py, "-c", STATUS]
        ).stdout
    )
    # The same calls succeed unconfined: the filter, not the user, refused them.
    free = launch(
        isolated(make_recipe(security=Security(run_as="nobody", seccomp_profile="unconfined"))),
        [py, "-c", SYSCALL_PROBE],
    )
    assert free.stdout.splitlines() == ["unshare 0 0", "ptrace 0 0"]


MOUNT_PROBE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
result = libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)
print(result, ctypes.get_errno() if result else 0)
"""


def test_seccomp_denies_mount_even_with_cap_sys_admin(
    isolated: Build, launch: Launch, py: str
) -> None:
    def mount_as(profile: str) -> str:
        policy = isolated(
            make_recipe(
                security=Security(
                    capabilities=["CAP_SYS_ADMIN"],
                    seccomp_profile=profile,
                    no_new_privileges=False,  # exercises the filter-before-capabilities order
                )
            ),
            namespaces=["mount"],  # the mount, when allowed, stays private
        )
        return launch(policy, [py, "-c", MOUNT_PROBE]).stdout.strip()

    assert mount_as("default") == f"-1 {errno.EPERM}"
    assert mount_as("unconfined") == "0 0"


def test_oci_profile_from_a_file(isolated: Build, launch: Launch, py: str, tmp_path: Path) -> None:
    profile = tmp_path / "deny-getcwd.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}
                ],
            }
        )
    )
    policy = isolated(make_recipe(security=Security(seccomp_profile=f"path:{profile}")))
    run = launch(policy, [py, "-c", "import os; os.getcwd()"])
    assert "PermissionError: [Errno 13] Permission denied" in run.stderr


# -- namespaces ----------------------------------------------------------------------------

PIDS = """
import os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print(os.getpid(), *pids)
"""


def test_pid_namespace_hides_the_host(isolated: Build, launch: Launch, py: str) -> None:
    run = launch(isolated(make_recipe(), namespaces=["pid"]), [py, "-c", PIDS])
    assert run.returncode == 0, run.stderr
    me, *visible = (int(x) for x in run.stdout.split())
    # PID 1 is KeyStone's init; the workload is PID 2 and sees nothing of the host.
    assert me == 2
    assert visible == [1, 2]
    assert os.getpid() not in visible


SIGTERM_AWARE = """
import signal, sys, time
def stop(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(30)
"""


def test_pid_namespace_forwards_signals_and_exit_codes(
    isolated: Build, launch: Launch, py: str
) -> None:
    def terminate(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)

    run = launch(
        isolated(make_recipe(), namespaces=["pid"]), [py, "-c", SIGTERM_AWARE], on_start=terminate
    )
    assert run.stdout == "got SIGTERM\n"
    assert run.returncode == 3


def test_pid_namespace_reports_a_killed_workload_as_killed(
    isolated: Build, launch: Launch, py: str
) -> None:
    run = launch(
        isolated(make_recipe(), namespaces=["pid"]),
        [py, "-c", "import os; os.kill(os.getpid(), 9)"],
    )
    assert run.returncode == -signal.SIGKILL
    assert run.report.message == "killed by SIGKILL"


@pytest.mark.usefixtures("cgroup_limits")
def test_killing_the_relay_leaves_no_orphans(
    name: str, isolated: Build, py: str, tmp_path: Path
) -> None:
    policy = isolated(make_recipe(name, resources=Resources(pids_limit=16)), namespaces=["pid"])
    assert policy.cgroup is not None
    proc = subprocess.Popen(
        wrap_argv(policy, [py, "-c", "import time; print('up', flush=True); time.sleep(60)"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "up\n"
        assert len(procs(policy.cgroup)) == 3  # relay, init, workload
        proc.kill()  # only the relay: the agent's SIGKILL after a stop timeout
        proc.wait()
        deadline = time.monotonic() + 10
        while procs(policy.cgroup) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert procs(policy.cgroup) == set()
    finally:
        from keystone_edge.isolation import release

        release(policy)


MOUNTS = """
import os, sys
work, marker = sys.argv[1], sys.argv[2]
for path in ("/etc/keystone-test-" + marker, "/usr/keystone-test-" + marker):
    try:
        open(path, "w")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, exc.strerror)
open(os.path.join(work, "out"), "w").write("ok")
open("/tmp/" + marker, "w").write("private")
print("tmp", os.listdir("/tmp"))
"""


def test_mount_namespace_read_only_system_private_tmp(
    isolated: Build, launch: Launch, py: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    marker = uuid.uuid4().hex
    policy = isolated(make_recipe(), namespaces=["mount"], work_dir=str(work))
    run = launch(policy, [py, "-c", MOUNTS, str(work), marker], cwd=work)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"refused /etc/keystone-test-{marker} Read-only file system"
    assert lines[1] == f"refused /usr/keystone-test-{marker} Read-only file system"
    # The private /tmp holds the marker and the skeleton of the work directory, nothing else.
    assert lines[2] == f"tmp {sorted([marker, tmp_path.parts[2]])}"
    assert (work / "out").read_text() == "ok"
    assert not Path("/tmp", marker).exists()


NETWORK = """
import socket
print(sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]))
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)
except OSError as exc:
    print(exc.errno)
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
socket.create_connection(server.getsockname(), timeout=2)
print("loopback ok")
"""


def test_network_namespace_has_only_loopback(isolated: Build, launch: Launch, py: str) -> None:
    run = launch(isolated(make_recipe(), namespaces=["net"]), [py, "-c", NETWORK])
    assert run.stdout.splitlines() == ["['lo']", str(errno.ENETUNREACH), "loopback ok"]


# -- files ---------------------------------------------------------------------------------


def test_permission_files_are_prepared_for_the_user(
    isolated: Build, launch: Launch, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()  # the runner's job; the launcher gives it to the user
    tmp_path.chmod(0o755)
    perms = Permissions(
        files=[
            FilePermission(path="data/", mode="0750"),
            FilePermission(path="out.log", mode="0640"),
        ]
    )
    policy = isolated(
        make_recipe(security=Security(run_as="nobody"), permissions=perms), work_dir=str(work)
    )
    run = launch(policy, ["sh", "-c", "echo hi > out.log && touch data/x && id -u"], cwd=work)
    assert run.returncode == 0, (run.stderr, run.status)
    for path, mode in ((work, 0o750), (work / "data", 0o750), (work / "out.log", 0o640)):
        st = path.stat()
        assert (st.st_uid, st.st_mode & 0o7777) == (65534, mode), path
    assert (work / "out.log").read_text() == "hi\n"


def test_prepared_paths_never_follow_symlinks(
    isolated: Build, launch: Launch, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("root's")
    (work / "link").symlink_to(victim)
    perms = Permissions(files=[FilePermission(path="link", mode="0666")])
    policy = isolated(
        make_recipe(security=Security(run_as="nobody"), permissions=perms), work_dir=str(work)
    )
    run = launch(policy, ["true"], cwd=work)
    assert run.returncode == EXIT_ISOLATION_FAILED
    assert run.status.error is not None
    assert "goes through a symbolic link" in run.status.error.message
    st = victim.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)


# -- failures ------------------------------------------------------------------------------


def corrupt_writes(policy: IsolationPolicy, value: str) -> IsolationPolicy:
    assert policy.cgroup is not None
    dirs = tuple(
        msgspec.structs.replace(
            d, writes=tuple(msgspec.structs.replace(w, value=value) for w in d.writes)
        )
        for d in policy.cgroup.dirs
    )
    return msgspec.structs.replace(policy, cgroup=msgspec.structs.replace(policy.cgroup, dirs=dirs))


@pytest.mark.usefixtures("cgroup_limits")
def test_strict_failure_is_one_json_line_and_exit_125(
    name: str, isolated: Build, launch: Launch
) -> None:
    policy = isolated(make_recipe(name, resources=Resources(pids_limit=5)))
    run = launch(corrupt_writes(policy, "bogus"), ["echo", "ran"])
    assert run.returncode == EXIT_ISOLATION_FAILED
    assert run.stdout == ""
    error = run.status.error
    assert error is not None
    assert (error.step, error.control) == ("cgroup", "resources.pids_limit")
    assert error.message.startswith("cannot write bogus to ")
    assert error.message.endswith("/pids.max: Invalid argument")
    line = json.loads(run.stderr.strip().splitlines()[-1])
    assert line["level"] == "error"
    assert line["message"] == error.message
    assert run.report.reason == "isolation_failed"
    assert run.report.message == "isolation failed: " + error.message


@pytest.mark.usefixtures("cgroup_limits")
def test_best_effort_runs_with_a_warning(name: str, isolated: Build, launch: Launch) -> None:
    policy = isolated(make_recipe(name, resources=Resources(pids_limit=5)), mode="best_effort")
    run = launch(corrupt_writes(policy, "bogus"), ["echo", "ran"])
    assert run.returncode == 0
    assert run.stdout == "ran\n"
    assert run.status.error is None
    (warning,) = run.status.warnings
    assert warning.control == "resources.pids_limit"
    assert "Invalid argument" in warning.message
    assert run.stderr == ""  # warnings go to the status pipe only


def test_bad_cgroup_path_strict_vs_best_effort(isolated: Build, launch: Launch) -> None:
    from keystone_edge.isolation.cgroups import CgroupDir, CgroupPlan

    bad = CgroupPlan(relpath="x/y", dirs=(CgroupDir(version=1, path="/proc/keystone-nope/y"),))
    strict = msgspec.structs.replace(isolated(make_recipe()), cgroup=bad)
    run = launch(strict, ["echo", "ran"])
    assert run.returncode == EXIT_ISOLATION_FAILED
    assert run.status.error is not None
    assert run.status.error.message.startswith("cannot create cgroup /proc/keystone-nope")
    lenient = msgspec.structs.replace(strict, mode="best_effort")
    run = launch(lenient, ["echo", "ran"])
    assert run.stdout == "ran\n"
    assert [w.step for w in run.status.warnings] == ["cgroup", "cgroup"]  # create, join


def test_exec_failures_are_127_and_126(isolated: Build, launch: Launch, tmp_path: Path) -> None:
    policy = isolated(make_recipe())
    missing = launch(policy, ["/nonexistent/program"])
    assert missing.returncode == 127
    assert missing.report.reason == "exec_failed"
    assert missing.report.message == "/nonexistent/program: command not found"
    not_exec = tmp_path / "script"
    not_exec.write_text("#!/bin/sh\n")
    run = launch(policy, [str(not_exec)])
    assert run.returncode == 126
    assert run.report.message == f"cannot execute {not_exec}: Permission denied"
    on_path = launch(policy, ["keystone-no-such-command"])
    assert on_path.returncode == 127


def test_workload_gets_default_signal_dispositions(isolated: Build, launch: Launch) -> None:
    # Python ignores SIGPIPE; an ignored disposition would survive exec into the workload.
    run = launch(isolated(make_recipe()), ["sh", "-c", "grep SigIgn /proc/self/status"])
    ignored = int(run.stdout.split()[1], 16)
    assert not ignored >> (signal.SIGPIPE - 1) & 1
    assert not ignored >> (signal.SIGXFSZ - 1) & 1


def test_launcher_usage_errors() -> None:
    from keystone_edge.isolation.spawn import _BOOTSTRAP

    base = [sys.executable, "-I", "-S", "-c", _BOOTSTRAP]
    no_plan = subprocess.run([*base, "--", "true"], check=False, capture_output=True, text=True)
    assert no_plan.returncode == EXIT_ISOLATION_FAILED
    assert "keystone launcher: --plan is required" in no_plan.stderr
    garbage = subprocess.run(
        [*base, "--plan", "zz", "--", "true"], check=False, capture_output=True, text=True
    )
    assert "unreadable plan" in garbage.stderr
    import marshal

    old = marshal.dumps({"v": 0}).hex()
    mismatch = subprocess.run(
        [*base, "--plan", old, "--", "true"], check=False, capture_output=True, text=True
    )
    assert "plan version mismatch" in mismatch.stderr


def test_apparmor_failure_is_reported(isolated: Build, launch: Launch) -> None:
    # Forced past policy_for (which refuses a profile on a host without AppArmor) to check
    # what the launcher does when the kernel says no: here, no LSM accepts "exec <profile>".
    if Path("/sys/module/apparmor/parameters/enabled").exists():
        pytest.skip("AppArmor is present: the write could succeed")
    strict = msgspec.structs.replace(isolated(make_recipe()), apparmor_profile="ks-default")
    run = launch(strict, ["echo", "ran"])
    assert run.returncode == EXIT_ISOLATION_FAILED
    assert run.status.error is not None
    assert run.status.error.control == "security.apparmor_profile"
    assert run.status.error.message.startswith("cannot switch to AppArmor profile 'ks-default'")
    lenient = launch(msgspec.structs.replace(strict, mode="best_effort"), ["echo", "ran"])
    assert lenient.stdout == "ran\n"
    assert [w.control for w in lenient.status.warnings] == ["security.apparmor_profile"]


def test_module_entry_point() -> None:
    import marshal

    from keystone_edge.isolation import launch_plan

    plan = marshal.dumps(launch_plan(IsolationPolicy(component="c", mode="strict"))).hex()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "keystone_edge.isolation",
            "--plan",
            plan,
            "--",
            "grep",
            "NoNewPrivs",
            "/proc/self/status",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "NoNewPrivs:\t1\n", "")
