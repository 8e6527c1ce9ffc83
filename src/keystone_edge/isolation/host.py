"""What this host can enforce: privileges, cgroups, seccomp, AppArmor, namespaces.

Probed from ``/proc`` and ``/sys`` without side effects; the policy builder decides what
to do about a missing feature, and ``keystonectl doctor`` reports it. The roots are
parameters so tests can point them at a fake tree.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import msgspec

from keystone_edge.isolation.caps import cap_last, read_capabilities
from keystone_edge.isolation.cgroups import CgroupLayout, detect_layout
from keystone_edge.isolation.seccomp import host_arch

__all__ = ["HostFacts", "apparmor_profiles", "probe_host"]


class HostFacts(msgspec.Struct, frozen=True):
    euid: int
    arch: str | None  # seccomp architecture name; None when unsupported
    machine: str
    kernel: str
    cap_last: int
    caps_effective: int  # the agent's own effective set
    caps_ambient_supported: bool
    seccomp: bool
    apparmor: bool
    cgroup: CgroupLayout
    userns_max: int | None  # /proc/sys/user/max_user_namespaces
    userns_unprivileged: bool | None  # Debian's kernel.unprivileged_userns_clone

    @property
    def root(self) -> bool:
        return self.euid == 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def probe_host(proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> HostFacts:
    """Probe the host the calling process runs on."""
    status = _read(proc / "self/status") or ""
    machine = platform.machine()
    try:
        arch: str | None = host_arch(machine)
    except ValueError:
        arch = None
    try:
        caps = read_capabilities("self", proc)
        effective = caps.effective
    except OSError:
        effective = 0
    unpriv = _int(_read(proc / "sys/kernel/unprivileged_userns_clone"))
    return HostFacts(
        euid=os.geteuid(),
        arch=arch,
        machine=machine,
        kernel=platform.release(),
        cap_last=cap_last(proc),
        caps_effective=effective,
        caps_ambient_supported="CapAmb:" in status,
        seccomp="Seccomp:" in status,
        apparmor=_read(sys / "module/apparmor/parameters/enabled") == "Y",
        cgroup=detect_layout(mountinfo=proc / "self/mountinfo", cgroup=proc / "self/cgroup"),
        userns_max=_int(_read(proc / "sys/user/max_user_namespaces")),
        userns_unprivileged=None if unpriv is None else unpriv == 1,
    )


def apparmor_profiles(sys: Path = Path("/sys")) -> set[str] | None:
    """Names of the loaded AppArmor profiles; ``None`` when the list cannot be read."""
    text = _read(sys / "kernel/security/apparmor/profiles")
    if text is None:
        return None
    # Lines read "name (enforce)"; names may contain spaces, the mode never does.
    return {line.rsplit(" (", 1)[0] for line in text.splitlines() if line}
