"""Linux capabilities: names, numbers and masks, and reading a process's capability sets.

Rules this module enforces:

- A recipe names capabilities the way ``capabilities(7)`` does, with or without the
  ``CAP_`` prefix and in any case: ``CAP_NET_BIND_SERVICE``, ``net_bind_service``.
  An unknown name is an error that suggests the closest known one; it never silently
  drops out of the kept set.
- Sets travel as 64-bit masks (bit ``n`` = capability number ``n``), which is what the
  kernel's ``capset(2)`` and ``/proc/<pid>/status`` speak.

The launcher applies the masks; this module only computes and reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

__all__ = [
    "CAPABILITIES",
    "CapabilitySets",
    "cap_last",
    "mask_of",
    "names_of",
    "normalise",
    "read_capabilities",
]

# capabilities(7) / linux/capability.h, in number order.
CAPABILITIES: Final[dict[str, int]] = {
    name: number
    for number, name in enumerate(
        (
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_LINUX_IMMUTABLE",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_BROADCAST",
            "CAP_NET_ADMIN",
            "CAP_NET_RAW",
            "CAP_IPC_LOCK",
            "CAP_IPC_OWNER",
            "CAP_SYS_MODULE",
            "CAP_SYS_RAWIO",
            "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE",
            "CAP_SYS_PACCT",
            "CAP_SYS_ADMIN",
            "CAP_SYS_BOOT",
            "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE",
            "CAP_SYS_TIME",
            "CAP_SYS_TTY_CONFIG",
            "CAP_MKNOD",
            "CAP_LEASE",
            "CAP_AUDIT_WRITE",
            "CAP_AUDIT_CONTROL",
            "CAP_SETFCAP",
            "CAP_MAC_OVERRIDE",
            "CAP_MAC_ADMIN",
            "CAP_SYSLOG",
            "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND",
            "CAP_AUDIT_READ",
            "CAP_PERFMON",
            "CAP_BPF",
            "CAP_CHECKPOINT_RESTORE",
        )
    )
}
_BY_NUMBER: Final[dict[int, str]] = {number: name for name, number in CAPABILITIES.items()}


def normalise(name: str) -> str:
    """``net_bind_service`` -> ``CAP_NET_BIND_SERVICE``; ``ValueError`` for unknown names."""
    canonical = name.strip().upper()
    if not canonical.startswith("CAP_"):
        canonical = "CAP_" + canonical
    if canonical not in CAPABILITIES:
        import difflib

        close = difflib.get_close_matches(canonical, CAPABILITIES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown capability {name!r}{hint}")
    return canonical


def mask_of(names: Iterable[str]) -> int:
    """The 64-bit mask of the named capabilities."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[normalise(name)]
    return mask


def names_of(mask: int) -> list[str]:
    """The names of the capabilities set in ``mask``; unknown bits read ``CAP_<n>``."""
    return [_BY_NUMBER.get(bit, f"CAP_{bit}") for bit in range(64) if mask >> bit & 1]


def cap_last(proc: Path = Path("/proc")) -> int:
    """The highest capability number this kernel knows (``cap_last_cap``)."""
    try:
        return int((proc / "sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        # Only kernels before 3.2 lack the file (or a /proc we were pointed at wrongly):
        # assume the newest capability this module knows.
        return max(_BY_NUMBER)


class CapabilitySets:
    """One process's capability sets, as ``/proc/<pid>/status`` shows them."""

    __slots__ = ("ambient", "bounding", "effective", "inheritable", "permitted")

    def __init__(
        self, *, inheritable: int, permitted: int, effective: int, bounding: int, ambient: int
    ) -> None:
        self.inheritable = inheritable
        self.permitted = permitted
        self.effective = effective
        self.bounding = bounding
        self.ambient = ambient

    def __repr__(self) -> str:
        return (
            f"CapabilitySets(effective={self.effective:#x}, permitted={self.permitted:#x}, "
            f"bounding={self.bounding:#x}, ambient={self.ambient:#x})"
        )

    @classmethod
    def parse(cls, status: str) -> CapabilitySets:
        """Read the ``Cap*`` lines of a ``/proc/<pid>/status`` text."""
        fields: dict[str, int] = {}
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}:
                fields[key] = int(value.strip(), 16)
        return cls(
            inheritable=fields.get("CapInh", 0),
            permitted=fields.get("CapPrm", 0),
            effective=fields.get("CapEff", 0),
            bounding=fields.get("CapBnd", 0),
            ambient=fields.get("CapAmb", 0),
        )


def read_capabilities(pid: int | str = "self", proc: Path = Path("/proc")) -> CapabilitySets:
    """The capability sets of process ``pid`` (``self`` by default)."""
    return CapabilitySets.parse((proc / str(pid) / "status").read_text())
