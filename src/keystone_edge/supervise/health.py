"""Health: a sans-IO tracker that turns probe results into decisions, and the probes.

:class:`HealthTracker` rules (one tracker per process run; ``now`` is monotonic):

- The first passing probe makes the component *ready* (``Verdict.READY``); dependents may
  start then.
- Before the first pass, failures during ``start_period`` (counted from the spawn) do not
  count; probes are sent every ``min(interval, 0.5s)`` during that time, so that a slow
  starter is noticed as ready soon after it is, not up to an interval later.
- ``failure_threshold`` consecutive counted failures make it unhealthy
  (``Verdict.UNHEALTHY``, once); the next pass recovers it (``Verdict.RECOVERED``).
- Probes are never closer than 50 ms apart, whatever the interval says.
- ``HealthUpdate.publish`` says whether the result is worth an event: every counted
  failure, and a pass only when it changes the status. A steady healthy component emits
  nothing.

Probes (each returns a :class:`ProbeResult` and never raises for a failing target; each
honours its timeout with :func:`asyncio.timeout`):

- ``http://host[:port]/path`` and ``https://...``: ``GET``; 2xx and 3xx are healthy. Plain
  HTTP is spoken by hand over asyncio streams (a status line is all we read). HTTPS does
  not verify the certificate: like Kubernetes probes, this asks "is it answering", and a
  component's local endpoint is usually self-signed. It is not a trust decision.
- ``tcp://host:port``: the connection is accepted.
- ``cmd:<shell command>``: ``/bin/sh -c``, exit code 0 is healthy; it runs through a
  :class:`~keystone_edge.runners.base.Runner` (its own process group, killed on timeout),
  normally as the component's user, in its directory and environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from keystone_edge.runners.base import ScriptResult, ScriptSpec
from keystone_edge.units import Duration

__all__ = [
    "CommandRunner",
    "HealthCheck",
    "HealthStatus",
    "HealthTracker",
    "HealthUpdate",
    "ProbeResult",
    "Verdict",
    "probe",
    "probe_cmd",
    "probe_http",
    "probe_tcp",
]

STARTUP_INTERVAL = 0.5  # probe cadence before the first pass, within start_period
MIN_INTERVAL = 0.05  # an interval of "0" must not turn probing into a busy loop


class HealthStatus(enum.StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Verdict(enum.StrEnum):
    READY = "ready"  # the first pass of this run
    UNHEALTHY = "unhealthy"  # the failure threshold was just reached
    RECOVERED = "recovered"  # a pass after being unhealthy (ready before)


@dataclass(frozen=True)
class HealthUpdate:
    status: HealthStatus
    verdict: Verdict | None  # a decision for the lifecycle, or None
    failures: int  # consecutive counted failures
    publish: bool  # worth a component.health event


class HealthTracker:
    """Decisions from probe results for one run of one component."""

    def __init__(
        self,
        *,
        interval: float,
        failure_threshold: int,
        start_period: float,
        started_at: float,
    ) -> None:
        self.interval = interval
        self.failure_threshold = max(1, failure_threshold)
        self.start_period = start_period
        self.started_at = started_at
        self.status = HealthStatus.UNKNOWN
        self.failures = 0
        self.passed = False  # has any probe passed in this run

    def observe(self, now: float, ok: bool) -> HealthUpdate:
        if ok:
            previous, self.status, self.failures = self.status, HealthStatus.HEALTHY, 0
            verdict: Verdict | None = None
            if not self.passed:
                self.passed = True
                verdict = Verdict.READY
            elif previous is HealthStatus.UNHEALTHY:
                verdict = Verdict.RECOVERED
            return HealthUpdate(self.status, verdict, 0, publish=previous is not self.status)
        if not self.passed and now - self.started_at < self.start_period:
            return HealthUpdate(self.status, None, 0, publish=False)  # still booting
        self.failures += 1
        verdict = None
        if self.failures >= self.failure_threshold and self.status is not HealthStatus.UNHEALTHY:
            self.status = HealthStatus.UNHEALTHY
            verdict = Verdict.UNHEALTHY
        return HealthUpdate(self.status, verdict, self.failures, publish=True)

    def next_delay(self, now: float) -> float:
        """Seconds until the next probe."""
        interval = max(self.interval, MIN_INTERVAL)
        if not self.passed and now - self.started_at < self.start_period:
            return min(interval, STARTUP_INTERVAL)
        return interval


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # "HTTP 200", "connection refused", "timed out after 3s", ...
    latency_seconds: float


@dataclass(frozen=True)
class HealthCheck:
    """A parsed ``health.check`` string."""

    kind: Literal["http", "tcp", "cmd"]
    target: str  # the URL, "host:port", or the shell command
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> HealthCheck:
        """Parse ``http(s)://...``, ``tcp://host:port`` or ``cmd:...``; ValueError says why."""
        if text.startswith("cmd:"):
            command = text[4:].strip()
            if not command:
                raise ValueError(f"health check {text!r}: cmd: needs a command")
            return cls("cmd", command)
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"health check {text!r}: {exc}") from None
        if scheme in ("http", "https"):
            if not parts.hostname:
                raise ValueError(f"health check {text!r}: the URL has no host")
            return cls("http", text, parts.hostname, port or (443 if scheme == "https" else 80))
        if scheme == "tcp":
            if not parts.hostname or port is None:
                raise ValueError(f"health check {text!r}: expected tcp://host:port")
            return cls("tcp", f"{parts.hostname}:{port}", parts.hostname, port)
        raise ValueError(
            f"unsupported health check {text!r}: expected http://, https://, "
            f"tcp://host:port or cmd:<command>"
        )


CommandRunner = Callable[[str, float], Awaitable[ScriptResult]]
"""Runs a ``cmd:`` probe's command with a timeout (the supervisor binds user, cwd, env)."""


async def probe(
    check: HealthCheck, timeout: float, *, run_command: CommandRunner | None = None
) -> ProbeResult:
    """Run one probe of ``check``."""
    if check.kind == "http":
        return await probe_http(check.target, timeout)
    if check.kind == "tcp":
        return await probe_tcp(check.host, check.port, timeout)
    return await probe_cmd(check.target, timeout, run_command=run_command)


async def probe_http(url: str, timeout: float) -> ProbeResult:
    parts = urlsplit(url)
    secure = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc.rpartition('@')[2]}\r\n"
        f"User-Agent: keystone-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=_probe_tls_context() if secure else None,
                server_hostname=host if secure else None,
            )
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        result = _failed(_timed_out(timeout), started)
    except (OSError, ValueError) as exc:  # ValueError: an endless status line
        result = _failed(_describe_error(exc), started)
    else:
        result = _http_result(status_line, time.perf_counter() - started)
    if writer is not None:
        await _close(writer, timeout)
    return result


def _http_result(status_line: bytes, latency: float) -> ProbeResult:
    fields = status_line.split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        if not status_line:
            detail = "connection closed without a response"
        else:
            detail = f"not an HTTP response: {status_line[:80].decode('latin-1').strip()!r}"
        return ProbeResult(ok=False, detail=detail, latency_seconds=latency)
    code = int(fields[1])
    return ProbeResult(ok=200 <= code < 400, detail=f"HTTP {code}", latency_seconds=latency)


async def probe_tcp(host: str, port: int, timeout: float) -> ProbeResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return _failed(_timed_out(timeout), started)
    except OSError as exc:
        return _failed(_describe_error(exc), started)
    result = ProbeResult(ok=True, detail="connected", latency_seconds=time.perf_counter() - started)
    await _close(writer, timeout)
    return result


async def _close(writer: asyncio.StreamWriter, timeout: float) -> None:
    # Finish closing (TLS close_notify included) so no transport outlives the probe, but
    # never let a peer that does not cooperate change the result or hold the probe long.
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(min(timeout, 1.0)):
            await writer.wait_closed()


async def probe_cmd(
    command: str, timeout: float, *, run_command: CommandRunner | None = None
) -> ProbeResult:
    started = time.perf_counter()
    result = await (run_command or _run_here)(command, timeout)
    latency = time.perf_counter() - started
    detail = result.describe()
    if not result.timed_out and (last := result.last_line()):
        detail = f"{detail}: {last[:200]}"
    return ProbeResult(result.ok, detail, latency)


async def _run_here(command: str, timeout: float) -> ScriptResult:
    # Without a supervisor context: the agent's identity, directory and environment.
    from keystone_edge.runners.process import ProcessRunner

    spec = ScriptSpec(
        name="probe", script=command, cwd=Path.cwd(), env=dict(os.environ), timeout=timeout
    )
    return await ProcessRunner(output_tail_bytes=1024).run_script(spec)


_tls_context: ssl.SSLContext | None = None


def _probe_tls_context() -> ssl.SSLContext:
    global _tls_context  # noqa: PLW0603 - one context for every https probe
    if _tls_context is None:
        # No CA bundle loaded: nothing is verified, so there is no point paying for one.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # liveness, not trust: see the module docstring
        _tls_context = context
    return _tls_context


def _failed(detail: str, started: float) -> ProbeResult:
    return ProbeResult(ok=False, detail=detail, latency_seconds=time.perf_counter() - started)


def _timed_out(timeout: float) -> str:
    return f"timed out after {Duration(timeout).text}"


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    text = str(exc) or type(exc).__name__
    return text[:200]
