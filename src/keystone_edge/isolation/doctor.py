"""``keystonectl doctor``: is this host ready to run components the way recipes ask?

Every check is data (:class:`Check`: name, status, detail, fix); :func:`run_checks`
collects them and the CLI only renders. Checks never change anything on the host.

Statuses: ``ok``; ``warn`` (works, but something a recipe may ask for is not available or
not advisable); ``fail`` (KeyStone cannot work as configured); ``skip`` (could not be
checked here, and the detail says why). ``doctor`` exits 1 when any check fails.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from keystone_edge.isolation.cgroups import CgroupLayout
from keystone_edge.isolation.host import HostFacts, apparmor_profiles, probe_host

__all__ = [
    "Check",
    "Status",
    "check_agent",
    "check_apparmor",
    "check_cgroups",
    "check_clock",
    "check_disk",
    "check_privileges",
    "check_seccomp",
    "check_socket",
    "check_user_namespaces",
    "default_socket",
    "exit_code",
    "isolation_findings",
    "run_checks",
]

Status = Literal["ok", "warn", "fail", "skip"]

SOCKET_ENV: Final = "KEYSTONE_SOCKET"
_LIMIT_CONTROLLERS: Final = ("cpu", "memory", "pids", "io")
_MIN_YEAR: Final = 2024
# Free space below these is a warning / a failure (artifacts and rollback copies need room).
_WARN_FREE: Final = 512 * 2**20
_FAIL_FREE: Final = 64 * 2**20
_PR_GET_SECCOMP: Final = 21
_AGENT_FIX: Final = (
    "check `systemctl status keystone` and the agent log; remove a stale socket left by a "
    "crashed agent"
)


class Check(msgspec.Struct, frozen=True):
    name: str
    status: Status
    detail: str
    fix: str = ""


def exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0


# -- the agent -----------------------------------------------------------------------------


def _health_via_client(path: Path, timeout: float) -> dict[str, Any]:
    from keystone_edge.api.client import AgentClient

    with AgentClient(path, timeout=timeout) as client:
        return client.health()


def _health_via_socket(path: Path, timeout: float) -> dict[str, Any]:
    """``GET /healthz`` over the Unix socket with nothing but the standard library."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: keystone\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if len(data) > 1 << 20:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ")
    if len(parts) < 2 or parts[1] != "200":
        raise OSError(f"unexpected answer: {status_line or 'nothing'}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    result = msgspec.json.decode(body)
    if not isinstance(result, dict):
        raise OSError("unexpected /healthz body")
    return result


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def check_agent(
    path: Path,
    *,
    timeout: float = 3.0,
    fetch: Callable[[Path, float], dict[str, Any]] | None = None,
) -> tuple[Check, dict[str, Any] | None]:
    """Is the agent running and answering on ``path``? Returns its health body when it is."""
    name = "agent"
    if not path.exists():
        return Check(
            name,
            "fail",
            f"no agent socket at {path}",
            "start the agent (systemctl start keystone, or keystone-agent --root DIR); "
            f"point doctor at another agent with --root or ${SOCKET_ENV}",
        ), None
    if fetch is None:
        try:
            import keystone_edge.api.client  # noqa: F401 - only to learn whether it is there
        except ImportError:
            fetch = _health_via_socket
        else:
            fetch = _health_via_client
    try:
        health = fetch(path, timeout)
    except PermissionError:
        return Check(
            name,
            "fail",
            f"no permission to use {path}",
            "run doctor as root or as a member of the agent's admin group",
        ), None
    except Exception as exc:  # noqa: BLE001 - any failure to talk is the finding itself
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        hint = getattr(exc, "hint", None)
        return Check(
            name,
            "fail",
            f"agent at {path} is not answering: {detail}",
            hint or _AGENT_FIX,
        ), None
    version = health.get("version", "?")
    status = health.get("status", "?")
    uptime = health.get("uptime")
    up = f", up {int(uptime)}s" if isinstance(uptime, int | float) else ""
    state: Status = "ok" if status in {"ok", "running", "healthy"} else "warn"
    return Check(
        name,
        state,
        f"agent {version} answering on {path} (status {status}{up})",
        "" if state == "ok" else "see `keystonectl component list` for what is wrong",
    ), health


def check_socket(path: Path) -> Check:
    """Only root and the admin group may use the API socket (mode 0660 or tighter)."""
    name = "socket permissions"
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(name, "skip", f"no socket at {path} to check")
    except OSError as exc:
        return Check(name, "skip", f"cannot stat {path}: {exc.strerror}")
    mode = stat.S_IMODE(st.st_mode)
    owner = _user_name(st.st_uid)
    group = _group_name(st.st_gid)
    detail = f"{path} is {mode:04o} {owner}:{group}"
    if mode & 0o007:
        return Check(
            name,
            "fail",
            detail + ": anyone on the device can control the agent",
            f"chmod 0660 {path} (and set api.socket_mode = '0660' in agent.toml)",
        )
    if st.st_uid not in {0, os.geteuid()}:
        return Check(name, "warn", detail + ": owned by neither root nor you", f"chown root {path}")
    if mode & 0o060 and st.st_gid == 0:
        return Check(name, "ok", detail + " (group root)")
    return Check(name, "ok", detail)


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def isolation_findings(items: Sequence[tuple[str, Sequence[str]]]) -> Check:
    """Components whose requested isolation is not enforced: ``[(component, warnings)]``."""
    name = "isolation enforced"
    gaps = [(c, list(w)) for c, w in items if w]
    if not gaps:
        return Check(name, "ok", f"every component's isolation is enforced ({len(items)} checked)")
    lines = "; ".join(f"{c}: {', '.join(w)}" for c, w in gaps)
    return Check(
        name,
        "warn",
        f"{len(gaps)} component(s) run with controls skipped: {lines}",
        "fix the host (the other checks say what is missing), or accept it; with "
        "isolation mode strict these components would not start",
    )


def _findings_from_health(health: Mapping[str, Any] | None) -> Check:
    if health is None:
        return Check("isolation enforced", "skip", "the agent is not reachable")
    raw = health.get("isolation_warnings")
    if not isinstance(raw, dict):
        return Check(
            "isolation enforced",
            "skip",
            "this agent does not report isolation findings (/healthz has no isolation_warnings)",
        )
    items = [
        (str(c), [str(w) for w in ws]) for c, ws in raw.items() if isinstance(ws, list | tuple)
    ]
    return isolation_findings(items)


# -- the host ------------------------------------------------------------------------------


def check_privileges(host: HostFacts) -> Check:
    name = "privileges"
    if host.root:
        return Check(name, "ok", "running as root: every isolation control can be applied")
    return Check(
        name,
        "warn",
        f"running as uid {host.euid}: run_as, cgroup limits, namespaces and capabilities "
        "need an agent running as root",
        "run the agent as root (systemd service), or accept best_effort isolation",
    )


def check_cgroups(layout: CgroupLayout, *, root: bool) -> Check:
    name = "cgroups"
    if layout.kind == "none":
        return Check(
            name,
            "fail",
            "no cgroup hierarchy is mounted: resource limits cannot be enforced",
            "mount cgroup2 on /sys/fs/cgroup (or boot with systemd, which does)",
        )
    available = layout.controllers()
    missing = [c for c in _LIMIT_CONTROLLERS if c not in available]
    kinds = {
        "v2": "cgroup v2 (unified)",
        "v1": "cgroup v1",
        "hybrid": "hybrid (v1 controllers, cgroup2 for tracking)",
    }
    detail = f"{kinds[layout.kind]}; controllers: {', '.join(sorted(available)) or 'none'}"
    if missing:
        names = ", ".join("blkio/io" if c == "io" else c for c in missing)
        fix = (
            "enable the controllers in the parent's cgroup.subtree_control (systemd: "
            "Delegate=yes on the keystone service)"
            if layout.kind == "v2"
            else "mount the missing v1 controllers, or boot with cgroup v2"
        )
        return Check(name, "warn", f"{detail}; missing: {names}", fix)
    if not root:
        return Check(name, "warn", detail + "; not writable without root", "run as root")
    return Check(name, "ok", detail)


def _prctl_seccomp_mode() -> int | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result: int = libc.prctl(
            ctypes.c_int(_PR_GET_SECCOMP),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    except (OSError, AttributeError):
        return None
    return None if result < 0 else result


def check_seccomp(host: HostFacts, proc: Path = Path("/proc")) -> Check:
    name = "seccomp"
    mode = _prctl_seccomp_mode()
    if not host.seccomp or mode is None:
        return Check(
            name,
            "warn",
            "the kernel has no seccomp filter support: seccomp_profile cannot be enforced",
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        )
    if host.arch is None:
        return Check(
            name,
            "warn",
            f"seccomp works, but KeyStone has no system call tables for {host.machine}",
            "set seccomp_profile = 'unconfined' or run on x86_64/aarch64/i386/arm",
        )
    try:
        actions = (proc / "sys/kernel/seccomp/actions_avail").read_text().split()
    except OSError:
        actions = []
    if actions and "kill_process" not in actions:
        return Check(
            name,
            "warn",
            "seccomp lacks kill_process (Linux < 4.14): filters cannot stop foreign "
            "architectures cleanly",
            "upgrade the kernel",
        )
    note = " (doctor itself is filtered)" if mode else ""
    return Check(name, "ok", f"filters supported on {host.arch}{note}")


def check_apparmor(host: HostFacts, sys: Path = Path("/sys")) -> Check:
    name = "apparmor"
    if not host.apparmor:
        return Check(
            name,
            "warn",
            "AppArmor is not enabled: recipes' apparmor_profile is skipped (best_effort) "
            "or refused (strict)",
            "boot with apparmor=1 security=apparmor, or leave apparmor_profile unset",
        )
    profiles = apparmor_profiles(sys)
    count = "profiles unreadable (not root)" if profiles is None else f"{len(profiles)} profiles"
    return Check(name, "ok", f"enabled, {count} loaded")


def check_user_namespaces(host: HostFacts) -> Check:
    name = "user namespaces"
    if host.userns_max == 0:
        return Check(name, "ok", "disabled (max_user_namespaces = 0)")
    if host.userns_unprivileged is False:
        return Check(name, "ok", "available to root only (unprivileged_userns_clone = 0)")
    detail = "unprivileged users can create them"
    if host.userns_max is not None:
        detail += f" (max_user_namespaces = {host.userns_max})"
    return Check(
        name,
        "ok",
        detail + "; the default seccomp profile denies them to components",
    )


def check_disk(root: Path) -> Check:
    name = "disk space"
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
        vfs = os.statvfs(probe)
    except OSError as exc:
        return Check(name, "skip", f"cannot read disk usage of {probe}: {exc.strerror}")
    free = usage.free
    pct = free * 100 / usage.total if usage.total else 0.0
    inodes = vfs.f_favail * 100 / vfs.f_files if vfs.f_files else 100.0
    detail = (
        f"{probe}: {_human(free)} free of {_human(usage.total)} ({pct:.0f}%), "
        f"{inodes:.0f}% inodes free"
    )
    artifacts = root / "runtime" / "artifacts"
    if artifacts.is_dir():
        detail += f"; artifact cache {_human(_du(artifacts))}"
    fix = "free space (keystonectl can roll back only with cached versions), or grow the disk"
    if free < _FAIL_FREE or pct < 2 or inodes < 2:
        return Check(name, "fail", detail, fix)
    if free < _WARN_FREE or pct < 10 or inodes < 10:
        return Check(name, "warn", detail, fix)
    return Check(name, "ok", detail)


def _du(path: Path, limit: int = 100_000) -> int:
    total = 0
    for n, (directory, _, files) in enumerate(os.walk(path)):
        if n > limit:
            break
        for f in files:
            try:
                total += (Path(directory) / f).lstat().st_size
            except OSError:
                continue
    return total


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"


def _ntp_synchronized() -> bool | None:
    timedatectl = shutil.which("timedatectl")
    if timedatectl is None:
        return None
    try:
        out = subprocess.run(
            [timedatectl, "show", "--property=NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    if out.returncode != 0 or value not in {"yes", "no"}:
        return None
    return value == "yes"


def check_clock(
    *,
    now: datetime.datetime | None = None,
    ntp: Callable[[], bool | None] = _ntp_synchronized,
) -> Check:
    name = "clock"
    now = now or datetime.datetime.now(datetime.UTC)
    if now.year < _MIN_YEAR:
        return Check(
            name,
            "fail",
            f"the clock says {now:%Y-%m-%d}: certificates and signatures will not verify",
            "set the time (NTP: systemctl enable --now systemd-timesyncd; or an RTC)",
        )
    a = time.monotonic()
    b = time.monotonic()
    if b < a:
        return Check(name, "fail", "the monotonic clock went backwards", "report a kernel bug")
    synced = ntp()
    detail = f"{now:%Y-%m-%d %H:%M} UTC"
    if synced is False:
        return Check(
            name,
            "warn",
            detail + "; not synchronised with NTP",
            "enable NTP (timedatectl set-ntp true)",
        )
    if synced is None:
        return Check(name, "ok", detail + "; NTP status unknown (timedatectl not usable here)")
    return Check(name, "ok", detail + "; NTP synchronised")


# -- all together --------------------------------------------------------------------------


def default_socket(root: Path | None) -> Path:
    """The agent socket doctor looks at: ``<root>/run/agent.sock`` or ``$KEYSTONE_SOCKET``."""
    if root is not None:
        return root / "run" / "agent.sock"
    configured = os.environ.get(SOCKET_ENV)
    if configured:
        return Path(configured)
    from keystone_edge.layout import Layout, default_root

    return Layout(default_root()).socket


def run_checks(
    root: Path,
    *,
    socket_path: Path | None = None,
    host: HostFacts | None = None,
    fetch: Callable[[Path, float], dict[str, Any]] | None = None,
    ntp: Callable[[], bool | None] = _ntp_synchronized,
) -> list[Check]:
    """Every check, in the order an operator reads them."""
    host = host or probe_host()
    sock = socket_path or default_socket(root)
    agent, health = check_agent(sock, fetch=fetch)
    return [
        agent,
        check_socket(sock),
        check_privileges(host),
        check_cgroups(host.cgroup, root=host.root),
        check_seccomp(host),
        check_apparmor(host),
        check_user_namespaces(host),
        check_disk(root),
        check_clock(ntp=ntp),
        _findings_from_health(health),
    ]
