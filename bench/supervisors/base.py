"""What every supervisor driver provides, and what a running one looks like to the bench.

A driver writes its configuration for a :class:`Workload` (untimed, in :meth:`prepare`),
then starts (timed, in :meth:`start`) and is stopped its own way (graceful signal, then the
bench's sweep catches anything left). Configurations are returned as text, so the output
documents exactly what ran.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.install import Installer

__all__ = ["Config", "Running", "Supervisor", "Workload", "sh_run_script"]


@dataclass(frozen=True)
class Workload:
    """N children of the stamp program, all stamping into one file."""

    n: int
    stamp: Path  # the workload binary
    stamps_file: Path
    run_dir: Path  # private directory of this run: configs, logs, state

    def name(self, index: int) -> str:
        return f"c{index}"


@dataclass
class Config:
    """How a run was configured: command line, files (one component shown), notes."""

    command: list[str]
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"command": self.command, "env": self.env, "files": self.files, "notes": self.notes}


class Running:
    """A started supervisor: its root process, and how to stop it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        workload: Workload,
        log: Path,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        stop_grace: float = 10.0,
    ) -> None:
        self.proc = proc
        self.workload = workload
        self.log = log
        self.stop_signal = stop_signal
        self.stop_grace = stop_grace
        self.phases: dict[str, int] = {}  # CLOCK_MONOTONIC ns marks inside start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def supervisor_pids(self) -> list[int]:
        return procs.supervisor_pids(self.proc.pid, self.workload.stamp)

    def failure(self) -> str | None:
        """Why waiting for stamps is hopeless now, if it is (polled rarely while waiting)."""
        if self.proc.poll() is not None:
            return f"the supervisor exited with {self.proc.returncode}"
        return None

    def check(self) -> None:
        """Called once the cold start is over (untimed): raise if the run went wrong."""

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Graceful stop with the supervisor's own signal; the caller sweeps leftovers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Supervisor(ABC):
    """One supervisor the bench can run."""

    name: str
    # How users of this supervisor make a child restart fast, in one line for the table.
    restart_setting: str

    @abstractmethod
    def ensure(self, installer: Installer) -> str | None:
        """Make the supervisor available (installing it if allowed); a skip reason or None."""

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def prepare(self, workload: Workload) -> Config:
        """Write the configuration for ``workload`` under its run directory (untimed)."""

    @abstractmethod
    def start(self, workload: Workload) -> Running:
        """Launch (timed): return once the supervisor has been told to run every child."""


def sh_run_script(workload: Workload) -> str:
    """The ``run`` file runit and s6 services use: a shell that execs the workload."""
    return f"#!/bin/sh\nexec {workload.stamp} {workload.stamps_file}\n"
