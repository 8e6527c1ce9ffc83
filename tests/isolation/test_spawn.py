"""The agent's side of the launcher: argv, plan, status pipe, exit reports; and caps helpers."""

from __future__ import annotations

import asyncio
import marshal
import os
import sys
from pathlib import Path

import pytest

from keystone_edge.isolation import (
    IsolationPolicy,
    LaunchStatus,
    exit_report,
    launch_plan,
    needs_launcher,
    parse_status,
    read_status,
    wrap_argv,
)
from keystone_edge.isolation.caps import (
    CAPABILITIES,
    CapabilitySets,
    mask_of,
    names_of,
    normalise,
    read_capabilities,
)
from keystone_edge.isolation.cgroups import CgroupDir, CgroupLimits, CgroupPlan
from keystone_edge.isolation.launcher import PLAN_VERSION
from keystone_edge.isolation.policy import Identity, Namespaces, Rlimit
from keystone_edge.isolation.seccomp import default_profile

ERROR_LINE = (
    b'{"keystone_launcher":1,"level":"error","step":"cgroup","control":"resources.memory_limit",'
    b'"message":"cannot write 1 to /sys/fs/cgroup/x/memory.max: Device or resource busy"}\n'
)
WARNING_LINE = (
    b'{"keystone_launcher":1,"level":"warning","step":"apparmor",'
    b'"control":"security.apparmor_profile","message":"AppArmor is not available"}\n'
)


def test_wrap_argv_runs_the_launcher_from_its_bytecode() -> None:
    policy = IsolationPolicy(component="c", mode="strict")
    argv = wrap_argv(policy, ["/bin/echo", "--", "hi"], status_fd=7)
    assert argv[:4] == [sys.executable, "-I", "-S", "-c"]
    assert "import launcher;launcher.main()" in argv[4]
    assert argv[5] == "--plan"
    assert argv[7:] == ["--status-fd", "7", "--", "/bin/echo", "--", "hi"]
    plan = marshal.loads(bytes.fromhex(argv[6]))
    assert plan["v"] == PLAN_VERSION
    with pytest.raises(ValueError, match="argv is empty"):
        wrap_argv(policy, [])


def test_launch_plan_is_plain_numbers_and_strings() -> None:
    cgroup = CgroupPlan(relpath="keystone/c", dirs=(CgroupDir(version=2, path="/cg/keystone/c"),))
    policy = IsolationPolicy(
        component="c",
        mode="best_effort",
        arch="x86_64",
        identity=Identity(user="nobody", uid=65534, gid=65534, groups=(65534, 20), home="/"),
        capabilities=("CAP_NET_BIND_SERVICE",),
        no_new_privileges=False,
        seccomp=default_profile("x86_64"),
        rlimits=(Rlimit(name="nofile", soft=10, hard=20),),
        nice=3,
        ioprio=(2, 4),
        cgroup=cgroup,
        namespaces=Namespaces(pid=True, net=True, writable=()),
    )
    plan = launch_plan(policy)
    assert marshal.loads(marshal.dumps(plan)) == plan  # only marshal-able builtins
    assert plan["strict"] is False
    assert plan["identity"] == [65534, 65534, [65534, 20]]
    assert plan["caps"]["keep"] == 1 << 10
    assert plan["ioprio"] == [251, 2 << 13 | 4]  # ioprio_set on x86_64
    program, seccomp_nr, early = plan["seccomp"]
    assert isinstance(program, bytes)
    assert seccomp_nr == 317
    assert early is True  # no_new_privileges off: install before dropping CAP_SYS_ADMIN
    assert plan["ns"]["flags"] == 0x20000000 | 0x00020000 | 0x40000000
    assert plan["ns"]["proc"] is True
    assert plan["cgroup"] == [{"path": "/cg/keystone/c", "enable": [], "writes": []}]
    assert plan["rlimits"][0][1:] == [10, 20, "resources.open_files"]


def test_needs_launcher() -> None:
    assert needs_launcher(IsolationPolicy(component="c", mode="strict"))
    bare = IsolationPolicy(component="c", mode="strict", privileged=True, no_new_privileges=False)
    assert not needs_launcher(bare)
    limited = IsolationPolicy(
        component="c",
        mode="strict",
        privileged=True,
        rlimits=(Rlimit(name="nofile", soft=1, hard=1),),
    )
    assert needs_launcher(limited)


def test_parse_status() -> None:
    status = parse_status(WARNING_LINE + b"noise from elsewhere\n" + b"{bad json\n" + ERROR_LINE)
    assert [m.level for m in status.messages] == ["warning", "error"]
    assert status.error is not None
    assert status.error.control == "resources.memory_limit"
    assert status.warnings[0].step == "apparmor"
    assert parse_status(b"").error is None


def test_read_status_until_eof() -> None:
    async def main() -> LaunchStatus:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, WARNING_LINE)

        async def close_later() -> None:
            await asyncio.sleep(0.01)
            os.write(write_fd, ERROR_LINE)
            os.close(write_fd)

        async with asyncio.TaskGroup() as group:
            group.create_task(close_later())
            return await read_status(read_fd)

    status = asyncio.run(main())
    assert len(status.messages) == 2
    assert status.error is not None


def memory_policy(tmp_path: Path, events: str, pids_events: str = "max 0\n") -> IsolationPolicy:
    d = tmp_path / f"cg{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    (d / "memory.events").write_text(events)
    (d / "pids.events").write_text(pids_events)
    plan = CgroupPlan(
        relpath="k/c",
        dirs=(CgroupDir(version=2, path=str(d)),),
        limits=CgroupLimits(memory_max=64 << 20, memory_text="64Mi", pids_max=10),
    )
    return IsolationPolicy(component="c", mode="strict", cgroup=plan)


def test_exit_reports(tmp_path: Path) -> None:
    oom = memory_policy(tmp_path, "oom 1\noom_kill 1\n")
    report = exit_report(oom, -9)
    assert (report.reason, report.message, report.signal) == (
        "oom_killed",
        "killed by the OOM killer (memory_limit 64Mi)",
        9,
    )
    child = exit_report(oom, 1)
    assert child.reason == "oom_killed"
    assert child.message == (
        "exited with code 1 after the OOM killer killed 1 process(es) (memory_limit 64Mi)"
    )
    assert exit_report(oom, 0).reason == "exited"  # a clean exit is a clean exit

    calm = memory_policy(tmp_path, "oom 0\noom_kill 0\n", "max 4\n")
    assert exit_report(calm, -15).message == "killed by SIGTERM (pids_limit 10 reached 4 time(s))"
    assert exit_report(memory_policy(tmp_path, "oom_kill 0\n"), -15).message == "killed by SIGTERM"
    assert exit_report(calm, 2).message == "exited with code 2 (pids_limit 10 reached 4 time(s))"
    assert exit_report(calm, 0).message == "exited with code 0"

    failed = exit_report(calm, 125, parse_status(ERROR_LINE))
    assert failed.reason == "isolation_failed"
    assert failed.message.startswith("isolation failed: cannot write 1 to /sys/fs/cgroup/x/")
    exec_line = ERROR_LINE.replace(b'"cgroup"', b'"exec"', 1)
    assert exit_report(calm, 127, parse_status(exec_line)).reason == "exec_failed"


def test_capability_names() -> None:
    assert normalise("net_bind_service") == "CAP_NET_BIND_SERVICE"
    assert normalise(" CAP_sys_admin ") == "CAP_SYS_ADMIN"
    with pytest.raises(ValueError, match=r"unknown capability 'SYS_ADMN' \(did you mean"):
        normalise("SYS_ADMN")
    assert mask_of(["CAP_CHOWN", "kill"]) == 1 | 1 << 5
    assert names_of(1 | 1 << 5 | 1 << 63) == ["CAP_CHOWN", "CAP_KILL", "CAP_63"]
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40


def test_read_own_capabilities() -> None:
    sets = read_capabilities()
    assert isinstance(sets, CapabilitySets)
    if os.geteuid() == 0:
        assert sets.effective >> CAPABILITIES["CAP_SYS_ADMIN"] & 1
    parsed = CapabilitySets.parse("CapInh:\t0\nCapPrm:\t400\nCapEff:\t400\nCapBnd:\t400\n")
    assert (parsed.effective, parsed.ambient) == (1024, 0)
    assert "effective=0x400" in repr(parsed)
