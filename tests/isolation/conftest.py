"""Fixtures for the isolation tests: recipes, real launches through the launcher, hosts.

Tests that need root or a kernel feature skip with the reason. Component cgroups go under
``keystone-test-<random>/``, one parent per test session: never the real agent's
``keystone/``, and never another session's (cgroup hierarchies are shared by everything on
the host, including test runs in other checkouts). Every launch is cleaned up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from keystone_edge.isolation import (
    ExitReport,
    IsolationPolicy,
    LaunchStatus,
    finish,
    parse_status,
    policy_for,
    probe_host,
    release,
    wrap_argv,
)
from keystone_edge.isolation.cgroups import CgroupManager
from keystone_edge.isolation.host import HostFacts
from keystone_edge.isolation.policy import Mode, NamespaceName
from keystone_edge.recipe.model import Metadata, Permissions, Recipe, Resources, Security

CGROUP_PARENT = f"keystone-test-{uuid.uuid4().hex[:8]}"
SYSTEM_PYTHON = "/usr/bin/python3"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="session")
def host() -> Iterator[HostFacts]:
    facts = probe_host()
    yield facts
    if os.geteuid() == 0:
        manager = CgroupManager(facts.cgroup, parent=cgroup_parent(facts))
        manager.sweep()
        manager.prune()


@pytest.fixture
def name() -> str:
    """A component name no other test (or earlier run) uses."""
    return f"com.keystone-test.c{uuid.uuid4().hex[:10]}"


def make_recipe(
    name: str = "com.example.test",
    *,
    security: Security | None = None,
    resources: Resources | None = None,
    permissions: Permissions | None = None,
) -> Recipe:
    return Recipe(
        metadata=Metadata(name=name, version="1.0.0"),
        security=security or Security(),
        resources=resources or Resources(),
        permissions=permissions or Permissions(),
    )


def cgroup_parent(host: HostFacts) -> str:
    """Where this session's component cgroups go on ``host``.

    Nested under the test process's own cgroup on v1/hybrid; from the root on v2, where
    the test process's own cgroup (a login session, a service) usually holds processes and
    so cannot enable controllers for children.
    """
    return ("/" if host.cgroup.kind == "v2" else "") + CGROUP_PARENT


@pytest.fixture
def cgroup_limits(host: HostFacts) -> HostFacts:
    """A host where this test run can create cgroups with cpu, memory and pids limits."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    missing = {"cpu", "memory", "pids"} - host.cgroup.controllers()
    if missing:
        pytest.skip(f"cgroup controllers missing ({host.cgroup.kind}): {sorted(missing)}")
    return host


@pytest.fixture
def py() -> str:
    """A Python any user can run (the venv may live under /root, unreadable to nobody)."""
    if Path(SYSTEM_PYTHON).exists():
        return SYSTEM_PYTHON
    if os.geteuid() == 0:
        pytest.skip(f"needs {SYSTEM_PYTHON} for workloads that run as another user")
    return sys.executable


@dataclass
class Run:
    policy: IsolationPolicy
    returncode: int
    stdout: str
    stderr: str
    status: LaunchStatus
    report: ExitReport


Launch = Callable[..., Run]
Build = Callable[..., IsolationPolicy]


@pytest.fixture
def launch() -> Iterator[Launch]:
    """Run argv through the launcher under a policy; wait; report (OOM etc.) and clean up."""
    policies: list[IsolationPolicy] = []

    def run(
        policy: IsolationPolicy,
        argv: Sequence[str],
        *,
        cwd: str | Path = "/",
        timeout: float = 60.0,
        on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    ) -> Run:
        policies.append(policy)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                wrap_argv(policy, argv, status_fd=write_fd),
                pass_fds=(write_fd,),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, "rb") as status_pipe:
            status = parse_status(status_pipe.read())
        if on_start is not None:
            on_start(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Everything the workload started is in its cgroups, whatever its session.
            release(policy)
            proc.kill()
            proc.communicate()
            raise
        report = finish(policy, proc.returncode, status)
        return Run(policy, proc.returncode, stdout, stderr, status, report)

    yield run
    for policy in policies:
        release(policy)


@pytest.fixture
def isolated(host: HostFacts) -> Build:
    """``policy_for`` with the test cgroup parent and this host."""

    def build(
        recipe: Recipe,
        *,
        mode: Mode = "strict",
        namespaces: Sequence[NamespaceName] = (),
        work_dir: str | None = None,
    ) -> IsolationPolicy:
        return policy_for(
            recipe,
            cgroup_root=cgroup_parent(host),
            mode=mode,
            namespaces=namespaces,
            work_dir=work_dir,
            host=host,
        )

    return build


@pytest.fixture
def cgroup2_mount(tmp_path: Path) -> Iterator[Path]:
    """A cgroup2 hierarchy mounted for the test (the same unified tree as the host's)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount cgroup2")
    target = tmp_path / "cgroup2"
    target.mkdir()
    result = subprocess.run(
        ["mount", "-t", "cgroup2", "none", str(target)], check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount cgroup2 here: {result.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def replace(obj: msgspec.Struct, **changes: object) -> msgspec.Struct:
    return msgspec.structs.replace(obj, **changes)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
