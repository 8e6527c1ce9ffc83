"""sd_notify: READY=1 once the API serves, STOPPING=1 on SIGTERM (a real datagram socket)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Agent

pytestmark = pytest.mark.slow


def test_agent_notifies_systemd(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        agent = agent_factory()
        agent.env["NOTIFY_SOCKET"] = str(path)
        agent.start()
        assert sock.recv(4096) == b"READY=1"
        # READY means ready: the API answers.
        assert agent.client().health()["status"] == "ok"
        agent.proc.send_signal(15)  # type: ignore[union-attr]
        assert sock.recv(4096) == b"STOPPING=1"
        assert agent.proc.wait(30) == 0  # type: ignore[union-attr]


def test_agent_config_errors_are_clear(agent_factory: Callable[..., Agent]) -> None:
    agent = agent_factory(config='[logs]\nmax_bytes = "10 MB"\nbackup = 3\n')
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "keystone-agent"), "--root", str(agent.root)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "agent.toml" in result.stderr
    assert "logs.max_bytes" in result.stderr
    assert "did you mean `backups`" in result.stderr or "did you mean 'backups'" in result.stderr
