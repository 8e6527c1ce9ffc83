"""Log sinks against real sockets and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keystone_edge.observe.logs import JsonFormatter
from keystone_edge.observe.sinks import FileSink, JournaldSink, LokiSink, SyslogSink

RFC5424 = re.compile(
    r"<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\S+) - "
    r"\[keystone@32473 (?P<sd>(?:[^\]\\]|\\.)*)\] (?P<msg>.*)",
    re.DOTALL,
)


def record(message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("keystone_edge.sinktest")
    return logger.makeRecord(logger.name, level, __file__, 7, message, (), None, extra=extra)


@pytest.fixture
def dgram(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def test_syslog_sends_rfc5424_with_structured_data(dgram: tuple[socket.socket, str]) -> None:
    sock, address = dgram
    sink = SyslogSink(address, facility="local3", app_name="keystone-agent")
    sink.handle(
        record('deployment "d-1" failed', logging.ERROR, component="com.a", deployment_id="d-1")
    )
    datagram = sock.recv(65536).decode()
    match = RFC5424.fullmatch(datagram)
    assert match, datagram
    assert int(match["pri"]) == 19 * 8 + 3  # local3.err
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", match["ts"])
    assert match["app"] == "keystone-agent"
    assert match["pid"].isdigit()
    assert 'logger="keystone_edge.sinktest"' in match["sd"]
    assert 'component="com.a"' in match["sd"]
    assert 'deployment_id="d-1"' in match["sd"]
    assert match["msg"] == 'deployment "d-1" failed'
    sink.close()


def test_syslog_without_a_listener_drops_and_counts(tmp_path: Path) -> None:
    sink = SyslogSink(str(tmp_path / "nobody.sock"))
    started = time.monotonic()
    for n in range(100):
        sink.handle(record(f"line {n}"))
    assert time.monotonic() - started < 1.0
    assert sink.dropped == 100
    assert sink.sent == 0


def test_syslog_reader_behind_drops_instead_of_blocking(dgram: tuple[socket.socket, str]) -> None:
    _, address = dgram
    sink = SyslogSink(address)
    started = time.monotonic()
    for n in range(20_000):  # nobody reads: the socket buffer fills
        sink.handle(record(f"line {n} " + "x" * 200))
    assert time.monotonic() - started < 5.0
    assert sink.dropped > 0
    assert sink.sent > 0
    assert sink.sent + sink.dropped == 20_000
    sink.close()


def test_journald_native_fields(dgram: tuple[socket.socket, str]) -> None:
    sock, address = dgram
    sink = JournaldSink(address)
    sink.handle(record("two\nlines", logging.WARNING, component="com.a"))
    data = sock.recv(65536)
    fields: dict[str, bytes] = {}
    while data:
        name, _, rest = data.partition(b"\n")
        if b"=" in name:
            key, _, val = name.partition(b"=")
            fields[key.decode()] = val
            data = rest
        else:
            (length,) = struct.unpack("<Q", rest[:8])
            fields[name.decode()] = rest[8 : 8 + length]
            data = rest[8 + length + 1 :]
    assert fields["MESSAGE"] == b"two\nlines"
    assert fields["PRIORITY"] == b"4"
    assert fields["SYSLOG_IDENTIFIER"] == b"keystone-agent"
    assert fields["COMPONENT"] == b"com.a"
    assert fields["LOGGER"] == b"keystone_edge.sinktest"
    sink.close()


class Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_file_sink_does_not_feed_its_own_errors_back(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink(blocker / "agent.log", max_bytes=1000, backups=1)
    other = Seen()
    seen = other.messages
    root = logging.getLogger()
    root.addHandler(sink)
    root.addHandler(other)
    try:
        # RotatingLog logs "cannot write" through the root logger, i.e. into this sink again:
        # the sink drops that one instead of recursing; other handlers still get it.
        logging.getLogger("keystone_edge.x").warning("first")
        logging.getLogger("keystone_edge.x").warning("second")
    finally:
        root.removeHandler(sink)
        root.removeHandler(other)
        sink.close()
    assert len(seen) == 3
    assert seen[0].startswith("cannot write")  # logged while the sink handled "first"
    assert seen[1:] == ["first", "second"]


# -- Loki -------------------------------------------------------------------------------------


class Loki(ThreadingHTTPServer):
    """A Loki push endpoint that records what it gets; ``delay`` makes it slow."""

    daemon_threads = True

    def __init__(self, delay: float = 0.0, status: int = 204) -> None:
        super().__init__(("127.0.0.1", 0), _LokiHandler)
        self.delay = delay
        self.status = status
        self.pushes: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/loki/api/v1/push"

    def lines(self) -> list[dict[str, Any]]:
        return [
            {"labels": stream["stream"], **json.loads(line)}
            for push in self.pushes
            for stream in push["streams"]
            for _, line in stream["values"]
        ]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _LokiHandler(BaseHTTPRequestHandler):
    server: Loki

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.server.delay)
        self.server.pushes.append(json.loads(body))
        self.server.headers_seen.append(dict(self.headers))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def loki_sink(url: str, **options: Any) -> LokiSink:
    settings: dict[str, Any] = {"batch_size": 50, "batch_wait": 0.05, "timeout": 2.0}
    settings.update(options)
    sink = LokiSink(url, labels={"job": "keystone-agent", "device_id": "dev-1"}, **settings)
    sink.setFormatter(JsonFormatter())
    return sink


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_loki_receives_batched_lines_with_labels() -> None:
    loki = Loki()
    sink = loki_sink(loki.url, headers={"X-Scope-OrgID": "acme"})
    try:
        for n in range(120):
            sink.handle(record(f"line {n}", component="com.a" if n % 2 else None))
        wait_until(lambda: len(loki.lines()) == 120)
    finally:
        sink.close()
        loki.stop()
    lines = loki.lines()
    assert sorted(int(line["message"].split()[1]) for line in lines) == list(range(120))
    assert {line["labels"].get("component") for line in lines} == {"com.a", None}
    assert all(line["labels"]["device_id"] == "dev-1" for line in lines)
    assert len(loki.pushes) <= 6  # batched, not one request per line
    assert loki.headers_seen[0]["X-Scope-OrgID"] == "acme"
    assert sink.dropped == 0


def test_loki_slow_never_blocks_and_drops_the_oldest() -> None:
    loki = Loki(delay=0.3)
    sink = loki_sink(loki.url, queue_size=100, batch_size=50)
    try:
        started = time.monotonic()
        for n in range(1000):
            sink.handle(record(f"line {n}"))
        assert time.monotonic() - started < 0.5  # emit only queues
        assert sink.dropped >= 800
    finally:
        sink.close()
        loki.stop()
    # What arrived is the newest part (the oldest lines were the ones dropped).
    received = [int(line["message"].split()[1]) for line in loki.lines()]
    assert 999 in received
    assert min(received[-10:]) > 900
    assert sink.sent + sink.dropped == 1000


def test_loki_down_counts_drops_and_close_returns_promptly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    sink = loki_sink(f"http://127.0.0.1:{port}/loki/api/v1/push", queue_size=50)
    started = time.monotonic()
    for n in range(200):
        sink.handle(record(f"line {n}"))
    assert time.monotonic() - started < 0.5
    wait_until(lambda: sink.failed_pushes >= 1)
    assert sink.last_error is not None
    assert sink.dropped >= 150
    closing = time.monotonic()
    sink.close()
    assert time.monotonic() - closing < 5.0
    assert sink.dropped == 200
    assert sink.sent == 0


def test_loki_refusing_a_batch_drops_it() -> None:
    loki = Loki(status=400)
    sink = loki_sink(loki.url)
    try:
        sink.handle(record("bad"))
        wait_until(lambda: sink.dropped == 1)
        assert sink.last_error is not None
        assert sink.last_error.startswith("HTTP 400")
    finally:
        sink.close()
        loki.stop()
