"""The processes the bench starts, and what ``/proc`` says about them.

Rules this module enforces:

- **Nothing outlives the bench.** The bench makes itself a child subreaper
  (``PR_SET_CHILD_SUBREAPER``), so whatever a supervisor leaves behind (a service that
  called ``setsid()``, a ``runsv`` whose ``runsvdir`` exited) is re-parented to the bench
  rather than to init; :func:`sweep` then finds every descendant and ends it (SIGTERM, a
  grace period, SIGKILL) and reaps it. Each supervisor runs in its own session, so a Ctrl-C
  at the terminal reaches the bench alone and the bench tears down in order; each also gets
  a parent-death signal, so a bench killed with SIGKILL still takes its supervisors down.
- **Supervisor processes are counted, workload processes are not.** A supervisor's
  processes are its root process plus every descendant that is not running the workload
  binary (so ``runsvdir`` + every ``runsv``, ``s6-svscan`` + every ``s6-supervise``, and any
  helper KeyStone might fork).
- Memory comes from ``/proc/PID/smaps_rollup`` (``Rss``, ``Pss``). CPU time comes from
  ``/proc/PID/task/*/schedstat`` (nanoseconds on the CPU, per thread) and, for reference,
  from ``utime + stime`` in ``/proc/PID/stat`` (clock ticks, usually 10 ms: too coarse to
  resolve 0.01 % of a core over 30 s, which is 3 ms).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuSample",
    "ProcessMemory",
    "become_subreaper",
    "cpu_sample",
    "descendants",
    "memory_of",
    "spawn",
    "supervisor_pids",
    "sweep",
]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def become_subreaper() -> None:
    """Orphans of our descendants become our children, so :func:`sweep` can end them."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    death_signal: signal.Signals = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start a supervisor in its own session, stdout and stderr to ``log``."""

    def _child_setup() -> None:  # runs between fork and exec
        _prctl(_PR_SET_PDEATHSIG, int(death_signal))

    with log.open("ab") as out:
        # preexec_fn is unsafe only in a threaded parent; the bench is single-threaded.
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup,  # noqa: PLW1509
        )


def _stat_fields(pid: int) -> list[str]:
    """Fields of ``/proc/PID/stat`` after the command name (field 3 onwards)."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return raw[raw.rindex(b")") + 2 :].decode().split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (not ``pid`` itself), parents before children."""
    children = _children_map()
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def supervisor_pids(root: int, workload: Path) -> list[int]:
    """``root`` and its descendants, less those running the ``workload`` binary."""
    target = str(workload.resolve())
    return [root, *(pid for pid in descendants(root) if _exe(pid) != target)]


def workload_pids(root: int, workload: Path) -> list[int]:
    target = str(workload.resolve())
    return [pid for pid in descendants(root) if _exe(pid) == target]


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    comm: str
    rss_kb: int
    pss_kb: int


def memory_of(pids: Iterable[int]) -> list[ProcessMemory]:
    """``Rss`` and ``Pss`` of each process from ``/proc/PID/smaps_rollup``."""
    found = []
    for pid in pids:
        values: dict[str, int] = {}
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in {"Rss", "Pss"}:
                values[key] = int(rest.split()[0])
        found.append(ProcessMemory(pid, comm(pid), values.get("Rss", 0), values.get("Pss", 0)))
    return found


@dataclass(frozen=True)
class CpuSample:
    """CPU used so far by a set of processes, taken at ``at_ns`` (CLOCK_MONOTONIC)."""

    at_ns: int
    run_ns: dict[int, int]  # per pid: sum over its live threads of schedstat's run time
    ticks: dict[int, int]  # per pid: utime + stime, in clock ticks (dead threads included)

    @staticmethod
    def clock_ticks_per_second() -> int:
        return _CLK_TCK


def cpu_sample(pids: Iterable[int]) -> CpuSample:
    run_ns: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            total = 0
            for task in os.scandir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    total += int(Path(task.path, "schedstat").read_text().split()[0])
            run_ns[pid] = total
        except (OSError, ValueError, IndexError):
            continue
    return CpuSample(time.monotonic_ns(), run_ns, ticks)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep(grace: float = 2.0) -> list[int]:
    """End every descendant of the bench: SIGTERM, up to ``grace`` seconds, then SIGKILL.

    Returns the pids that were still alive when the sweep began (normally none: each
    supervisor is stopped its own way first, and the sweep only catches leftovers).
    """
    me = os.getpid()
    left = descendants(me)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap()
        if not descendants(me):
            return left
        time.sleep(0.02)
    for pid in descendants(me):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while descendants(me) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.02)
    _reap()
    return left
