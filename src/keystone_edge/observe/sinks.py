"""Where the agent's log records go: each sink is a :class:`logging.Handler`.

- ``file``: :class:`FileSink`, size-capped rotation by the same
  :class:`~keystone_edge.runners.logfile.RotatingLog` that keeps component output (whole
  lines, ``x.log`` -> ``x.log.1`` ..., a failing disk drops lines instead of raising).
- ``stderr``: :class:`StreamSink`.
- ``syslog``: :class:`SyslogSink`, one RFC 5424 datagram per record to a Unix socket
  (``/dev/log`` by default), with the logger, component and deployment id as structured
  data. rsyslog, syslog-ng and journald all listen there.
- ``journald``: :class:`JournaldSink`, journald's native protocol, so that ``journalctl
  COMPONENT=com.example.hello`` works (every structured field becomes a journal field).
- ``loki``: :class:`LokiSink`, HTTP push to Grafana Loki in batches from a thread of its
  own.

Rules: a sink never blocks the event loop and never raises into the code that logged.
Datagram sinks send without blocking; a record that cannot be sent (socket missing, its
buffer full) is dropped and counted in ``dropped``; a lost socket is reopened at most once a
second. The Loki sink holds at most ``queue_size`` lines; when Loki is slow or down the
oldest lines are dropped (counted) and pushes are retried with backoff. A record logged by
a sink's own machinery while it is emitting (a disk error, say) is dropped rather than fed
back into the sink.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import msgspec

from keystone_edge.observe.logs import record_fields, utc_timestamp
from keystone_edge.runners.logfile import LogObserver, RotatingLog

if TYPE_CHECKING:
    import httpcore

__all__ = ["FileSink", "JournaldSink", "LokiSink", "StreamSink", "SyslogSink"]

_FACILITIES: Final = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    **{f"local{n}": 16 + n for n in range(8)},
}
_MAX_DATAGRAM: Final = 64 * 1024  # longer messages are cut (a datagram must fit a socket)
_REOPEN_AFTER: Final = 1.0  # seconds between attempts to reopen a lost socket
_encode = msgspec.json.Encoder(enc_hook=str).encode
_emitting = threading.local()


def _severity(levelno: int) -> int:
    """syslog severity (RFC 5424 section 6.2.1) of a logging level."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class _Sink(logging.Handler):
    sink_name = "sink"

    def handle(self, record: logging.LogRecord) -> bool:
        if getattr(_emitting, "active", False):
            return False  # logged from inside a sink: do not loop back into one
        _emitting.active = True
        try:
            return bool(super().handle(record))
        finally:
            _emitting.active = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802, ARG002
        # The default prints a traceback to stderr per failed record; a sink counts instead.
        self.dropped = getattr(self, "dropped", 0) + 1


class FileSink(_Sink):
    """Records as lines in a size-capped, rotated file."""

    sink_name = "file"

    def __init__(
        self, path: Path, *, max_bytes: int, backups: int, observer: LogObserver | None = None
    ) -> None:
        super().__init__()
        self.log = RotatingLog(path, max_bytes, backups, observer=observer)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.log.write(line.encode("utf-8", "replace") + b"\n")

    def close(self) -> None:
        self.log.close()
        super().close()


class StreamSink(_Sink, logging.StreamHandler[TextIO]):
    """Records as lines on a stream (stderr)."""

    sink_name = "stderr"

    def __init__(self, stream: TextIO) -> None:
        logging.StreamHandler.__init__(self, stream)


class _DatagramSink(_Sink):
    """Sends one datagram per record to a Unix socket; drops what cannot go at once."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.dropped = 0
        self.sent = 0
        self._sock: socket.socket | None = None
        self._retry_at = 0.0

    def encode(self, record: logging.LogRecord) -> bytes:
        raise NotImplementedError

    def emit(self, record: logging.LogRecord) -> None:
        data = self.encode(record)
        sock = self._socket()
        if sock is None:
            self.dropped += 1
            return
        try:
            sock.send(data)
        except BlockingIOError:
            self.dropped += 1  # the reader is behind; never wait for it
        except OSError:
            self.dropped += 1
            self._drop_socket()
        else:
            self.sent += 1

    def _socket(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now < self._retry_at:
            return None
        self._retry_at = now + _REOPEN_AFTER
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            return None
        self._sock = sock
        return sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._drop_socket()
        super().close()


def _sd_value(value: Any) -> str:
    text = value if isinstance(value, str) else _encode(value).decode()
    # RFC 5424 section 6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE.
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_name(key: str) -> str | None:
    name = "".join(c for c in key if 33 <= ord(c) <= 126 and c not in '= ]"')[:32]
    return name or None


class SyslogSink(_DatagramSink):
    """RFC 5424 datagrams: ``<PRI>1 TIMESTAMP HOST APP PROCID - [keystone@32473 ...] MSG``.

    The structured-data element carries ``logger`` and every structured field of the record
    (component, deployment_id, ...). 32473 is the private enterprise number RFC 5612
    reserves for examples; KeyStone has none of its own.
    """

    sink_name = "syslog"

    def __init__(
        self, address: str = "/dev/log", *, facility: str = "daemon", app_name: str = "keystone"
    ) -> None:
        super().__init__(address)
        self.facility = _FACILITIES[facility]
        self.app_name = _sd_name(app_name) or "-"
        self.hostname = socket.gethostname() or "-"
        self.setFormatter(logging.Formatter("%(message)s"))

    def encode(self, record: logging.LogRecord) -> bytes:
        priority = self.facility * 8 + _severity(record.levelno)
        params = [f'logger="{_sd_value(record.name)}"']
        for key, value in record_fields(record).items():
            name = _sd_name(key)
            if name is not None:
                params.append(f'{name}="{_sd_value(value)}"')
        header = (
            f"<{priority}>1 {utc_timestamp(record.created)} {self.hostname} {self.app_name} "
            f"{record.process or '-'} - [keystone@32473 {' '.join(params)}] "
        ).encode("utf-8", "replace")
        message = self.format(record).encode("utf-8", "replace")
        return (header + message)[:_MAX_DATAGRAM]


class JournaldSink(_DatagramSink):
    """journald's native protocol (``systemd.journal-fields(7)``)."""

    sink_name = "journald"

    def __init__(
        self, address: str = "/run/systemd/journal/socket", *, identifier: str = "keystone-agent"
    ) -> None:
        super().__init__(address)
        self.identifier = identifier
        self.setFormatter(logging.Formatter("%(message)s"))

    def encode(self, record: logging.LogRecord) -> bytes:
        fields: dict[str, Any] = {
            "MESSAGE": self.format(record)[: _MAX_DATAGRAM // 2],
            "PRIORITY": _severity(record.levelno),
            "SYSLOG_IDENTIFIER": self.identifier,
            "SYSLOG_PID": os.getpid(),
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
        }
        for key, value in record_fields(record).items():
            name = "".join(c if c.isalnum() else "_" for c in key.upper()).lstrip("_")[:64]
            if name and name not in fields:
                fields[name] = value
        out = bytearray()
        for key, value in fields.items():
            data = (value if isinstance(value, str) else _encode(value).decode()).encode(
                "utf-8", "replace"
            )
            if b"\n" in data:
                # A value with newlines: the name, a newline, its length (64-bit LE), itself.
                out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
            else:
                out += key.encode() + b"=" + data + b"\n"
        return bytes(out[:_MAX_DATAGRAM])


class LokiSink(_Sink):
    """Batched HTTP push to Loki (``POST /loki/api/v1/push``) from a pusher thread.

    ``emit`` only appends to a bounded queue and wakes the pusher when a batch is full or
    the first line of a batch arrives. The pusher sleeps while the queue is empty (no
    timer), waits up to ``batch_wait`` for a batch to fill, pushes it, and on failure
    retries with backoff (1 s doubling to 30 s) while new lines keep queueing, the oldest
    dropped beyond ``queue_size``. A batch Loki refuses (4xx other than 429) is dropped.
    ``close`` pushes what is left for a short while (no retries), then drops the rest.
    """

    sink_name = "loki"
    CLOSE_FLUSH_SECONDS: Final = 2.0

    def __init__(
        self,
        url: str,
        *,
        labels: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        batch_size: int = 500,
        batch_wait: float = 1.0,
        queue_size: int = 10_000,
        timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.labels = dict(labels)
        self.headers = dict(headers or {})
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.queue_size = queue_size
        self.timeout = timeout
        self.dropped = 0
        self.sent = 0
        self.failed_pushes = 0
        self.last_error: str | None = None
        self._queue: collections.deque[tuple[str, str, str | None]] = collections.deque()
        self._wake = threading.Condition(threading.Lock())
        self._closing = False
        self._flush_until = 0.0
        self._thread: threading.Thread | None = None
        self._pool: httpcore.ConnectionPool | None = None

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        component = getattr(record, "component", None)
        entry = (str(time.time_ns()), line, component if isinstance(component, str) else None)
        with self._wake:
            if self._closing:
                self.dropped += 1
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(entry)
            if len(self._queue) == 1 or len(self._queue) >= self.batch_size:
                self._wake.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="loki-push", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Flush what is queued for up to ``CLOSE_FLUSH_SECONDS``, then drop the rest."""
        with self._wake:
            if not self._closing:
                self._closing = True
                self._flush_until = time.monotonic() + self.CLOSE_FLUSH_SECONDS
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            # A push under way may take its whole timeout (the last ones use at most 2 s).
            thread.join(self.CLOSE_FLUSH_SECONDS + self.timeout + 1.0)
        super().close()

    # -- the pusher thread ----------------------------------------------------------------

    def _run(self) -> None:
        backoff = 1.0
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    break  # closing and nothing left
                deadline = time.monotonic() + self.batch_wait
                while len(self._queue) < self.batch_size and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                if self._closing and time.monotonic() > self._flush_until:
                    self.dropped += len(self._queue)  # out of time to flush
                    self._queue.clear()
                    break
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self.batch_size))
                ]
                closing = self._closing
            outcome = self._push(batch, final=closing)
            if outcome == "sent":
                self.sent += len(batch)
                backoff = 1.0
                continue
            if outcome == "refused" or closing:
                self.dropped += len(batch)  # refused, or no retrying while stopping
                continue
            with self._wake:  # retry: put the batch back in front, oldest dropped past the cap
                self._queue.extendleft(reversed(batch))
                while len(self._queue) > self.queue_size:
                    self._queue.popleft()
                    self.dropped += 1
                self._wake.wait_for(lambda: self._closing, timeout=backoff)
            backoff = min(backoff * 2, 30.0)
        if self._pool is not None:
            self._pool.close()

    def _push(self, batch: list[tuple[str, str, str | None]], *, final: bool) -> str:
        import httpcore

        streams: dict[str | None, list[list[str]]] = {}
        for ts, line, component in batch:
            streams.setdefault(component, []).append([ts, line])
        body = _encode(
            {
                "streams": [
                    {
                        "stream": self.labels | ({"component": c} if c else {}),
                        "values": values,
                    }
                    for c, values in streams.items()
                ]
            }
        )
        timeout = min(self.timeout, 2.0) if final else self.timeout
        if self._pool is None:
            self._pool = httpcore.ConnectionPool(max_connections=1)
        headers = [("Content-Type", "application/json"), *self.headers.items()]
        try:
            response = self._pool.request(
                "POST",
                self.url,
                headers=headers,
                content=body,
                extensions={
                    "timeout": {
                        "connect": timeout,
                        "read": timeout,
                        "write": timeout,
                        "pool": timeout,
                    }
                },
            )
        except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError) as exc:
            self.failed_pushes += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return "retry"
        except httpcore.UnsupportedProtocol as exc:
            self.last_error = str(exc)
            return "refused"
        if 200 <= response.status < 300:
            self.last_error = None
            return "sent"
        self.failed_pushes += 1
        self.last_error = f"HTTP {response.status}: {response.content[:200]!r}"
        if response.status == 429 or response.status >= 500:
            return "retry"
        return "refused"
