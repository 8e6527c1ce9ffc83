"""The TCP metrics listener, spoken to over a real socket on 127.0.0.1."""

from __future__ import annotations

import asyncio

from keystone_edge.observe.scrape import MAX_HEAD_BYTES, serve_metrics

METRICS = b"# TYPE keystone_x gauge\nkeystone_x 1.0\n"


def exchange(*requests: bytes) -> list[bytes]:
    """Send each raw request on its own connection to a fresh listener; the raw answers."""

    async def render() -> bytes:
        return METRICS

    async def scenario() -> list[bytes]:
        shutdown = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            serve_metrics(
                render,
                host="127.0.0.1",
                port=0,
                content_type="text/plain; version=0.0.4; charset=utf-8",
                shutdown=shutdown,
                ready=bound.set_result,
            )
        )
        port = await bound
        answers = []
        for raw in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            await writer.drain()
            answers.append(await reader.read())
            writer.close()
        shutdown.set()
        await server
        return answers

    return asyncio.run(scenario())


def test_get_metrics() -> None:
    (answer,) = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert b"Connection: close" in head
    assert body == METRICS


def test_head_other_paths_and_methods() -> None:
    head, query, root, post = exchange(
        b"HEAD /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics?x=1 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert head.endswith(b"\r\n\r\n")  # no body
    assert query.startswith(b"HTTP/1.1 200")
    assert root.startswith(b"HTTP/1.1 404")
    assert post.startswith(b"HTTP/1.1 405")
    assert b"Allow: GET, HEAD" in post


def test_an_oversized_request_head_is_dropped() -> None:
    (answer,) = exchange(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")
    assert answer == b""
