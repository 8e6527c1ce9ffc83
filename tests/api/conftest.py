"""Fixtures for the API tests: a live server on a Unix socket, and raw HTTP to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keystone_edge.api.client import AgentClient
from tests.api.harness import Http, ServerThread, short_tempdir


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_tempdir() as path:
        yield path


@pytest.fixture
def server(sock_dir: Path) -> Iterator[ServerThread]:
    thread = ServerThread(sock_dir, sock_dir / "agent.sock").start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def http(server: ServerThread) -> Iterator[Http]:
    client = Http(server.socket_path)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def client(server: ServerThread) -> Iterator[AgentClient]:
    with AgentClient(server.socket_path, timeout=10) as agent:
        yield agent
