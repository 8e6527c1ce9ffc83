"""The agent's side of the launcher: the argv to run, the status it reports, what an exit means.

A runner adopts isolation in three calls::

    policy = policy_for(recipe, component=name, mode=..., work_dir=...)   # IsolationError
    argv = wrap_argv(policy, [command, *args], status_fd=w)               # spawn this instead
    status = await read_status(r)         # EOF at the workload's exec; warnings or the error
    ...                                   # the process exits
    report = await asyncio.to_thread(finish, policy, returncode, status)  # OOM? cleanup

Rules:

- The launch plan is plain data (numbers, strings, bytes) in ``marshal`` form, hex-encoded
  on the command line: the launcher is the same interpreter and must not import ``json``
  or anything of KeyStone's (see :mod:`keystone_edge.isolation.launcher`).
- The status pipe is authoritative: an error line means isolation (or the exec) failed
  and the exit code belongs to the launcher; EOF without one means the workload was
  exec'd and every exit code after that is the workload's, 125-127 included.
- An exit is "killed by the OOM killer" when the component's memory cgroup counted an
  OOM kill and the process did not exit cleanly; the message names the limit.
"""

from __future__ import annotations

import asyncio
import functools
import marshal
import os
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from keystone_edge.isolation import caps as _caps
from keystone_edge.isolation import cgroups as _cgroups
from keystone_edge.isolation.launcher import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    EXIT_CANNOT_EXECUTE,
    EXIT_ISOLATION_FAILED,
    EXIT_NOT_FOUND,
    PLAN_VERSION,
)
from keystone_edge.isolation.policy import IsolationPolicy, Namespaces
from keystone_edge.isolation.seccomp import SeccompProfile, compile_filter

__all__ = [
    "EXIT_CANNOT_EXECUTE",
    "EXIT_ISOLATION_FAILED",
    "EXIT_NOT_FOUND",
    "LAUNCHER_PATH",
    "ExitReport",
    "LaunchMessage",
    "LaunchStatus",
    "exit_report",
    "finish",
    "launch_plan",
    "needs_launcher",
    "parse_status",
    "read_status",
    "release",
    "script_policy",
    "wrap_argv",
]

LAUNCHER_PATH: Final = str(Path(__file__).with_name("launcher.py"))
# Imported from its directory rather than run by path: a script is compiled on every run
# (5+ ms for the launcher), a module comes from its cached bytecode. Appended, not
# prepended, so nothing in that directory can shadow the standard library.
_BOOTSTRAP: Final = (
    f"import sys;sys.path.append({str(Path(LAUNCHER_PATH).parent)!r});"
    "import launcher;launcher.main()"
)
# The launcher writes a few short lines; anything past this is not from it.
_STATUS_LIMIT: Final = 64 * 1024


class LaunchMessage(msgspec.Struct, frozen=True):
    level: Literal["warning", "error"]
    step: str  # cgroup, files, rlimits, nice, namespaces, apparmor, capabilities, ...
    control: str  # the recipe key concerned, e.g. resources.memory_limit
    message: str


class LaunchStatus(msgspec.Struct, frozen=True):
    messages: tuple[LaunchMessage, ...] = ()

    @property
    def error(self) -> LaunchMessage | None:
        return next((m for m in self.messages if m.level == "error"), None)

    @property
    def warnings(self) -> tuple[LaunchMessage, ...]:
        return tuple(m for m in self.messages if m.level == "warning")


class ExitReport(msgspec.Struct, frozen=True, omit_defaults=True):
    reason: Literal["exited", "signaled", "oom_killed", "isolation_failed", "exec_failed"]
    message: str
    exit_code: int | None = None
    signal: int | None = None
    oom_kills: int = 0
    pids_limit_hits: int = 0
    leftover_pids: tuple[int, ...] = ()


@functools.cache
def _cap_last() -> int:
    return _caps.cap_last()


@functools.cache
def _ambient_supported() -> bool:
    try:
        return "CapAmb:" in Path("/proc/self/status").read_text()
    except OSError:
        return False


@functools.lru_cache(maxsize=32)
def _program(profile: SeccompProfile, arch: str) -> bytes:
    return compile_filter(profile, arch)


def _syscall_number(arch: str | None, name: str) -> int:
    if arch is None:
        return -1
    from keystone_edge.isolation._syscalls import SYSCALLS

    return SYSCALLS[arch].get(name, -1)


@functools.cache
def _agent_capabilities() -> int:
    try:
        return _caps.read_capabilities("self").effective
    except OSError:
        return 0


def needs_launcher(policy: IsolationPolicy) -> bool:
    """False when the launcher would change nothing (the runner may exec directly).

    A cgroup without limits only tracks the component's processes: it comes along when
    the launcher runs anyway, but is no reason to start one. Capabilities change nothing
    when the kept set covers what the agent holds (and the whole bounding set when that
    is to be reduced). So the direct path is for privileged runs without limits, and for
    runs that ask for nothing at all: no run_as, limits, files, namespaces, AppArmor or
    seccomp, ``no_new_privileges = false``, and (for an agent running as root) every
    capability kept.
    """
    if (
        policy.identity is not None
        or policy.rlimits
        or policy.nice is not None
        or policy.ioprio is not None
        or policy.files
        or policy.namespaces.any
        or policy.apparmor_profile is not None
        or policy.seccomp is not None
        or (policy.cgroup is not None and policy.cgroup.limits.requested())
    ):
        return True
    if policy.privileged:
        return False  # keeps the agent's capabilities, no no_new_privs
    if policy.no_new_privileges:
        return True
    kept = _caps.mask_of(policy.capabilities)
    everything = (1 << (_cap_last() + 1)) - 1
    if policy.drop_bounding and kept & everything != everything:
        return True
    return bool(_agent_capabilities() & ~kept)


def script_policy(policy: IsolationPolicy, label: str) -> IsolationPolicy:
    """``policy`` for one of the component's scripts (``install``, ``shutdown``, ``probe``).

    Same identity, capabilities, seccomp, rlimits and limits, but in a cgroup of its own
    beside the workload's (``<component>@<label>``): the launcher recreates a cgroup for
    every run and refuses one that still holds processes, and the workload may be running.
    No private namespaces: a fresh PID or network namespace would cut the script off from
    the workload it serves (a ``cmd:`` probe could not reach its port).
    """
    if not label.isidentifier():
        raise ValueError(f"invalid script label {label!r}")
    cgroup = policy.cgroup
    if cgroup is not None:
        suffix = "@" + label
        cgroup = msgspec.structs.replace(
            cgroup,
            relpath=cgroup.relpath + suffix,
            dirs=tuple(msgspec.structs.replace(d, path=d.path + suffix) for d in cgroup.dirs),
        )
    return msgspec.structs.replace(policy, cgroup=cgroup, namespaces=Namespaces())


def launch_plan(policy: IsolationPolicy) -> dict[str, Any]:
    """The launcher's input: ``policy`` reduced to numbers and strings for this host."""
    cgroup: list[dict[str, Any]] = [
        {
            "path": d.path,
            "enable": [list(e) for e in d.enable],
            "writes": [[w.control, list(w.files), w.value, w.optional] for w in d.writes],
        }
        for d in (policy.cgroup.dirs if policy.cgroup is not None else ())
    ]
    ns = policy.namespaces
    flags = (
        (CLONE_NEWPID | CLONE_NEWNS if ns.pid else 0)
        | (CLONE_NEWNS if ns.mount else 0)
        | (CLONE_NEWNET if ns.net else 0)
    )
    ioprio = None
    if policy.ioprio is not None:
        number = _syscall_number(policy.arch, "ioprio_set")
        if number >= 0:
            io_class, level = policy.ioprio
            ioprio = [number, io_class << 13 | level]
    seccomp = None
    if policy.seccomp is not None and policy.arch is not None:
        seccomp = [
            _program(policy.seccomp, policy.arch),
            _syscall_number(policy.arch, "seccomp"),
            # Without no_new_privs the filter needs CAP_SYS_ADMIN: install it before the
            # capabilities go (runc's order).
            not policy.no_new_privileges,
        ]
    identity = policy.identity
    return {
        "v": PLAN_VERSION,
        "component": policy.component,
        "strict": policy.mode == "strict",
        "cgroup": cgroup,
        "files": [
            [f.path, f.create or "", -1 if f.mode is None else f.mode, f.uid, f.gid]
            for f in policy.files
        ],
        "rlimits": [
            [resource.RLIMIT_NOFILE, r.soft, r.hard, "resources.open_files"] for r in policy.rlimits
        ],
        "nice": policy.nice,
        "ioprio": ioprio,
        "ns": {
            "flags": flags,
            "mount": ns.mount,
            "net": ns.net,
            "proc": ns.pid,
            "writable": list(ns.writable),
        },
        "apparmor": policy.apparmor_profile,
        "caps": {
            "manage": not policy.privileged,
            "keep": _caps.mask_of(policy.capabilities),
            "bounding": policy.drop_bounding,
            "last": _cap_last(),
            "ambient_supported": _ambient_supported(),
        },
        "identity": None
        if identity is None
        else [identity.uid, identity.gid, list(identity.groups)],
        "nnp": policy.no_new_privileges,
        "seccomp": seccomp,
    }


def wrap_argv(
    policy: IsolationPolicy,
    argv: Sequence[str],
    *,
    status_fd: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs ``argv`` under ``policy``.

    Spawn it with ``status_fd`` in ``pass_fds`` (the launcher marks it close-on-exec).
    ``-I`` keeps the environment's PYTHON* variables away from the launcher (they still
    reach the workload); ``-S`` skips site-packages, which the launcher does not need.
    """
    if not argv:
        raise ValueError("nothing to run: argv is empty")
    plan = marshal.dumps(launch_plan(policy)).hex()
    out = [python, "-I", "-S", "-c", _BOOTSTRAP, "--plan", plan]
    if status_fd is not None:
        out += ["--status-fd", str(status_fd)]
    return [*out, "--", *argv]


def parse_status(data: bytes) -> LaunchStatus:
    """Decode what the launcher wrote on its status pipe (unknown lines are skipped)."""
    messages: list[LaunchMessage] = []
    for line in data.splitlines():
        if not line.startswith(b'{"keystone_launcher"'):
            continue
        try:
            raw = msgspec.json.decode(line)
            messages.append(
                LaunchMessage(
                    level="error" if raw["level"] == "error" else "warning",
                    step=str(raw["step"]),
                    control=str(raw["control"]),
                    message=str(raw["message"]),
                )
            )
        except (msgspec.DecodeError, KeyError, TypeError):
            continue
    return LaunchStatus(messages=tuple(messages))


async def read_status(fd: int) -> LaunchStatus:
    """Read the status pipe's read end until EOF (the exec, or the launcher's exit).

    Takes ownership of ``fd`` and closes it.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_STATUS_LIMIT)
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        data = b""
        while chunk := await reader.read(4096):
            if len(data) < _STATUS_LIMIT:
                data += chunk
    finally:
        transport.close()
    return parse_status(data)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_report(
    policy: IsolationPolicy, returncode: int, status: LaunchStatus | None = None
) -> ExitReport:
    """What an exit means, given the launcher's status and the cgroup's counters.

    ``returncode`` as asyncio/subprocess give it (negative: killed by that signal).
    Reads the cgroup's counters, so call it before :func:`release`.
    """
    error = status.error if status is not None else None
    if error is not None:
        reason: Literal["isolation_failed", "exec_failed"] = (
            "exec_failed" if error.step == "exec" else "isolation_failed"
        )
        prefix = "" if reason == "exec_failed" else "isolation failed: "
        return ExitReport(reason=reason, message=prefix + error.message, exit_code=returncode)
    plan = policy.cgroup
    ooms = _cgroups.oom_kills(plan) if plan is not None else 0
    hits = _cgroups.pids_max_hits(plan) if plan is not None else 0
    sig = -returncode if returncode < 0 else None
    code = returncode if returncode >= 0 else None
    if ooms and returncode != 0:
        limit = plan.limits.memory_text if plan is not None else None
        what = f"memory_limit {limit}" if limit else "memory limit"
        how = (
            f"exited with code {code}"
            if code is not None
            else f"killed by {_signal_name(sig or 0)}"
        )
        message = (
            f"killed by the OOM killer ({what})"
            if sig == signal.SIGKILL
            else f"{how} after the OOM killer killed {ooms} process(es) ({what})"
        )
        return ExitReport(
            reason="oom_killed",
            message=message,
            exit_code=code,
            signal=sig,
            oom_kills=ooms,
            pids_limit_hits=hits,
        )
    if sig is not None:
        message = f"killed by {_signal_name(sig)}"
        reason_s: Literal["exited", "signaled"] = "signaled"
    else:
        message = f"exited with code {code}"
        reason_s = "exited"
    if hits and returncode != 0 and plan is not None:
        message += f" (pids_limit {plan.limits.pids_max} reached {hits} time(s))"
    return ExitReport(
        reason=reason_s, message=message, exit_code=code, signal=sig, pids_limit_hits=hits
    )


def release(policy: IsolationPolicy, *, timeout: float = 5.0) -> tuple[int, ...]:
    """Kill what is left of the component and remove its cgroups (blocking)."""
    if policy.cgroup is None:
        return ()
    return tuple(_cgroups.remove(policy.cgroup, timeout=timeout))


def finish(
    policy: IsolationPolicy,
    returncode: int,
    status: LaunchStatus | None = None,
    *,
    timeout: float = 5.0,
) -> ExitReport:
    """:func:`exit_report`, then :func:`release`; blocking, run it in a worker thread."""
    report = exit_report(policy, returncode, status)
    left = release(policy, timeout=timeout)
    if left:
        report = msgspec.structs.replace(report, leftover_pids=left)
    return report
