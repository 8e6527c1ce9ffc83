"""The API socket: who may open it, what happens to leftovers, and a clean shutdown."""

from __future__ import annotations

import asyncio
import grp
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from keystone_edge.api.client import AgentClient
from keystone_edge.api.server import ApiLimits, bind_unix_socket, serve
from keystone_edge.errors import AgentConfigError, TransportError
from tests.api.harness import FakeAgent, Http, ServerThread


def test_the_socket_is_0660_and_removed_at_shutdown(sock_dir: Path) -> None:
    server = ServerThread(sock_dir, sock_dir / "agent.sock").start()
    mode = server.socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    server.stop()
    assert not server.socket_path.exists()


def _other_group() -> grp.struct_group:
    for group in grp.getgrall():
        if group.gr_gid != os.getegid():
            return group
    pytest.skip("no group other than our own to hand the socket to")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a socket to any group")
def test_mode_and_admin_group(sock_dir: Path) -> None:
    group = _other_group()
    sock = bind_unix_socket(sock_dir / "a.sock", mode=0o600, group=group.gr_name)
    try:
        st = (sock_dir / "a.sock").stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o600, group.gr_gid)
    finally:
        sock.close()


def test_an_unknown_group_is_a_config_error(sock_dir: Path) -> None:
    with pytest.raises(AgentConfigError) as caught:
        bind_unix_socket(sock_dir / "a.sock", group="no-such-group-keystone")
    assert str(caught.value) == "api.socket_group: no group named 'no-such-group-keystone'"
    assert not (sock_dir / "a.sock").exists()


def test_a_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(path))  # bound, never listening, closed: what a crash leaves
    leftover.close()
    server = ServerThread(sock_dir, path).start()
    try:
        http = Http(path)
        assert http.get("/healthz").status == 200
        http.close()
    finally:
        server.stop()


def test_a_live_socket_is_not_stolen(server: ServerThread) -> None:
    with pytest.raises(AgentConfigError) as caught:
        bind_unix_socket(server.socket_path)
    assert str(caught.value) == (
        f"api.socket: another process is already serving on {server.socket_path}; "
        "is another agent running?"
    )
    http = Http(server.socket_path)
    assert http.get("/healthz").status == 200
    http.close()


def test_a_file_that_is_not_a_socket_is_left_alone(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    path.write_text("precious")
    with pytest.raises(AgentConfigError, match="exists and is not a socket"):
        bind_unix_socket(path)
    assert path.read_text() == "precious"


def test_serve_reports_a_socket_it_cannot_create(sock_dir: Path) -> None:
    async def main() -> None:
        agent = FakeAgent(sock_dir)
        try:
            await serve(agent, sock_dir / "missing" / "agent.sock", shutdown=asyncio.Event())
        finally:
            agent.store.close()

    with pytest.raises(AgentConfigError, match=r"cannot create the API socket at .*: No such file"):
        asyncio.run(main())


def test_shutdown_ends_open_streams(sock_dir: Path) -> None:
    server = ServerThread(sock_dir, sock_dir / "agent.sock").start()
    server.call(server.agent.add_component, "com.example.hello")
    client = AgentClient(server.socket_path, timeout=10)
    events = client.stream_events(since=0)
    logs = client.stream_logs("com.example.hello", tail=0, follow=True)
    first = next(iter(events))
    assert first.type == "component.state"
    errors: list[str] = []

    def drain(iterable: object) -> None:
        try:
            for _ in iterable:  # type: ignore[attr-defined]
                pass
        except TransportError as exc:
            errors.append(str(exc))

    readers = [threading.Thread(target=drain, args=(s,)) for s in (events, logs)]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    server.stop()
    # Well within the graceful-shutdown limit: streams end when asked, not when killed.
    assert time.monotonic() - started < ApiLimits().graceful_shutdown_seconds
    for reader in readers:
        reader.join(5)
    assert sorted(errors) == [
        f"the agent at {server.socket_path} closed the event stream",
        f"the agent at {server.socket_path} closed the log stream",
    ]
    client.close()


def test_uvicorn_leaves_the_agents_signal_handlers_alone(sock_dir: Path) -> None:
    """In the main thread uvicorn would install its own SIGTERM handler; ours must not."""

    def handler(signum: int, frame: object) -> None:
        raise AssertionError("not expected to be called")

    previous = signal.signal(signal.SIGTERM, handler)
    seen: list[object] = []

    async def main() -> None:
        agent = FakeAgent(sock_dir)
        shutdown, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            serve(agent, sock_dir / "agent.sock", shutdown=shutdown, ready=ready)
        )
        await ready.wait()
        seen.append(signal.getsignal(signal.SIGTERM))
        shutdown.set()
        await task
        agent.store.close()

    try:
        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [handler]


def test_connections_are_capped(sock_dir: Path) -> None:
    server = ServerThread(sock_dir, sock_dir / "agent.sock", ApiLimits(max_connections=1)).start()
    try:
        with AgentClient(server.socket_path, timeout=10) as client:
            stream = client.stream_events()  # holds the one connection
            with pytest.raises(TransportError) as caught:
                client.list_components()
            assert str(caught.value) == (
                f"the agent at {server.socket_path} answered GET /v1/components with "
                "HTTP 503: Service Unavailable"
            )
            stream.close()
    finally:
        server.stop()
