"""The runner plug point: how the supervisor gets a process (or, later, a container).

The supervisor decides *when* to run something; a :class:`Runner` knows *how*. The surface
is deliberately small so that a container runner can drop in beside
:class:`~keystone_edge.runners.process.ProcessRunner` without touching the supervisor:

- :meth:`Runner.run_script` runs a lifecycle script (install, shutdown, a ``cmd:`` probe)
  to completion under a timeout and reports its :class:`ExitStatus` plus the tail of its
  output.
- :meth:`Runner.start` launches a long-running workload and returns a
  :class:`ProcessHandle`; the workload's output goes to the :class:`RotatingLog` named in
  the :class:`LaunchSpec`.

Specs carry user and group *names* (``None`` = keep the agent's identity); resolving them
and refusing what the agent may not do is the runner's job. A spec may instead carry an
:class:`~keystone_edge.isolation.IsolationPolicy` (identity, limits, capabilities,
seccomp, namespaces, all resolved by the agent): then the policy decides who the process
runs as and ``user``/``group`` must be ``None``. Runners raise
:class:`~keystone_edge.errors.ComponentError` for anything that prevents a start, the
isolation launcher's failures included, with ``OSError`` and friends wrapped once, here at
the boundary.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from keystone_edge.units import Duration

if TYPE_CHECKING:
    from keystone_edge.isolation import IsolationPolicy
    from keystone_edge.runners.logfile import RotatingLog

__all__ = [
    "ExitStatus",
    "LaunchSpec",
    "ProcessHandle",
    "Runner",
    "ScriptResult",
    "ScriptSpec",
    "split_run_as",
]


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit ``code``, or the ``signal`` that killed it.

    An isolated process may say more: ``detail`` replaces the plain description when the
    exit had a cause the plain code hides ("killed by the OOM killer (memory_limit
    64Mi)", a fork refused by ``pids_limit``, the launcher failing before the workload).
    """

    code: int | None
    signal: int | None = None
    detail: str | None = None
    oom_killed: bool = False  # the component's memory cgroup counted an OOM kill
    pids_limit_hits: int = 0  # forks refused because the component reached pids_limit

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """From a :mod:`subprocess`-style return code (negative = killed by that signal)."""
        if returncode < 0:
            return cls(code=None, signal=-returncode)
        return cls(code=returncode, signal=None)

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def returncode(self) -> int:
        return -self.signal if self.signal is not None else (self.code or 0)

    def describe(self) -> str:
        """ "exited with code 1" or "killed by signal 9 (SIGKILL)" (or the ``detail``)."""
        if self.detail:
            return self.detail
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                return f"killed by signal {self.signal}"
            return f"killed by signal {self.signal} ({name})"
        return f"exited with code {self.code}"

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class ScriptResult:
    """The outcome of :meth:`Runner.run_script`."""

    status: ExitStatus
    output: str  # the last few KiB of stdout+stderr, decoded leniently
    timed_out: bool = False
    timeout: float = 0.0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.status.ok

    def describe(self) -> str:
        """ "exited with code 3" or "timed out after 5m"."""
        if self.timed_out:
            return f"timed out after {Duration(self.timeout).text}"
        return self.status.describe()

    def last_line(self) -> str:
        """The last non-empty line of output ('' when there is none)."""
        for line in reversed(self.output.splitlines()):
            if line.strip():
                return line.strip()
        return ""


@dataclass(frozen=True)
class ScriptSpec:
    """A shell script to run to completion (``/bin/sh -c script``)."""

    name: str  # the component, for logs and errors
    script: str
    cwd: Path
    env: Mapping[str, str]
    timeout: float
    user: str | None = None
    group: str | None = None
    log: RotatingLog | None = None  # also copy the output into the component's log
    label: str = "script"  # stream marker in that log: install, shutdown, probe
    isolation: IsolationPolicy | None = None  # run through the launcher under this policy


@dataclass(frozen=True)
class LaunchSpec:
    """A long-running workload to start."""

    name: str  # the component, for logs and errors
    argv: Sequence[str]
    env: Mapping[str, str]  # the complete environment; nothing is inherited
    cwd: Path
    user: str | None = None
    group: str | None = None
    log: RotatingLog | None = None  # None discards the output
    isolation: IsolationPolicy | None = None  # run through the launcher under this policy


class ProcessHandle(Protocol):
    """A started workload. ``repr`` says "running with PID n" or how it ended."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """``None`` while running; afterwards like :mod:`subprocess` (negative = signal)."""
        ...

    @property
    def warnings(self) -> tuple[str, ...]:
        """Isolation controls not enforced for this run ("control: why"); best effort."""
        ...

    async def wait(self) -> ExitStatus:
        """Wait until the workload has ended (its whole process group is killed then)."""
        ...

    async def stop(self, grace: float) -> ExitStatus:
        """SIGTERM, ``grace`` seconds, then SIGKILL; returns how it ended."""
        ...

    def kill(self) -> None:
        """SIGKILL everything now without waiting (cancellation and shutdown paths)."""
        ...


class Runner(Protocol):
    """Runs lifecycle scripts and starts workloads."""

    async def run_script(self, spec: ScriptSpec) -> ScriptResult: ...

    async def start(self, spec: LaunchSpec) -> ProcessHandle: ...


def split_run_as(run_as: str | None) -> tuple[str | None, str | None]:
    """``"user"`` -> (user, None); ``"user:group"`` -> (user, group); None -> (None, None)."""
    if not run_as:
        return None, None
    user, sep, group = run_as.partition(":")
    return user, (group if sep and group else None)
