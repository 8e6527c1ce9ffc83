"""Probes against real servers on 127.0.0.1 and real commands."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from keystone_edge.supervise.health import (
    HealthCheck,
    ProbeResult,
    probe,
    probe_cmd,
    probe_http,
    probe_tcp,
)

from .conftest import alive, free_port, run

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def responder(response: bytes, *, silent: bool = False) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if silent:
            await reader.read()  # say nothing until the client gives up and hangs up
        writer.write(response)
        await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    return handle


async def serve_and_probe(
    handler: Handler,
    url_of: Callable[[int], str],
    timeout: float = 2.0,
    tls: ssl.SSLContext | None = None,
) -> ProbeResult:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await probe(HealthCheck.parse(url_of(port)), timeout)


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        (b"200 OK", True),
        (b"204 No Content", True),
        (b"301 Moved", True),
        (b"404 Not Found", False),
        (b"503 Unavailable", False),
    ],
)
def test_http_2xx_and_3xx_are_healthy(status: bytes, ok: bool) -> None:
    response = b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n"
    result = run(serve_and_probe(responder(response), lambda p: f"http://127.0.0.1:{p}/healthz"))
    assert result.ok is ok
    assert result.detail == f"HTTP {status[:3].decode()}"
    assert 0 < result.latency_seconds < 2


def test_http_sends_a_proper_get_with_path_and_query() -> None:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
        writer.close()

    result = run(serve_and_probe(handle, lambda p: f"http://127.0.0.1:{p}/status?deep=1"))
    assert result.ok
    request = seen[0].decode()
    assert request.startswith("GET /status?deep=1 HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in request
    assert "\r\nConnection: close\r\n" in request


def test_http_that_never_answers_times_out_on_time() -> None:
    started = time.perf_counter()
    result = run(
        serve_and_probe(
            responder(b"HTTP/1.1 200 OK\r\n\r\n", silent=True),
            lambda p: f"http://127.0.0.1:{p}/",
            0.2,
        )
    )
    assert (result.ok, result.detail) == (False, "timed out after 200ms")
    assert 0.2 <= time.perf_counter() - started < 1.5


def test_http_refused_and_garbage() -> None:
    port = free_port()
    result = run(probe_http(f"http://127.0.0.1:{port}/", 1.0))
    assert (result.ok, result.detail) == (False, "connection refused")
    garbage = run(
        serve_and_probe(responder(b"SSH-2.0-OpenSSH\r\n"), lambda p: f"http://127.0.0.1:{p}/")
    )
    assert (garbage.ok, garbage.detail) == (False, "not an HTTP response: 'SSH-2.0-OpenSSH'")
    silent = run(serve_and_probe(responder(b""), lambda p: f"http://127.0.0.1:{p}/"))
    assert (silent.ok, silent.detail) == (False, "connection closed without a response")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_https_against_a_self_signed_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=component.local",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    result = run(
        serve_and_probe(
            responder(b"HTTP/1.1 200 OK\r\n\r\n"), lambda p: f"https://127.0.0.1:{p}/", tls=context
        )
    )
    assert (result.ok, result.detail) == (True, "HTTP 200")


def test_tcp_connect_and_refused() -> None:
    async def main() -> tuple[ProbeResult, ProbeResult]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            up = await probe(HealthCheck.parse(f"tcp://127.0.0.1:{port}"), 1.0)
        down = await probe_tcp("127.0.0.1", port, 1.0)
        return up, down

    up, down = run(main())
    assert (up.ok, up.detail) == (True, "connected")
    assert (down.ok, down.detail) == (False, "connection refused")


def test_cmd_exit_status_and_last_output_line() -> None:
    ok = run(probe(HealthCheck.parse("cmd: test 1 -eq 1"), 2.0))
    assert (ok.ok, ok.detail) == (True, "exited with code 0")
    bad = run(probe_cmd("echo checking; echo 'db: connection refused' >&2; exit 2", 2.0))
    assert (bad.ok, bad.detail) == (False, "exited with code 2: db: connection refused")


def test_cmd_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.perf_counter()
    result = run(probe_cmd(f"sleep 60 & echo $! > {pids}; sleep 60", 0.2))
    assert (result.ok, result.detail) == (False, "timed out after 200ms")
    assert time.perf_counter() - started < 2
    assert not alive(int(pids.read_text()))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (
            "http://127.0.0.1:8080/healthz",
            HealthCheck("http", "http://127.0.0.1:8080/healthz", "127.0.0.1", 8080),
        ),
        ("http://localhost/", HealthCheck("http", "http://localhost/", "localhost", 80)),
        ("https://localhost/x", HealthCheck("http", "https://localhost/x", "localhost", 443)),
        ("tcp://127.0.0.1:5432", HealthCheck("tcp", "127.0.0.1:5432", "127.0.0.1", 5432)),
        ("cmd: pg_isready -q", HealthCheck("cmd", "pg_isready -q")),
    ],
)
def test_parse_checks(text: str, parsed: HealthCheck) -> None:
    assert HealthCheck.parse(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tcp://127.0.0.1", "health check 'tcp://127.0.0.1': expected tcp://host:port"),
        ("cmd:  ", "health check 'cmd:  ': cmd: needs a command"),
        (
            "ftp://x/",
            "unsupported health check 'ftp://x/': "
            "expected http://, https://, tcp://host:port or cmd:<command>",
        ),
        ("http:///path", "health check 'http:///path': the URL has no host"),
        ("tcp://h:99999", "health check 'tcp://h:99999': Port out of range 0-65535"),
    ],
)
def test_bad_checks_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^") as info:
        HealthCheck.parse(text)
    assert str(info.value) == message
