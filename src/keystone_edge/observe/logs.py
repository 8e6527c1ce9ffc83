"""The agent's log: JSON lines or text, levels per logger, sinks, events, and the disk cap.

Rules this module enforces:

- One record format for machines: a JSON object per line with ``timestamp`` (UTC,
  RFC 3339, milliseconds), ``level``, ``logger``, ``message``, then ``component`` and
  ``deployment_id`` when the record is about one, then every other field passed with
  ``extra=`` (a field that would shadow one of those gets an ``extra_`` prefix), then
  ``exception`` with the traceback. Absent means "not set": no nulls. On a terminal the
  same record reads as one line of text. (``format`` in ``[logging]``.)
- Logging is configured once, in :func:`configure_logging`: the root level from
  ``[agent] log_level`` (or ``--log-level``), per-logger levels from ``[logging] levels``,
  and the sinks of :mod:`keystone_edge.observe.sinks`.
- Events become log lines through :class:`EventLogger`, a bus subscriber: domain code
  publishes ``component.state`` and friends and does not log them itself, and each line
  carries the event's fields (component, deployment_id, exit code...) as structured data.
- Component output can go through the same sinks (``forward_components``), labelled with
  its component, except the ``file`` sink: the component already has its own file.
- Everything under ``<root>/logs`` (the agent's file and every component's files with
  their rotations) stays under ``max_total_bytes``. :class:`LogBudget` keeps a running
  total of bytes written (seeded by one scan at start-up); when it passes the cap it
  rescans the directory and deletes the oldest files no writer holds open (rotated
  backups, logs of removed components) down to 90 % of the cap. If the files being
  written still do not fit, each open log's per-file cap is lowered so that all of them
  with their backups fit, and the next writes rotate them. The cost is a counter add per
  write and a directory scan per ~10 % of the cap written: no timer, no polling.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import msgspec

from keystone_edge.observe.events import Event

if TYPE_CHECKING:
    from keystone_edge.config import LoggingSection
    from keystone_edge.runners.logfile import RotatingLog

__all__ = [
    "AGENT_LOG_NAME",
    "ComponentLogTap",
    "EventLogger",
    "JsonFormatter",
    "LogBudget",
    "LogSetup",
    "TextFormatter",
    "configure_logging",
    "record_fields",
    "utc_timestamp",
]

AGENT_LOG_NAME: Final = "keystone-agent.log"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_CORE: Final = ("timestamp", "level", "logger", "message", "component", "deployment_id")
_encode = msgspec.json.Encoder(enc_hook=str).encode


def utc_timestamp(created: float) -> str:
    """``2025-01-31T12:00:00.123Z``: RFC 3339, UTC, milliseconds."""
    seconds = int(created)
    millis = min(int((created - seconds) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of ``record``: ``component``, ``deployment_id`` and extras."""
    fields: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_") or value is None:
            continue
        fields[key if key not in _CORE[:4] else f"extra_{key}"] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module rules for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record_fields(record)
        for key in ("component", "deployment_id"):
            if key in fields:
                out[key] = fields.pop(key)
        out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return _encode(out).decode()


class TextFormatter(logging.Formatter):
    """``2025-01-31 12:00:00.123 INFO logger: message key=value ...`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
        line = (
            f"{when}.{int(record.msecs):03d} {record.levelname} {record.name}: "
            f"{record.getMessage()}"
        )
        fields = record_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else _encode(value).decode()
    return text if text and " " not in text and '"' not in text else _encode(text).decode()


# -- the disk budget -------------------------------------------------------------------------


class LogBudget:
    """Keeps every file under one log directory within ``max_bytes`` (see the module rules).

    It is a :class:`~keystone_edge.runners.logfile.LogObserver` of every
    :class:`~keystone_edge.runners.logfile.RotatingLog` that writes there.
    """

    LOW_WATER: Final = 0.9
    MIN_FILE_BYTES: Final = 16 * 1024

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.deleted_files = 0
        self._logs: weakref.WeakSet[RotatingLog] = weakref.WeakSet()
        self._configured: weakref.WeakKeyDictionary[RotatingLog, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # the agent's own log may write from worker threads
        self._total = 0
        self.enforce()

    @property
    def used_bytes(self) -> int:
        """Bytes under the directory, as of the last scan plus what was written since."""
        return self._total

    def written(self, log: RotatingLog, data: bytes) -> None:
        if log not in self._configured:
            self._logs.add(log)
            self._configured[log] = log.max_bytes
        self._total += len(data)
        if self._total > self.max_bytes:
            self.enforce()

    def rotated(self, log: RotatingLog) -> None:
        # Rotation frees the dropped backup; the next scan counts it (the estimate errs high).
        pass

    def enforce(self) -> None:
        """Rescan the directory and bring it under the cap (a no-op if already there)."""
        if not self._lock.acquire(blocking=False):
            return  # another thread is at it
        try:
            files = self._scan()
            total = sum(size for _, size, _ in files)
            if total > self.max_bytes:
                low = int(self.max_bytes * self.LOW_WATER)
                held = {log.path for log in self._logs if log.is_open}
                for path, size, _ in sorted(files, key=lambda f: f[2]):
                    if total <= low:
                        break
                    if path in held:
                        continue
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
                    except OSError:
                        continue
                    total -= size
                    self.deleted_files += 1
                if total > low:
                    self._shrink(low)
            self._total = total
        finally:
            self._lock.release()

    def _shrink(self, low: int) -> None:
        """Lower each open log's per-file cap so that all of them, with backups, fit."""
        logs = [log for log in self._logs if log.is_open]
        slots = sum(log.backups + 1 for log in logs)
        if not slots:
            return
        share = max(self.MIN_FILE_BYTES, low // slots)
        for log in logs:
            log.max_bytes = min(self._configured.get(log, log.max_bytes), share)

    def _scan(self) -> list[tuple[Path, int, float]]:
        found: list[tuple[Path, int, float]] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return found
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    found.append((Path(entry.path), stat.st_size, stat.st_mtime))
            except OSError:
                continue
        return found


# -- component output through the sinks ------------------------------------------------------


class ComponentLogTap:
    """The observer of every component log: the disk budget, and (when configured) each
    line of output re-emitted as a record, labelled with its component, to ``forward``."""

    def __init__(self, budget: LogBudget | None, forward: Sequence[logging.Handler] = ()) -> None:
        self._budget = budget
        self._forward = tuple(forward)

    def written(self, log: RotatingLog, data: bytes) -> None:
        if self._budget is not None:
            self._budget.written(log, data)
        if self._forward:
            self._emit(log.path.name.removesuffix(".log"), data)

    def rotated(self, log: RotatingLog) -> None:
        if self._budget is not None:
            self._budget.rotated(log)

    def _emit(self, component: str, data: bytes) -> None:
        # Lines are "<timestamp> <stream> <text>" (runners/logfile.py frames them).
        for line in data.rstrip(b"\n").split(b"\n"):
            _, _, rest = line.partition(b" ")
            stream, _, text = rest.partition(b" ")
            record = logging.LogRecord(
                "component", logging.INFO, "", 0, text.decode("utf-8", "replace"), None, None
            )
            record.component = component
            record.stream = stream.decode("ascii", "replace")
            for handler in self._forward:
                if record.levelno >= handler.level:
                    handler.handle(record)


# -- events as log lines ---------------------------------------------------------------------

_QUIET: Final = frozenset({"agent.ready", "artifact.progress", "test.paused"})
_WARNINGS: Final = frozenset({"component.oom", "component.pids_limit", "component.isolation"})


class EventLogger:
    """Bus subscriber: each event becomes a log record with the event's fields.

    Levels: a component that failed, degraded or restarts, a failed probe, step or
    deployment is a WARNING; lifecycle and deployment progress is INFO; progress reports
    and steps that start are DEBUG.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("keystone_edge.events")

    def __call__(self, event: Event) -> None:
        level, message = self._describe(event)
        if not self._log.isEnabledFor(level):
            return
        fields = {_field_name(k): v for k, v in event.payload.items() if v is not None}
        fields["event"] = event.type
        fields["event_id"] = event.id
        self._log.log(level, "%s", message, extra=fields)

    @staticmethod
    def _describe(event: Event) -> tuple[int, str]:
        p = event.payload
        kind = event.type
        if kind == "component.state":
            to_state = p.get("to_state")
            level = logging.INFO
            if to_state in ("FAILED", "DEGRADED") or p.get("trigger") == "RESTART_SCHEDULED":
                level = logging.WARNING
            return level, (
                f"{p.get('component')} {p.get('version', '')}: {p.get('from_state')} -> "
                f"{to_state}: {p.get('reason', '')}"
            )
        if kind == "component.health":
            if p.get("ok"):
                return logging.INFO, f"{p.get('component')}: health check passed"
            return logging.WARNING, (
                f"{p.get('component')}: health check failed ({p.get('failures')} in a row): "
                f"{p.get('detail', '')}"
            )
        if kind == "deployment.step":
            status = p.get("status")
            where = f"{p.get('step')}" + (f" {p['component']}" if p.get("component") else "")
            if status == "failed":
                return logging.WARNING, (
                    f"deployment {p.get('deployment_id')}: {where} failed: {p.get('error')}"
                )
            level = logging.INFO if status == "done" else logging.DEBUG
            return level, f"deployment {p.get('deployment_id')}: {where} {status}"
        if kind.startswith("deployment."):
            what = kind.partition(".")[2]
            status = p.get("status")
            level = logging.INFO
            if what == "rollback" or status in ("failed", "rolled_back"):
                level = logging.WARNING
            detail = f" {status}" if status else ""
            error = p.get("error") or p.get("reason")
            return level, (
                f"deployment {p.get('deployment_id')} {what}{detail}"
                + (f": {error}" if error else "")
            )
        if kind in _QUIET:
            return logging.DEBUG, kind
        warn = (
            kind in _WARNINGS
            or kind.endswith(".failed")
            or p.get("status") == "failed"
            or p.get("level") == "warning"
        )
        subject = " ".join(str(p[k]) for k in ("component", "uri") if p.get(k))
        message = f"{kind} {subject}" if subject else kind
        note = p.get("error") or p.get("reason") or "; ".join(map(str, p.get("warnings") or ()))
        return (
            logging.WARNING if warn else logging.INFO,
            f"{message}: {note}" if note else message,
        )


def _field_name(key: str) -> str:
    # LogRecord refuses extra keys that shadow its own attributes ("message", "name"...).
    return f"event_{key}" if key in _STANDARD else key


# -- configuration ---------------------------------------------------------------------------


@dataclass
class LogSetup:
    """What :func:`configure_logging` installed; the agent keeps it for metrics and close."""

    handlers: list[logging.Handler]
    budget: LogBudget | None
    component_tap: ComponentLogTap

    def drops(self) -> dict[str, int]:
        """Records each sink could not deliver, by sink name."""
        return {
            getattr(h, "sink_name", type(h).__name__): int(getattr(h, "dropped", 0))
            for h in self.handlers
            if hasattr(h, "dropped")
        }

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()


def configure_logging(
    config: LoggingSection,
    *,
    level: str,
    logs_dir: Path,
    device_id: str,
    stderr: TextIO | None = None,
) -> LogSetup:
    """Install the configured sinks on the root logger (replacing any handlers there)."""
    from keystone_edge.errors import AgentConfigError
    from keystone_edge.observe import sinks

    stream = stderr if stderr is not None else sys.stderr
    budget = LogBudget(logs_dir, int(config.max_total_bytes))
    json_formatter = JsonFormatter()
    handlers: list[logging.Handler] = []
    forward: list[logging.Handler] = []
    for name in dict.fromkeys(config.sinks):  # each sink once, in the order given
        handler: logging.Handler
        if name == "file":
            path = Path(config.file.path) if config.file.path else logs_dir / AGENT_LOG_NAME
            handler = sinks.FileSink(
                path,
                max_bytes=int(config.file.max_bytes),
                backups=config.file.backups,
                observer=budget if path.parent == logs_dir else None,
            )
            handler.setFormatter(TextFormatter() if config.format == "text" else json_formatter)
        elif name == "stderr":
            handler = sinks.StreamSink(stream)
            text = config.format == "text" or (config.format == "auto" and _isatty(stream))
            handler.setFormatter(TextFormatter() if text else json_formatter)
        elif name == "syslog":
            handler = sinks.SyslogSink(
                config.syslog.address,
                facility=config.syslog.facility,
                app_name=config.syslog.app_name,
            )
        elif name == "journald":
            handler = sinks.JournaldSink(config.journald.address)
        else:
            loki = config.loki
            if not loki.url:
                raise AgentConfigError(
                    "logging.sinks: 'loki' needs logging.loki.url "
                    "(e.g. http://loki:3100/loki/api/v1/push)"
                )
            handler = sinks.LokiSink(
                loki.url,
                labels={"job": "keystone-agent", "device_id": device_id, **loki.labels},
                headers=loki.headers,
                batch_size=loki.batch_size,
                batch_wait=float(loki.batch_wait),
                queue_size=loki.queue_size,
                timeout=float(loki.timeout),
            )
            handler.setFormatter(json_formatter)
        handlers.append(handler)
        if name != "file":
            forward.append(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.setLevel(level.upper())
    for logger_name, logger_level in config.levels.items():
        logging.getLogger(logger_name).setLevel(logger_level.upper())
    for handler in handlers:
        root.addHandler(handler)
    tap = ComponentLogTap(budget, forward if config.forward_components else ())
    return LogSetup(handlers=handlers, budget=budget, component_tap=tap)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
