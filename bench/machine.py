"""Facts about the machine a run came from, recorded next to every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["machine_facts"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cgroup_version() -> str:
    return "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"


def _cc_version() -> str:
    try:
        done = subprocess.run(["cc", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


def machine_facts(versions: dict[str, str]) -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_mb": _mem_total_mb(),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "os": _os_release(),
        "cgroup": _cgroup_version(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cc": _cc_version(),
        "clock_ticks_per_second": os.sysconf("SC_CLK_TCK"),
        "running_as_root": os.geteuid() == 0,
        "versions": versions,
    }
