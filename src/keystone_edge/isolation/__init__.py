"""Least privilege for native components: cgroups, rlimits, identity, capabilities,
seccomp, AppArmor and namespaces, applied by a small launcher before the workload runs.

The agent builds an :class:`IsolationPolicy` with :func:`policy_for`, runs the command line
from :func:`wrap_argv` instead of the workload, reads the launcher's status with
:func:`read_status` and, after the exit, calls :func:`finish` to learn whether the OOM
killer struck and to remove the component's cgroups. ``docs/isolation.md`` describes what
each recipe key does on cgroup v1 and v2 hosts.
"""

from __future__ import annotations

from keystone_edge.isolation.cgroups import (
    CgroupLayout,
    CgroupLimits,
    CgroupManager,
    CgroupPlan,
    detect_layout,
    reclaim,
)
from keystone_edge.isolation.host import HostFacts, probe_host
from keystone_edge.isolation.policy import (
    Identity,
    IsolationError,
    IsolationPolicy,
    IsolationWarning,
    Mode,
    Namespaces,
    asks_for_isolation,
    policy_for,
)
from keystone_edge.isolation.seccomp import SeccompProfile
from keystone_edge.isolation.spawn import (
    EXIT_CANNOT_EXECUTE,
    EXIT_ISOLATION_FAILED,
    EXIT_NOT_FOUND,
    ExitReport,
    LaunchMessage,
    LaunchStatus,
    exit_report,
    finish,
    launch_plan,
    needs_launcher,
    parse_status,
    read_status,
    release,
    script_policy,
    wrap_argv,
)

__all__ = [
    "EXIT_CANNOT_EXECUTE",
    "EXIT_ISOLATION_FAILED",
    "EXIT_NOT_FOUND",
    "CgroupLayout",
    "CgroupLimits",
    "CgroupManager",
    "CgroupPlan",
    "ExitReport",
    "HostFacts",
    "Identity",
    "IsolationError",
    "IsolationPolicy",
    "IsolationWarning",
    "LaunchMessage",
    "LaunchStatus",
    "Mode",
    "Namespaces",
    "SeccompProfile",
    "detect_layout",
    "exit_report",
    "finish",
    "launch_plan",
    "needs_launcher",
    "parse_status",
    "asks_for_isolation",
    "policy_for",
    "probe_host",
    "read_status",
    "reclaim",
    "release",
    "script_policy",
    "wrap_argv",
]
