"""GET /v1/components/{name}/logs: the tail of the log file, and following it."""

from __future__ import annotations

import time
from pathlib import Path

import httpcore
import pytest

from keystone_edge.api.client import AgentClient
from tests.api.harness import Http, ServerThread


@pytest.fixture
def log_file(server: ServerThread) -> Path:
    server.call(server.agent.add_component, "com.example.hello")
    path = server.agent.log_dir / "com.example.hello.log"
    path.write_text("".join(f"2026-01-01T00:00:00.000Z out line {n}\n" for n in range(150)))
    return path


def test_tail_defaults_to_100_lines_of_plain_text(http: Http, log_file: Path) -> None:
    reply = http.get("/v1/components/com.example.hello/logs")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    lines = reply.body.decode().splitlines()
    assert len(lines) == 100
    assert lines[0] == "2026-01-01T00:00:00.000Z out line 50"
    assert lines[-1] == "2026-01-01T00:00:00.000Z out line 149"


def test_tail_n(http: Http, log_file: Path) -> None:
    reply = http.get("/v1/components/com.example.hello/logs?tail=2")
    assert reply.body == (
        b"2026-01-01T00:00:00.000Z out line 148\n2026-01-01T00:00:00.000Z out line 149\n"
    )
    assert http.get("/v1/components/com.example.hello/logs?tail=0").body == b""


def test_a_component_without_output_has_an_empty_log(http: Http, server: ServerThread) -> None:
    server.call(server.agent.add_component, "com.example.quiet")
    reply = http.get("/v1/components/com.example.quiet/logs")
    assert (reply.status, reply.body) == (200, b"")


def test_follow_sends_the_tail_then_new_lines(server: ServerThread, log_file: Path) -> None:
    pool = httpcore.ConnectionPool(uds=str(server.socket_path))
    url = "http://keystone/v1/components/com.example.hello/logs?tail=1&follow=1"
    # A read timeout, so that a lost line fails the test instead of hanging it.
    with pool.stream("GET", url, extensions={"timeout": {"read": 10}}) as response:
        assert response.headers[0] == (b"content-type", b"text/plain; charset=utf-8")
        chunks = response.iter_stream()
        assert next(chunks) == b"2026-01-01T00:00:00.000Z out line 149\n"
        # Written the moment the tail arrived: the follower must already be watching.
        with log_file.open("a") as file:
            file.write("2026-01-01T00:00:01.000Z err new 1\n2026-01-01T00:00:01.000Z err new 2\n")
        received = b""
        while received.count(b"\n") < 2:
            received += next(chunks)
        assert received == (
            b"2026-01-01T00:00:01.000Z err new 1\n2026-01-01T00:00:01.000Z err new 2\n"
        )
    pool.close()


def test_the_client_follows_too(client: AgentClient, log_file: Path) -> None:
    with client.stream_logs("com.example.hello", tail=2, follow=True) as stream:
        lines = iter(stream)
        assert [next(lines), next(lines)] == [
            "2026-01-01T00:00:00.000Z out line 148",
            "2026-01-01T00:00:00.000Z out line 149",
        ]
        with log_file.open("a") as file:
            file.write("later\n")
        assert next(lines) == "later"


def test_follow_ends_when_the_client_leaves(
    client: AgentClient, log_file: Path, server: ServerThread
) -> None:
    def following() -> int:
        # Each open follow holds the log file open once in the server process.
        return sum(1 for fd in Path("/proc/self/fd").iterdir() if _points_to(fd, log_file))

    stream = client.stream_logs("com.example.hello", tail=0, follow=True)
    deadline = time.monotonic() + 5
    while following() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert following() == 1
    stream.close()
    while following() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert following() == 0


def _points_to(fd: Path, target: Path) -> bool:
    try:
        return Path(fd.readlink()) == target
    except OSError:
        return False


def test_component_logs_helper(client: AgentClient, log_file: Path) -> None:
    assert client.component_logs("com.example.hello", tail=3) == [
        f"2026-01-01T00:00:00.000Z out line {n}" for n in (147, 148, 149)
    ]
