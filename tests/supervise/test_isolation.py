"""The supervisor with isolation policies: refused starts, launcher failures, OOM and
pids events, warnings once per version, scripts and probes under the component's policy.

Real processes through the real launcher; tests that need cgroups or a user switch run
as root and are skipped with the reason otherwise.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from keystone_edge.errors import ComponentError
from keystone_edge.isolation import IsolationPolicy, IsolationWarning, policy_for, probe_host
from keystone_edge.isolation.cgroups import CgroupWrite
from keystone_edge.observe.events import Event
from keystone_edge.recipe.model import Metadata, Recipe, Resources, Security
from keystone_edge.supervise.lifecycle import State
from keystone_edge.supervise.supervisor import RunPlan
from keystone_edge.units import Size

from .conftest import plan, python, recipe, run, supervising

APP = "com.example.app"
HOST = probe_host()
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups, setuid)")
needs_memory = pytest.mark.skipif(
    os.geteuid() != 0 or "memory" not in HOST.cgroup.controllers(),
    reason="needs root and a memory cgroup controller",
)
SLEEP = {"exec": {"command": "sleep", "args": ["1000"]}}


@pytest.fixture
def parent() -> Iterator[str]:
    name = f"keystone-test-{os.getpid()}"
    yield name
    for h in HOST.cgroup.hierarchies:
        left = Path(h.mount + h.own, name)
        assert not left.exists(), f"cgroup {left} left behind"


def isolate(
    p: RunPlan,
    parent: str,
    *,
    security: Security | None = None,
    resources: Resources | None = None,
    mode: str = "best_effort",
) -> RunPlan:
    """``p`` with the policy the agent would build for these recipe sections."""
    source = Recipe(
        metadata=Metadata(name=p.name, version=p.version),
        security=security or Security(),
        resources=resources or Resources(),
    )
    policy = policy_for(
        source,
        cgroup_root=parent,
        mode="strict" if mode == "strict" else "best_effort",
        work_dir=str(p.work_dir),
    )
    return dataclasses.replace(p, isolation=policy)


def states(events: list[Event]) -> list[tuple[str, str, str]]:
    return [
        (e.payload["from_state"], e.payload["to_state"], e.payload["trigger"])
        for e in events
        if e.type == "component.state"
    ]


def test_a_refused_isolation_fails_the_start_once_with_the_reason(tmp_path: Path) -> None:
    reason = (
        f"{APP}: security.run_as: user 'ghost' does not exist on this device; "
        "create the user, or set create_user = true in the agent configuration"
    )
    p = dataclasses.replace(
        plan(tmp_path, recipe(run={**SLEEP, "restart_policy": "always"})), isolation_error=reason
    )

    async def main() -> list[Event]:
        async with supervising(tmp_path) as (sup, rec):
            await sup.install(p)  # nothing runs at install without a script
            with pytest.raises(ComponentError, match="user 'ghost' does not exist"):
                await sup.start(p)
            status = sup.status(APP)
            assert (status.state, status.reason) == (State.FAILED, reason)
            with pytest.raises(ComponentError, match="is FAILED and not ready"):
                await sup.wait_ready(APP, 1)
            return rec.events

    assert states(run(main())) == [
        ("NONE", "INSTALLED", "INSTALLED_OK"),
        ("INSTALLED", "STARTING", "START"),
        ("STARTING", "FAILED", "SPAWN_FAILED"),
    ]


def test_a_refused_isolation_fails_the_install_script(tmp_path: Path) -> None:
    reason = f"{APP}: isolation cannot be enforced on this host: resources.cpu_quota: nope"
    p = dataclasses.replace(
        plan(tmp_path, recipe(install={"script": "touch ran"}, run=SLEEP)),
        isolation_error=reason,
    )

    async def main() -> None:
        async with supervising(tmp_path) as (sup, _rec):
            with pytest.raises(ComponentError) as info:
                await sup.install(p)
            assert str(info.value) == reason
            assert sup.status(APP).state is State.FAILED

    run(main())
    assert not (p.work_dir / "ran").exists()


@root_only
def test_a_launcher_failure_is_spawn_failed_not_a_crash_loop(tmp_path: Path, parent: str) -> None:
    p = isolate(
        plan(tmp_path, recipe(run={**SLEEP, "restart_policy": "always"})),
        parent,
        resources=Resources(pids_limit=10),
        mode="strict",
    )
    assert p.isolation is not None
    cgroup = p.isolation.cgroup
    if cgroup is None or not any(d.writes for d in cgroup.dirs):
        pytest.skip("no pids controller to write a bogus value to")
    bogus = CgroupWrite("resources.pids_limit", ("pids.max",), "bogus")
    dirs = tuple(
        msgspec.structs.replace(d, writes=(bogus,)) if d.writes else d for d in cgroup.dirs
    )
    policy = msgspec.structs.replace(p.isolation, cgroup=msgspec.structs.replace(cgroup, dirs=dirs))
    p = dataclasses.replace(p, isolation=policy)

    async def main() -> list[Event]:
        async with supervising(tmp_path) as (sup, rec):
            await sup.install(p)
            with pytest.raises(ComponentError, match="isolation failed: cannot write bogus"):
                await sup.start(p)
            assert sup.status(APP).state is State.FAILED
            return rec.events

    events = run(main())
    assert states(events)[-1] == ("STARTING", "FAILED", "SPAWN_FAILED")
    reason = events[-1].payload["reason"]
    assert reason.startswith(f"{APP}: isolation failed: cannot write bogus to ")
    assert reason.endswith("/pids.max: Invalid argument")


@needs_memory
def test_an_oom_kill_is_published_and_counts_as_a_failure(tmp_path: Path, parent: str) -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(b'x' * (4 << 20))\n"
    p = isolate(
        plan(
            tmp_path,
            recipe(
                run={
                    "exec": python(hog),
                    "restart_policy": "on-failure",
                    "backoff": {"max_retries": 0},
                }
            ),
        ),
        parent,
        resources=Resources(memory_limit=Size.parse("32Mi")),
    )

    async def main() -> list[Event]:
        async with supervising(tmp_path) as (sup, rec):
            await sup.install(p)
            await sup.start(p)
            await rec.state("FAILED", timeout=30)
            assert sup.status(APP).last_exit is not None
            return rec.events

    events = run(main())
    kinds = [e.type for e in events]
    oom = kinds.index("component.oom")
    assert events[oom].payload == {
        "component": APP,
        "version": "1.0.0",
        "reason": "killed by the OOM killer (memory_limit 32Mi)",
        "memory_limit": "32Mi",
    }
    failed = events[oom + 1]  # the cause, then the consequence
    assert (failed.type, failed.payload["trigger"]) == ("component.state", "GIVE_UP")
    assert failed.payload["reason"] == (
        "killed by the OOM killer (memory_limit 32Mi); backoff.max_retries is 0"
    )
    assert failed.payload["signal"] == 9


def test_isolation_warnings_are_published_once_per_version(tmp_path: Path) -> None:
    warning = IsolationWarning(
        control="security.apparmor_profile", message="AppArmor is not enabled on this host"
    )
    policy = IsolationPolicy(component=APP, mode="best_effort", warnings=(warning,))
    v1 = dataclasses.replace(plan(tmp_path, recipe(run=SLEEP)), isolation=policy)
    v2 = dataclasses.replace(plan(tmp_path, recipe(version="2.0.0", run=SLEEP)), isolation=policy)
    text = "security.apparmor_profile: AppArmor is not enabled on this host"

    async def main() -> list[Event]:
        async with supervising(tmp_path) as (sup, rec):
            await sup.install(v1)
            await sup.start(v1)
            assert sup.status(APP).isolation_warnings == (text,)
            await sup.restart(APP)
            await sup.restart(APP)
            await sup.install(v2)
            await sup.stop(APP)
            await sup.start(v2)
            return rec.of("component.isolation")

    published = run(main())
    assert [(e.payload["version"], e.payload["warnings"]) for e in published] == [
        ("1.0.0", [text]),
        ("2.0.0", [text]),
    ]
    assert published[0].payload["level"] == "warning"


@root_only
def test_scripts_and_probes_run_under_the_components_policy(tmp_path: Path, parent: str) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    # Relative paths: the scripts run in the work dir (nobody's), inside a tmp_path that
    # nobody cannot traverse. Strict mode: a script sharing the workload's cgroup would be
    # refused (it still holds the workload), so success shows each has its own.
    p = plan(
        tmp_path,
        recipe(
            install={"script": "id -un > installed"},
            shutdown={"script": "id -un > shut-down"},
            run={
                **SLEEP,
                "health": {"check": 'cmd:test "$(id -un)" = nobody', "interval": "100ms"},
            },
        ),
    )
    p = isolate(p, parent, security=Security(run_as="nobody"), resources=Resources(pids_limit=20),
                mode="strict")  # fmt: skip

    async def main() -> None:
        async with supervising(tmp_path) as (sup, _rec):
            await sup.install(p)
            assert p.work_dir.stat().st_uid == nobody.pw_uid  # the supervisor chowned it
            await sup.start(p)
            await sup.wait_ready(APP, 10)  # the probe passed: it ran as nobody
            assert sup.status(APP).health == "healthy"
            await sup.stop(APP)
            assert sup.status(APP).state is State.STOPPED

    run(main())
    assert (p.work_dir / "installed").read_text() == "nobody\n"
    assert (p.work_dir / "shut-down").read_text() == "nobody\n"
    assert (p.work_dir / "shut-down").stat().st_uid == nobody.pw_uid
