"""policy_for: recipe + host -> what the launcher enforces; strict vs best_effort."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from keystone_edge.errors import AgentConfigError, RecipeError
from keystone_edge.isolation import IsolationError, IsolationPolicy, policy_for
from keystone_edge.isolation.cgroups import CgroupLayout, Hierarchy
from keystone_edge.isolation.host import HostFacts
from keystone_edge.isolation.policy import IOPRIO_CLASS_BE, Identity
from keystone_edge.recipe.model import FilePermission, Permissions, Resources, Security
from keystone_edge.units import Size
from tests.isolation.conftest import CGROUP_PARENT, have, make_recipe, needs_root


def fake_host(tmp_path: Path, **changes: object) -> HostFacts:
    """A root host with every feature, cgroup v2 on a fake tree under tmp_path."""
    mnt = tmp_path / "cg"
    mnt.mkdir(exist_ok=True)
    base = HostFacts(
        euid=0,
        arch="x86_64",
        machine="x86_64",
        kernel="6.1.0",
        cap_last=40,
        caps_effective=(1 << 41) - 1,
        caps_ambient_supported=True,
        seccomp=True,
        apparmor=False,
        cgroup=CgroupLayout(
            kind="v2",
            hierarchies=(
                Hierarchy(
                    version=2, mount=str(mnt), controllers=("cpu", "io", "memory", "pids"), own=""
                ),
            ),
        ),
        userns_max=1000,
        userns_unprivileged=True,
    )
    return msgspec.structs.replace(base, **changes)


LIMITED = Resources(memory_limit=Size.parse("64Mi"), pids_limit=10, cpu_quota=50, open_files=128)


def test_full_policy_on_a_capable_host(tmp_path: Path) -> None:
    recipe = make_recipe(
        "com.example.full",
        security=Security(run_as="nobody", capabilities=["net_bind_service"]),
        resources=msgspec.structs.replace(LIMITED, nice=5, io_weight=300),
    )
    policy = policy_for(
        recipe, host=fake_host(tmp_path), mode="strict", work_dir="/srv/work", namespaces=["pid"]
    )
    assert policy.component == "com.example.full"
    assert policy.identity is not None
    assert (policy.identity.user, policy.identity.uid) == ("nobody", 65534)
    assert policy.capabilities == ("CAP_NET_BIND_SERVICE",)
    assert policy.drop_bounding
    assert policy.no_new_privileges
    assert policy.seccomp is not None
    assert policy.seccomp.source == "default"
    assert [(r.name, r.soft, r.hard) for r in policy.rlimits] == [("nofile", 128, 128)]
    assert policy.nice == 5
    assert policy.ioprio == (IOPRIO_CLASS_BE, 5)
    assert policy.cgroup is not None
    assert policy.cgroup.relpath == "keystone/com.example.full"
    pids = [w for d in policy.cgroup.dirs for w in d.writes if w.files == ("pids.max",)]
    assert pids[0].value == "12"  # 10 + the PID namespace's relay and init
    assert policy.namespaces.pid
    assert policy.files[0].path == "/srv/work"
    assert (policy.files[0].uid, policy.files[0].mode) == (65534, 0o750)
    assert policy.warnings == ()


def test_policy_round_trips_through_json(tmp_path: Path) -> None:
    recipe = make_recipe(security=Security(run_as="nobody"), resources=LIMITED)
    policy = policy_for(recipe, host=fake_host(tmp_path), work_dir="/w", namespaces=["net"])
    again = IsolationPolicy.from_json(policy.to_json())
    assert again == policy
    assert b'"memory_text":"64Mi"' in policy.to_json()


def test_strict_lists_every_gap_in_one_error(tmp_path: Path) -> None:
    host = fake_host(
        tmp_path, euid=1000, caps_effective=0, seccomp=False, cgroup=CgroupLayout(kind="none")
    )
    recipe = make_recipe(
        "com.example.gaps",
        security=Security(run_as="nobody", apparmor_profile="ks-default"),
        resources=LIMITED,
    )
    with pytest.raises(IsolationError) as caught:
        policy_for(recipe, host=host, mode="strict", namespaces=["net"])
    message = str(caught.value)
    assert message.startswith("com.example.gaps: isolation cannot be enforced on this host: ")
    for part in (
        "resources.cpu_quota: cgroups are not mounted on this host",
        "resources.memory_limit: cgroups are not mounted on this host",
        "resources.pids_limit: cgroups are not mounted on this host",
        "security.run_as: the agent runs as uid 1000 and cannot switch to nobody",
        "security.seccomp_profile: the kernel has no seccomp support",
        "security.apparmor_profile: AppArmor is not enabled on this host; "
        "profile 'ks-default' is not applied",
        "namespaces.net: private namespaces need root",
    ):
        assert part in message
    assert caught.value.code == "isolation_failed"
    assert caught.value.hint is not None
    assert "best_effort" in caught.value.hint


def test_best_effort_runs_with_warnings(tmp_path: Path) -> None:
    host = fake_host(tmp_path, euid=1000, caps_effective=0, cgroup=CgroupLayout(kind="none"))
    recipe = make_recipe(security=Security(run_as="nobody"), resources=LIMITED)
    policy = policy_for(recipe, host=host, mode="best_effort")
    assert policy.identity is None
    assert policy.cgroup is None
    assert {w.control for w in policy.warnings} == {
        "resources.cpu_quota",
        "resources.memory_limit",
        "resources.pids_limit",
        "security.run_as",
    }
    # Without root the bounding set stays, but no_new_privs keeps file capabilities out.
    assert not policy.drop_bounding
    assert policy.no_new_privileges
    assert policy.seccomp is not None


def test_missing_user_is_an_error_even_in_best_effort(tmp_path: Path) -> None:
    recipe = make_recipe(security=Security(run_as="no-such-user-keystone"))
    with pytest.raises(IsolationError, match="user 'no-such-user-keystone' does not exist") as e:
        policy_for(recipe, host=fake_host(tmp_path), mode="best_effort")
    assert e.value.hint == "create the user, or set create_user = true in the agent configuration"
    recipe = make_recipe(security=Security(run_as="nobody:no-such-group-keystone"))
    with pytest.raises(IsolationError, match="group 'no-such-group-keystone' does not exist"):
        policy_for(recipe, host=fake_host(tmp_path), mode="best_effort")


def test_recipe_mistakes_are_recipe_errors(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    with pytest.raises(RecipeError) as caught:
        policy_for(make_recipe(security=Security(capabilities=["NET_BIND_SERVISE"])), host=host)
    assert caught.value.key == "security.capabilities"
    assert "unknown capability 'NET_BIND_SERVISE' (did you mean CAP_NET_BIND_SERVICE?)" in str(
        caught.value
    )
    with pytest.raises(RecipeError) as caught:
        policy_for(make_recipe(security=Security(seccomp_profile="path:/nope.json")), host=host)
    assert caught.value.key == "security.seccomp_profile"
    assert "cannot read seccomp profile /nope.json" in str(caught.value)
    with pytest.raises(RecipeError, match="needs a work directory"):
        policy_for(
            make_recipe(permissions=Permissions(files=[FilePermission(path="rel")])), host=host
        )
    with pytest.raises(AgentConfigError, match="unknown namespaces"):
        policy_for(make_recipe(), host=host, namespaces=["uts"])  # type: ignore[list-item]


def test_unconfined_and_privileged(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    unconfined = policy_for(make_recipe(security=Security(seccomp_profile="unconfined")), host=host)
    assert unconfined.seccomp is None
    privileged = policy_for(
        make_recipe(security=Security(run_as="nobody"), resources=LIMITED),
        host=host,
        privileged=True,
        namespaces=["net"],
    )
    assert privileged.privileged
    assert privileged.identity is None
    assert privileged.seccomp is None
    assert not privileged.namespaces.any
    assert not privileged.no_new_privileges
    assert privileged.cgroup is not None  # limits still apply to install scripts


def test_files_default_to_the_run_as_user(tmp_path: Path) -> None:
    perms = Permissions(
        files=[
            FilePermission(path="data/", mode="0750"),
            FilePermission(path="/var/log/x.log", owner="root:nogroup", mode="640"),
        ]
    )
    policy = policy_for(
        make_recipe(security=Security(run_as="nobody"), permissions=perms),
        host=fake_host(tmp_path),
        work_dir="/w",
        namespaces=["mount"],
    )
    _work, data, log = policy.files
    assert (data.path, data.create, data.mode, data.uid) == ("/w/data", "dir", 0o750, 65534)
    assert (log.path, log.create, log.mode, log.uid, log.gid) == (
        "/var/log/x.log",
        "file",
        0o640,
        0,
        65534,
    )
    assert policy.namespaces.writable == ("/w", "/w/data", "/var/log/x.log")


def test_apparmor_profile_needs_apparmor(tmp_path: Path) -> None:
    recipe = make_recipe(security=Security(apparmor_profile="ks-default"))
    policy = policy_for(recipe, host=fake_host(tmp_path, apparmor=False), mode="best_effort")
    assert policy.apparmor_profile is None
    (warning,) = policy.warnings
    assert warning.control == "security.apparmor_profile"


def test_this_host_in_both_modes(host: HostFacts) -> None:
    """Whatever this host lacks shows up as warnings, or as the strict error."""
    recipe = make_recipe(resources=LIMITED, security=Security(apparmor_profile="ks-default"))
    lenient = policy_for(recipe, host=host, mode="best_effort", cgroup_root=CGROUP_PARENT)
    if lenient.warnings:
        with pytest.raises(IsolationError):
            policy_for(recipe, host=host, mode="strict", cgroup_root=CGROUP_PARENT)
    else:
        assert policy_for(recipe, host=host, mode="strict", cgroup_root=CGROUP_PARENT)


@needs_root
def test_devices_are_granted_through_their_group(tmp_path: Path, host: HostFacts) -> None:
    node = tmp_path / "sensor0"
    os.mknod(node, 0o660 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(node, 0, 65534)  # group nogroup stands in for "dialout"
    root_node = tmp_path / "rootonly"
    os.mknod(root_node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    perms = Permissions(devices=[str(node), str(root_node), str(tmp_path / "absent")])
    recipe = make_recipe(security=Security(run_as="nobody:users"), permissions=perms)
    policy = policy_for(recipe, host=host, mode="best_effort", cgroup_root=CGROUP_PARENT)
    assert policy.identity is not None
    assert 65534 in policy.identity.groups
    messages = {w.control: w.message for w in policy.warnings}
    assert "belongs to group root" in messages["permissions.devices[1]"]
    assert "is not present" in messages["permissions.devices[2]"]
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(RecipeError, match="is not a device node"):
        policy_for(
            make_recipe(
                security=Security(run_as="nobody"), permissions=Permissions(devices=[str(plain)])
            ),
            host=host,
        )


@pytest.fixture
def new_user() -> Iterator[str]:
    if os.geteuid() != 0 or not have("useradd"):
        pytest.skip("needs root and useradd")
    user = f"ks{uuid.uuid4().hex[:8]}"
    yield user
    subprocess.run(["userdel", user], check=False, capture_output=True)
    subprocess.run(["groupdel", user], check=False, capture_output=True)


def test_create_user_when_configured(new_user: str, host: HostFacts) -> None:
    recipe = make_recipe(security=Security(run_as=new_user))
    with pytest.raises(IsolationError):
        policy_for(recipe, host=host, cgroup_root=CGROUP_PARENT)
    policy = policy_for(recipe, host=host, create_user=True, cgroup_root=CGROUP_PARENT)
    assert isinstance(policy.identity, Identity)
    assert policy.identity.user == new_user
    assert policy.identity.uid > 0
    assert policy.identity.home != ""
