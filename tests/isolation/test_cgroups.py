"""cgroups: layout detection, planned writes on v1 and v2 (against a fake tree), the
launcher's cgroup step on that tree, and real cgroups on this host (v1, and v2 when a
cgroup2 hierarchy can be mounted)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from keystone_edge.isolation import launcher as launcher_module
from keystone_edge.isolation.cgroups import (
    CgroupDir,
    CgroupLayout,
    CgroupLimits,
    CgroupManager,
    CgroupPlan,
    CgroupWrite,
    Hierarchy,
    detect_layout,
    oom_kills,
    pids_max_hits,
    procs,
    remove,
)
from keystone_edge.isolation.host import HostFacts
from keystone_edge.isolation.policy import IsolationPolicy
from keystone_edge.isolation.spawn import launch_plan
from keystone_edge.recipe.model import Resources
from keystone_edge.units import Size
from tests.isolation.conftest import CGROUP_PARENT, Build, Launch, cgroup_parent, make_recipe

LIMITS = CgroupLimits(
    cpu_quota=20, memory_max=64 * 2**20, memory_text="64Mi", pids_max=10, io_weight=200
)

# -- detection -----------------------------------------------------------------------------


def mountinfo_line(n: int, root: str, mount: str, fstype: str, super_opts: str) -> str:
    options = "rw,nosuid,nodev,noexec,relatime"
    return f"{n} 1 0:{n} {root} {mount} {options} shared:{n} - {fstype} {fstype} {super_opts}"


def test_detect_v2(tmp_path: Path) -> None:
    mnt = tmp_path / "cg"
    (mnt / "system.slice/keystone.service").mkdir(parents=True)
    (mnt / "system.slice/keystone.service/cgroup.controllers").write_text("cpu io memory pids\n")
    info = tmp_path / "mountinfo"
    info.write_text(
        mountinfo_line(1, "/", "/", "ext4", "rw")
        + "\n"
        + mountinfo_line(2, "/", str(mnt), "cgroup2", "rw,nsdelegate")
        + "\n"
    )
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/system.slice/keystone.service\n")
    layout = detect_layout(mountinfo=info, cgroup=cgroup)
    assert layout.kind == "v2"
    (h,) = layout.hierarchies
    assert h.version == 2
    assert h.own == "/system.slice/keystone.service"
    assert h.controllers == ("cpu", "io", "memory", "pids")
    assert layout.controllers() == {"cpu", "io", "memory", "pids"}


def test_detect_v1_and_hybrid(tmp_path: Path) -> None:
    lines = [
        mountinfo_line(2, "/", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        mountinfo_line(3, "/", "/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
        mountinfo_line(4, "/", "/sys/fs/cgroup/pids", "cgroup", "rw,pids"),
        mountinfo_line(5, "/", "/sys/fs/cgroup/systemd", "cgroup", "rw,xattr,name=systemd"),
        # A container's view: the mount's root is the container's own cgroup.
        mountinfo_line(6, "/docker/abc", "/sys/fs/cgroup/blkio", "cgroup", "rw,blkio"),
    ]
    info = tmp_path / "mountinfo"
    info.write_text("\n".join(lines) + "\n")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(
        "5:blkio:/docker/abc/sub\n4:pids:/\n3:memory:/agent/x\n2:cpu,cpuacct:/\n"
        "1:name=systemd:/\n0::/\n"
    )
    layout = detect_layout(mountinfo=info, cgroup=cgroup)
    assert layout.kind == "v1"
    by_mount = {h.mount: h for h in layout.hierarchies}
    assert by_mount["/sys/fs/cgroup/cpu,cpuacct"].controllers == ("cpu", "cpuacct")
    assert by_mount["/sys/fs/cgroup/memory"].own == "/agent/x"
    assert by_mount["/sys/fs/cgroup/blkio"].own == "/sub"
    assert "/sys/fs/cgroup/systemd" not in by_mount
    assert layout.controllers() == {"cpu", "cpuacct", "memory", "pids", "io"}

    info.write_text(
        "\n".join([*lines, mountinfo_line(7, "/", "/sys/fs/cgroup/unified", "cgroup2", "rw")])
        + "\n"
    )
    hybrid = detect_layout(mountinfo=info, cgroup=cgroup)
    assert hybrid.kind == "hybrid"
    assert hybrid.unified is not None
    assert hybrid.unified.mount == "/sys/fs/cgroup/unified"


def test_detect_none(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(mountinfo_line(1, "/", "/", "ext4", "rw") + "\n")
    assert detect_layout(mountinfo=info, cgroup=tmp_path / "missing").kind == "none"


# -- planning against a fake tree ----------------------------------------------------------


def fake_v2(tmp_path: Path, controllers: str = "cpu io memory pids") -> CgroupLayout:
    mnt = tmp_path / "v2"
    own = mnt / "system.slice/keystone.service"
    own.mkdir(parents=True, exist_ok=True)
    (own / "cgroup.subtree_control").write_text("")
    return CgroupLayout(
        kind="v2",
        hierarchies=(
            Hierarchy(
                version=2,
                mount=str(mnt),
                controllers=tuple(controllers.split()),
                own="/system.slice/keystone.service",
            ),
        ),
    )


def fake_v1(tmp_path: Path) -> CgroupLayout:
    hierarchies = []
    for ctrls in (("cpu", "cpuacct"), ("memory",), ("pids",), ("blkio",), ("freezer",)):
        mnt = tmp_path / "v1" / ",".join(ctrls)
        mnt.mkdir(parents=True, exist_ok=True)
        hierarchies.append(Hierarchy(version=1, mount=str(mnt), controllers=ctrls, own=""))
    return CgroupLayout(kind="v1", hierarchies=tuple(hierarchies))


def test_plan_v2(tmp_path: Path) -> None:
    layout = fake_v2(tmp_path)
    plan, missing = CgroupManager(layout).plan("com.x", LIMITS, extra_tasks=2)
    assert missing == []
    assert plan is not None
    (d,) = plan.dirs
    own = f"{tmp_path}/v2/system.slice/keystone.service"
    assert d.path == f"{own}/keystone/com.x"
    assert d.enable == (
        (f"{own}/cgroup.subtree_control", "+cpu +memory +pids +io"),
        (f"{own}/keystone/cgroup.subtree_control", "+cpu +memory +pids +io"),
    )
    assert [(w.files, w.value, w.optional) for w in d.writes] == [
        (("cpu.max",), "20000 100000", False),
        (("memory.max",), str(64 * 2**20), False),
        (("memory.swap.max",), "0", True),
        (("pids.max",), "12", False),
        (("io.weight", "io.bfq.weight"), "default 200", False),
    ]
    assert plan.relpath == "keystone/com.x"


def test_plan_v2_reports_missing_controllers(tmp_path: Path) -> None:
    layout = fake_v2(tmp_path, controllers="cpu memory")
    plan, missing = CgroupManager(layout).plan("com.x", LIMITS)
    assert plan is not None
    assert {m.control for m in missing} == {"resources.pids_limit", "resources.io_weight"}
    assert all("not available in the agent's cgroup v2 subtree" in m.reason for m in missing)
    assert plan.dirs[0].enable[0][1] == "+cpu +memory"


def test_plan_v1_orders_writes(tmp_path: Path) -> None:
    plan, missing = CgroupManager(fake_v1(tmp_path)).plan("com.x", LIMITS)
    assert missing == []
    assert plan is not None
    writes = {Path(d.path).parent.parent.name: d.writes for d in plan.dirs}
    assert [(w.files[0], w.value) for w in writes["cpu,cpuacct"]] == [
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "20000"),
    ]
    assert [(w.files[0], w.value, w.optional) for w in writes["memory"]] == [
        ("memory.memsw.limit_in_bytes", "-1", True),
        ("memory.limit_in_bytes", str(64 * 2**20), False),
        ("memory.memsw.limit_in_bytes", str(64 * 2**20), True),
    ]
    assert [(w.files, w.value) for w in writes["blkio"]] == [
        (("blkio.weight", "blkio.bfq.weight"), "30")
    ]
    assert writes["freezer"] == ()


def test_plan_quota_floor_and_absolute_parent(tmp_path: Path) -> None:
    tiny = CgroupLimits(cpu_quota=0.1)
    plan, _ = CgroupManager(fake_v1(tmp_path), parent="/ks").plan("c", tiny)
    assert plan is not None
    cpu = next(d for d in plan.dirs if "cpu" in d.path)
    assert cpu.path == f"{tmp_path}/v1/cpu,cpuacct/ks/c"
    assert cpu.writes[1].value == "1000"  # the kernel's minimum quota


def test_plan_without_writable_hierarchy(tmp_path: Path) -> None:
    layout = CgroupLayout(
        kind="v1",
        hierarchies=(
            Hierarchy(version=1, mount=str(tmp_path / "absent"), controllers=("memory",), own=""),
        ),
    )
    plan, missing = CgroupManager(layout).plan("c", CgroupLimits(memory_max=1 << 20))
    assert plan is None
    assert missing[0].control == "resources.memory_limit"
    assert "no writable cgroup hierarchy" in missing[0].reason
    plan, missing = CgroupManager(CgroupLayout(kind="none")).plan("c", LIMITS)
    assert plan is None
    assert len(missing) == 4
    assert missing[0].reason == "cgroups are not mounted on this host"


def test_invalid_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid component name"):
        CgroupManager(fake_v1(tmp_path)).plan("../escape", LIMITS)
    with pytest.raises(ValueError, match="invalid cgroup parent"):
        CgroupManager(fake_v1(tmp_path), parent="a/../b")


def materialise(plan: CgroupPlan) -> None:
    """What the kernel does on mkdir: the control files appear (here: empty files)."""
    for d in plan.dirs:
        path = Path(d.path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text("")
        for w in d.writes:
            (path / w.files[-1]).write_text("")
        for control_file, _ in d.enable:
            Path(control_file).parent.mkdir(parents=True, exist_ok=True)
            Path(control_file).write_text("")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_launcher_performs_the_planned_writes(tmp_path: Path, version: str) -> None:
    layout = fake_v1(tmp_path) if version == "v1" else fake_v2(tmp_path)
    plan, _ = CgroupManager(layout).plan("com.x", LIMITS)
    assert plan is not None
    materialise(plan)
    launch = launcher_module._Launch(
        {"strict": True, "cgroup": launch_plan_cgroup(plan)}, status_fd=-1
    )
    launch.cgroups()
    for d in plan.dirs:
        path = Path(d.path)
        assert (path / "cgroup.procs").read_text() == str(os.getpid())
        for w in d.writes:
            # Each file holds the last value written to it (memsw: -1, then the limit).
            last = [x.value for x in d.writes if x.files == w.files][-1]
            assert (path / w.files[-1]).read_text() == last
        for control_file, value in d.enable:
            assert Path(control_file).read_text() == value


def launch_plan_cgroup(plan: CgroupPlan) -> list[dict[str, object]]:
    cgroup: list[dict[str, object]] = launch_plan(
        IsolationPolicy(component="x", mode="strict", cgroup=plan)
    )["cgroup"]
    return cgroup


def test_launcher_refuses_a_cgroup_with_leftover_processes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    plan = CgroupPlan(relpath="keystone/c", dirs=(CgroupDir(version=1, path=str(tmp_path / "c")),))
    materialise(plan)
    (tmp_path / "c" / "cgroup.procs").write_text("4242\n")
    launch = launcher_module._Launch(
        {"strict": True, "cgroup": launch_plan_cgroup(plan)}, status_fd=-1
    )
    with pytest.raises(launcher_module._Abort) as aborted:
        launch.cgroups()
    assert aborted.value.code == 125
    err = capfd.readouterr().err
    assert "still holds processes from an earlier run (4242)" in err
    assert err.startswith('{"keystone_launcher":1,"level":"error","step":"cgroup"')


def test_missing_control_file_is_a_warning_in_best_effort(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    plan = CgroupPlan(
        relpath="keystone/c",
        dirs=(
            CgroupDir(
                version=1,
                path=str(tmp_path / "c"),
                writes=(CgroupWrite("resources.pids_limit", ("pids.max",), "5"),),
            ),
        ),
    )
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cgroup.procs").write_text("")
    launch = launcher_module._Launch(
        {"strict": False, "cgroup": launch_plan_cgroup(plan)}, status_fd=-1
    )
    launch.cgroups()
    err = capfd.readouterr().err
    assert '"level":"warning"' in err
    assert '"control":"resources.pids_limit"' in err
    assert "has no pids.max (controller missing)" in err


def test_counters_from_fake_files(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    (v2 / "pids.events").write_text("max 3\n")
    plan = CgroupPlan(relpath="k/c", dirs=(CgroupDir(version=2, path=str(v2)),))
    assert oom_kills(plan) == 1
    assert pids_max_hits(plan) == 3
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert oom_kills(CgroupPlan(relpath="k/c", dirs=(CgroupDir(version=1, path=str(v1)),))) == 2
    old = tmp_path / "old"
    old.mkdir()
    (old / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 1\n")
    assert oom_kills(CgroupPlan(relpath="k/c", dirs=(CgroupDir(version=1, path=str(old)),))) == 1
    assert oom_kills(CgroupPlan(relpath="k/c", dirs=())) == 0


def test_delegate_moves_the_agent_into_a_leaf(tmp_path: Path) -> None:
    layout = fake_v2(tmp_path)
    manager = CgroupManager(layout)
    note = manager.delegate()
    leaf = tmp_path / "v2/system.slice/keystone.service/keystone-agent"
    assert note == f"moved the agent into {leaf}"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    # Once moved, components still hang from the delegated cgroup, not from the leaf.
    moved = CgroupLayout(
        kind="v2",
        hierarchies=(
            Hierarchy(
                version=2,
                mount=str(tmp_path / "v2"),
                controllers=("memory",),
                own="/system.slice/keystone.service/keystone-agent",
            ),
        ),
    )
    assert CgroupManager(moved).delegate() is None
    assert CgroupManager(moved).base(moved.hierarchies[0]) == (
        f"{tmp_path}/v2/system.slice/keystone.service/keystone"
    )
    assert CgroupManager(fake_v1(tmp_path)).delegate() is None


# -- real cgroups --------------------------------------------------------------------------


def proc_cgroups(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


@pytest.mark.usefixtures("cgroup_limits")
def test_v1_cgroups_on_this_host(
    name: str, isolated: Build, launch: Launch, py: str, host: HostFacts
) -> None:
    policy = isolated(
        make_recipe(
            name,
            resources=Resources(
                memory_limit=Size.parse("48Mi"), pids_limit=16, cpu_quota=50, io_weight=500
            ),
        )
    )
    assert policy.cgroup is not None
    files = []
    for control_file in ("memory.limit_in_bytes", "pids.max", "cpu.cfs_quota_us"):
        hierarchy = host.cgroup.v1(control_file.split(".")[0])
        assert hierarchy is not None
        d = next(d for d in policy.cgroup.dirs if d.path.startswith(hierarchy.mount + "/"))
        files.append(f"{d.path}/{control_file}")
    assert len(files) == 3
    script = (
        "import sys\n"
        "print(open('/proc/self/cgroup').read())\n"
        "for f in sys.argv[1:]: print(f.rsplit('/', 1)[1], open(f).read().strip())\n"
    )
    run = launch(policy, [py, "-c", script, *files])
    assert run.returncode == 0, run.stderr
    assert f"/{CGROUP_PARENT}/{name}\n" in run.stdout
    assert f"memory.limit_in_bytes {48 * 2**20}" in run.stdout
    assert "pids.max 16" in run.stdout
    assert "cpu.cfs_quota_us 50000" in run.stdout
    # finish() removed every directory.
    assert not any(Path(d.path).exists() for d in policy.cgroup.dirs)


@pytest.mark.usefixtures("cgroup_limits")
def test_remove_kills_processes_that_left_the_process_group(
    name: str, isolated: Build, launch: Launch, py: str, tmp_path: Path
) -> None:
    policy = isolated(make_recipe(name, resources=Resources(pids_limit=16)))
    pidfile = tmp_path / "daemon.pid"
    # The workload double-forks a daemon into its own session and exits at once.
    script = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    null = os.open('/dev/null', os.O_RDWR)\n"
        "    for fd in (0, 1, 2): os.dup2(null, fd)\n"
        "    if os.fork() == 0:\n"
        f"        open('{pidfile}', 'w').write(str(os.getpid())); time.sleep(300)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        f"while not os.path.exists('{pidfile}') or not open('{pidfile}').read(): time.sleep(0.01)\n"
    )
    run = launch(policy, [py, "-c", script])
    assert run.returncode == 0, run.stderr
    daemon = int(pidfile.read_text())
    # finish() ran: the daemon, still in the cgroup, is gone.
    assert run.report.leftover_pids == ()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(daemon, 0)
        except ProcessLookupError:
            break
        state = Path(f"/proc/{daemon}/stat").read_text().split()[2]
        if state == "Z":
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"daemon {daemon} survived the cgroup's removal")


@pytest.mark.usefixtures("cgroup_limits")
def test_sweep_removes_leftovers(name: str, host: HostFacts) -> None:
    manager = CgroupManager(host.cgroup, parent=cgroup_parent(host))
    plan, _ = manager.plan(name, CgroupLimits())
    assert plan is not None
    for d in plan.dirs:
        Path(d.path).mkdir(parents=True, exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        for d in plan.dirs:
            Path(d.path, "cgroup.procs").write_text(str(sleeper.pid))
        assert procs(plan) == {sleeper.pid}
        assert name in manager.sweep()
        assert sleeper.wait(timeout=5) == -signal.SIGKILL
        assert not any(Path(d.path).exists() for d in plan.dirs)
    finally:
        sleeper.kill()
        sleeper.wait()
        remove(plan)


def test_v2_on_a_cgroup2_mount(cgroup2_mount: Path, name: str, launch: Launch, py: str) -> None:
    own = Path("/proc/self/cgroup").read_text().splitlines()
    v2_own = next((line.split("::", 1)[1] for line in own if line.startswith("0::")), "/")
    controllers = tuple(
        (cgroup2_mount / v2_own.strip("/") / "cgroup.controllers").read_text().split()
    )
    layout = CgroupLayout(
        kind="v2",
        hierarchies=(
            Hierarchy(
                version=2, mount=str(cgroup2_mount), controllers=controllers, own=v2_own.rstrip("/")
            ),
        ),
    )
    plan, missing = CgroupManager(layout, parent=CGROUP_PARENT).plan(name, CgroupLimits())
    assert missing == []
    assert plan is not None
    policy = IsolationPolicy(component=name, mode="strict", cgroup=plan, no_new_privileges=False)
    script = (
        "import os, time\n"
        "print(open('/proc/self/cgroup').read(), flush=True)\n"
        "if os.fork() == 0:\n"
        "    null = os.open('/dev/null', os.O_RDWR)\n"
        "    for fd in (0, 1, 2): os.dup2(null, fd)\n"
        "    os.setsid(); time.sleep(300)\n"
    )
    run = launch(policy, [py, "-c", script])
    assert run.returncode == 0, run.stderr
    expected = f"0::{v2_own.rstrip('/')}/{CGROUP_PARENT}/{name}"
    assert expected in run.stdout
    # cgroup.kill took the orphaned sleeper with it, and the directory is gone.
    assert run.report.leftover_pids == ()
    assert not Path(plan.dirs[0].path).exists()


def test_oom_kills_reads_nothing_for_missing_dirs(tmp_path: Path) -> None:
    plan = CgroupPlan(relpath="k/c", dirs=(CgroupDir(version=1, path=str(tmp_path / "gone")),))
    assert oom_kills(plan) == 0
    assert procs(plan) == set()
    assert remove(plan, timeout=0.1) == []
