"""Component output on disk: bounded, rotated, line-framed; plus ``tail`` and ``follow``.

Rules:

- A component's stdout and stderr go to ``logs/<component>.log``. Every line is written as
  ``<UTC timestamp> <stream> <text>``, for example
  ``2025-01-31T12:00:00.123Z out listening on :8080``; the stream is ``out``, ``err``, or
  the lifecycle script that wrote it (``install``, ``shutdown``). The timestamp is taken
  once per chunk read from the pipe, not per line, and the framing is done with
  ``bytes.split``/``join``, so a flood costs a few C-level passes per 256 KiB chunk.
- Lines are written whole; a partial line waits (bounded) for its end, so stdout and
  stderr never interleave inside a line. A line longer than ``max_line_bytes`` is cut
  there and marked `` [truncated]``; the rest of it, up to the next newline, is dropped.
- A file never grows past ``max_bytes``: before a write that would not fit, the file is
  rotated (``x.log`` -> ``x.log.1`` -> ... -> ``x.log.<backups>``, the oldest dropped), at
  a line boundary when one fits. So the component's logs never take more than
  ``max_bytes * (backups + 1)`` bytes, however fast it writes.
- Writing happens inline in the event loop (append to a local file, one ``write`` per
  chunk). A failing disk must not hurt the component: ``OSError`` drops the data and is
  logged once until writes succeed again.
- An optional :class:`LogObserver` hears of every chunk written and every rotation (the
  agent's disk budget across all logs and the forwarding of component output to log
  sinks hook in there); an observer that raises is logged and never hurts the writer.
- :func:`tail` reads files backwards in blocks, crossing into rotated files only as far
  as needed; :func:`follow` polls (a short sleep) only while someone is following, and
  notices rotation and truncation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["LogObserver", "LogStream", "RotatingLog", "follow", "tail"]

log = logging.getLogger(__name__)

_CUT = b" [truncated]"


class LogObserver(Protocol):
    def written(self, log: RotatingLog, data: bytes) -> None:
        """``data`` (whole framed lines) was appended to ``log``."""
        ...

    def rotated(self, log: RotatingLog) -> None:
        """``log`` was rotated (its oldest backup, if any, was dropped)."""
        ...


class RotatingLog:
    """One component's log file with size-capped rotation."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        backups: int,
        *,
        max_line_bytes: int = 16 * 1024,
        wallclock: Callable[[], float] = time.time,
        observer: LogObserver | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must not be negative, got {backups}")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_line_bytes = max_line_bytes
        self._wallclock = wallclock
        self.observer = observer
        self._file: BinaryIO | None = None
        self._size = 0
        self._failing = False
        self._closed = False
        self._ts_second = -1
        self._ts_text = b""

    def __repr__(self) -> str:
        return (
            f"RotatingLog({str(self.path)!r}, max_bytes={self.max_bytes}, backups={self.backups})"
        )

    def stream(self, marker: str) -> LogStream:
        """A line framer that writes ``<timestamp> <marker> <line>`` into this log."""
        return LogStream(self, marker)

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines, ideally), rotating to stay within the caps."""
        if self._closed or not data:
            return
        try:
            self._write(data)
        except OSError as exc:
            self._close_file()
            if not self._failing:
                self._failing = True
                log.warning(
                    "cannot write %s, dropping output until it works again: %s", self.path, exc
                )
        else:
            if self._failing:
                self._failing = False
                log.info("writing %s again", self.path)
            if self.observer is not None:
                self._notify(self.observer.written, data)

    def close(self) -> None:
        self._closed = True
        self._close_file()

    @property
    def is_open(self) -> bool:
        """Whether this log holds its file open (it has written since it was created)."""
        return self._file is not None

    def _notify(self, hook: Callable[..., None], *args: object) -> None:
        try:
            hook(self, *args)
        except Exception:
            log.exception("log observer failed on %s", self.path)

    def timestamp(self) -> bytes:
        """``2025-01-31T12:00:00.123Z`` for now (the formatted second is cached)."""
        now = self._wallclock()
        second = int(now)
        if second != self._ts_second:
            self._ts_second = second
            self._ts_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return self._ts_text + b".%03dZ" % min(int((now - second) * 1000), 999)

    def _write(self, data: bytes) -> None:
        file = self._open()
        while data:
            room = self.max_bytes - self._size
            if len(data) <= room:
                file.write(data)
                file.flush()
                self._size += len(data)
                return
            # Fill this file up to the last whole line that fits, then rotate. Only a single
            # line bigger than a whole file is split mid-line.
            cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0 and self._size == 0:
                cut = room
            if cut:
                file.write(data[:cut])
                file.flush()
                data = data[cut:]
            file = self._rotate()

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> BinaryIO:
        self._close_file()
        if self.backups == 0:
            self._file = self.path.open("wb")
        else:
            for index in range(self.backups, 0, -1):
                source = _rotated(self.path, index - 1) if index > 1 else self.path
                # Someone may have deleted a file by hand; rotating the rest still works.
                with contextlib.suppress(FileNotFoundError):
                    source.replace(_rotated(self.path, index))
            self._file = self.path.open("ab")
        self._size = 0
        if self.observer is not None:
            self._notify(self.observer.rotated)
        return self._file

    def _close_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError:
                log.debug("closing %s failed", self.path, exc_info=True)


class LogStream:
    """Frames one output stream (``out``, ``err``, ``install``...) into timestamped lines."""

    def __init__(self, log: RotatingLog, marker: str) -> None:
        self._log = log
        self._label = b" " + marker.encode() + b" "
        self._pending = b""  # a partial line, shorter than max_line_bytes
        self._discarding = False  # inside an over-long line, dropping until its newline

    def feed(self, data: bytes) -> None:
        limit = self._log.max_line_bytes
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return
            self._discarding = False
            data = data[newline + 1 :]
        if self._pending:
            data = self._pending + data
            self._pending = b""
        end = data.rfind(b"\n") + 1
        if end:
            self._emit(data[: end - 1].split(b"\n"))
        rest = data[end:]
        if len(rest) > limit:
            self._emit([rest])  # cut at the limit by _emit
            self._discarding = True
        else:
            self._pending = rest

    def close(self) -> None:
        """End of stream: write out a final line that had no newline."""
        if self._pending:
            self._emit([self._pending])
            self._pending = b""
        self._discarding = False

    def _emit(self, lines: list[bytes]) -> None:
        limit = self._log.max_line_bytes
        if max(map(len, lines)) > limit:
            lines = [line if len(line) <= limit else line[:limit] + _CUT for line in lines]
        prefix = self._log.timestamp() + self._label
        self._log.write(prefix + (b"\n" + prefix).join(lines) + b"\n")


def _rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def tail(path: Path, n: int, *, block_size: int = 8192) -> list[str]:
    """The last ``n`` lines of ``path`` and, when it has fewer, of ``path.1``, ``path.2``...

    Oldest first, without newlines. Files are read backwards in blocks; a missing log
    gives ``[]``.
    """
    if n <= 0:
        return []
    found: list[bytes] = []
    index = 0
    candidate = path
    while len(found) < n:
        try:
            found = _tail_file(candidate, n - len(found), block_size) + found
        except FileNotFoundError:
            break
        index += 1
        candidate = _rotated(path, index)
    return [line.decode("utf-8", "replace") for line in found[-n:]]


def _tail_file(path: Path, n: int, block_size: int) -> list[bytes]:
    with path.open("rb") as file:
        position = file.seek(0, 2)
        buffer = b""
        newlines = 0
        # n lines need n newlines plus the one ending the line before them.
        while position > 0 and newlines <= n:
            step = min(block_size, position)
            position -= step
            file.seek(position)
            chunk = file.read(step)
            newlines += chunk.count(b"\n")
            buffer = chunk + buffer
    lines = buffer.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if position > 0:
        lines = lines[1:]  # starts mid-line
    return lines[-n:] if n else []


async def follow(
    path: Path, *, poll_interval: float = 0.25, from_start: bool = False
) -> AsyncGenerator[str, None]:
    """Yield lines appended to ``path`` from now on (``from_start``: from its beginning).

    Survives rotation (finishes the old file, then reads the new one from its start) and
    truncation. It polls every ``poll_interval`` seconds when there is nothing new, which
    is acceptable because it only runs while a client is following.
    """
    follower = _Follower(path, from_start=from_start)
    try:
        while True:
            lines = follower.poll()
            for line in lines:
                yield line
            if not lines:
                await asyncio.sleep(poll_interval)
    finally:
        follower.close()


class _Follower:
    _CHUNK = 64 * 1024

    def __init__(self, path: Path, *, from_start: bool) -> None:
        self._path = path
        self._file: BinaryIO | None = None
        self._inode = 0
        self._seek_end = not from_start
        self._buffer = b""

    def poll(self) -> list[str]:
        if self._file is None and not self._open():
            return []
        assert self._file is not None
        chunk = self._file.read(self._CHUNK)
        if chunk:
            return self._lines(chunk)
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return []  # mid-rotation; the new file appears shortly
        if stat.st_ino != self._inode:
            rest = self._file.read()  # written to the old file just before it rotated
            self._file.close()
            self._file = None
            self._seek_end = False
            lines = self._lines(rest)
            return lines + self.poll()
        if stat.st_size < self._file.tell():
            self._file.seek(0)  # truncated in place
        return []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> bool:
        try:
            self._file = self._path.open("rb")
        except FileNotFoundError:
            self._seek_end = False  # when it appears, everything in it is new
            return False
        self._inode = os.fstat(self._file.fileno()).st_ino
        if self._seek_end:
            self._file.seek(0, 2)
        return True

    def _lines(self, chunk: bytes) -> list[str]:
        data = self._buffer + chunk
        parts = data.split(b"\n")
        self._buffer = parts.pop()
        if len(self._buffer) > self._CHUNK:
            parts.append(self._buffer)  # a line with no end in sight: hand it over as is
            self._buffer = b""
        return [part.decode("utf-8", "replace") for part in parts]
