"""Fixtures for the CLI tests: keystonectl through click's runner, against a live API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keystone_edge.cli import cli
from tests.api.harness import ServerThread, short_tempdir


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with short_tempdir() as root:
        thread = ServerThread(root, root / "agent.sock").start()
        try:
            yield thread
        finally:
            thread.stop()


class Ctl:
    """``keystonectl --socket <the test server> ...``; tables 200 columns wide."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.runner.invoke(
            cli,
            ["--socket", str(self.socket_path), *args],
            env={"COLUMNS": "200", "KEYSTONE_SOCKET": None, **(env or {})},
            catch_exceptions=False,
        )


@pytest.fixture
def ctl(server: ServerThread) -> Ctl:
    return Ctl(server.socket_path)
