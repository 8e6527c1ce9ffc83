"""``GET /metrics`` over TCP for Prometheus (``[metrics] tcp = true``): a tiny HTTP/1.1 server.

The API socket serves the same text to local clients; this listener exists for a
Prometheus that scrapes over the network. It is deliberately small (asyncio streams, no
framework): it answers ``GET /metrics`` (and ``HEAD``) with 200, any other path with 404
and other methods with 405, one request per connection (``Connection: close``). Bounds:
a request head of at most 8 KiB read within 10 s, at most 8 connections at once (more
are closed at once). It binds ``127.0.0.1`` unless configured otherwise, runs in the
agent's event loop and costs nothing while nobody scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["serve_metrics"]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES: Final = 8 * 1024
HEAD_TIMEOUT: Final = 10.0
MAX_CONNECTIONS: Final = 8


async def serve_metrics(
    render: Callable[[], Awaitable[bytes]],
    *,
    host: str,
    port: int,
    content_type: str,
    shutdown: asyncio.Event,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until ``shutdown`` is set; ``ready(port)`` once listening (port 0 picks one)."""
    active = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= MAX_CONNECTIONS:
            writer.close()
            return
        active += 1
        try:
            await _answer(reader, writer, render, content_type)
        except (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # the scraper went away or sent nonsense; nothing to tell it
        except Exception:
            log.exception("metrics listener: answering a request failed")
        finally:
            active -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=MAX_HEAD_BYTES)
    async with server:
        bound = server.sockets[0].getsockname()[1]
        log.info("metrics listening on http://%s:%d/metrics", host, bound)
        if ready is not None:
            ready(bound)
        await shutdown.wait()


async def _answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    render: Callable[[], Awaitable[bytes]],
    content_type: str,
) -> None:
    async with asyncio.timeout(HEAD_TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    method, _, rest = head.partition(b" ")
    target = rest.partition(b" ")[0].partition(b"?")[0]
    if method not in (b"GET", b"HEAD"):
        status, body, ctype = "405 Method Not Allowed", b"method not allowed\n", "text/plain"
        extra = "Allow: GET, HEAD\r\n"
    elif target != b"/metrics":
        status, body, ctype, extra = "404 Not Found", b"not found: try /metrics\n", "text/plain", ""
    else:
        status, body, ctype, extra = "200 OK", await render(), content_type, ""
    writer.write(
        (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n"
        ).encode()
    )
    if method != b"HEAD":
        writer.write(body)
    await writer.drain()
