"""The workload (``bench/stamp.c``) and the file its processes stamp.

Every child of every supervisor is the same tiny C program: on start it appends
``"<CLOCK_MONOTONIC ns> <pid>\\n"`` to one file with a single ``O_APPEND`` write, then
pauses. Python's ``time.monotonic_ns()`` reads the same clock, so "the bench sent SIGKILL at
t" and "the replacement started at t'" are directly comparable. The bench reads the file by
polling its size every millisecond; the poll interval never enters a measurement, because
the time measured is the one the child wrote, not the time the bench noticed it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Stamp", "StampLog", "StampTimeoutError", "build_stamp"]

_POLL = 0.001  # seconds between looks at the file's size


def build_stamp(source: Path, build_dir: Path) -> Path:
    """Compile ``stamp.c`` once (again only when the source is newer than the binary)."""
    binary = build_dir / "stamp"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) on PATH: cannot build bench/stamp.c")
    build_dir.mkdir(parents=True, exist_ok=True)
    partial = build_dir / "stamp.partial"
    subprocess.run([compiler, "-O2", "-o", str(partial), str(source)], check=True)
    partial.replace(binary)
    return binary


@dataclass(frozen=True)
class Stamp:
    ns: int  # CLOCK_MONOTONIC when the child started
    pid: int


class StampTimeoutError(RuntimeError):
    """The expected stamps did not arrive in time."""


class StampLog:
    """Reads the stamps appended to one file, remembering how far it has read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = 0
        self._partial = b""
        self.stamps: list[Stamp] = []

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def poll(self) -> list[Stamp]:
        """The stamps written since the last call (complete lines only)."""
        size = os.fstat(self._fd).st_size
        if size <= self._offset:
            return []
        data = os.pread(self._fd, size - self._offset, self._offset)
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        new = [Stamp(int(ns), int(pid)) for ns, pid in (line.split() for line in lines if line)]
        self.stamps.extend(new)
        return new

    def wait_total(
        self, count: int, timeout: float, abort: Callable[[], str | None] | None = None
    ) -> list[Stamp]:
        """Wait until ``count`` stamps have been written in all; returns the first ``count``.

        ``abort``, when given, is asked every half second after the first two whether the
        wait is hopeless (the supervisor died, the deployment failed): rarely, so that it
        does not load the supervisor being timed.
        """
        start = time.monotonic()
        deadline = start + timeout
        next_check = start + 2.0
        while len(self.stamps) < count:
            if not self.poll():
                now = time.monotonic()
                if abort is not None and now >= next_check:
                    next_check = now + 0.5
                    reason = abort()
                    if reason:
                        raise StampTimeoutError(
                            f"observed {len(self.stamps)} start stamps, expected {count}, "
                            f"and gave up waiting: {reason}"
                        )
                if now > deadline:
                    raise StampTimeoutError(
                        f"observed {len(self.stamps)} start stamps after {timeout:.0f} s, "
                        f"expected {count}"
                    )
                time.sleep(_POLL)
        return self.stamps[:count]

    def wait_next(self, timeout: float, abort: Callable[[], str | None] | None = None) -> Stamp:
        """Wait for the next stamp written after the last one already read."""
        seen = len(self.stamps)
        self.wait_total(seen + 1, timeout, abort)
        return self.stamps[seen]
