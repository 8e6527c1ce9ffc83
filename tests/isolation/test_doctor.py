"""``keystonectl doctor``: the checks on this host, against a real (small) agent socket,
and the command's output and exit code."""

from __future__ import annotations

import datetime
import grp
import http.server
import json
import os
import pwd
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import click
import pytest
from click.testing import CliRunner

from keystone_edge.cli._context import CliContext
from keystone_edge.cli.doctor import doctor
from keystone_edge.isolation.doctor import (
    Check,
    _health_via_socket,
    check_agent,
    check_cgroups,
    check_clock,
    check_disk,
    check_socket,
    exit_code,
    isolation_findings,
    run_checks,
)
from keystone_edge.isolation.host import HostFacts

NAMES = [
    "agent",
    "socket permissions",
    "privileges",
    "cgroups",
    "seccomp",
    "apparmor",
    "user namespaces",
    "disk space",
    "clock",
    "isolation enforced",
]


class _Health(http.server.BaseHTTPRequestHandler):
    body: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        if self.path != "/healthz":
            self.send_error(404)
            return
        data = json.dumps(self.body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def agent_root() -> Iterator[Path]:
    # Unix socket paths are short: keep the root out of pytest's long tmp paths.
    with tempfile.TemporaryDirectory(prefix="ks-doctor-") as root:
        (Path(root) / "run").mkdir()
        yield Path(root)


def serve(root: Path, body: dict[str, Any]) -> _Server:
    handler = type("Handler", (_Health,), {"body": body})
    server = _Server(str(root / "run" / "agent.sock"), handler)
    os.chmod(root / "run" / "agent.sock", 0o660)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_checks_on_this_host(agent_root: Path, host: HostFacts) -> None:
    checks = run_checks(agent_root, host=host, ntp=lambda: None)
    assert [c.name for c in checks] == NAMES
    by_name = {c.name: c for c in checks}
    agent = by_name["agent"]
    assert agent.status == "fail"
    assert agent.detail == f"no agent socket at {agent_root}/run/agent.sock"
    assert "start the agent" in agent.fix
    assert by_name["isolation enforced"].status == "skip"
    kinds = {"v2": "cgroup v2", "v1": "cgroup v1", "hybrid": "hybrid", "none": "no cgroup"}
    assert kinds[host.cgroup.kind] in by_name["cgroups"].detail
    if host.seccomp:
        assert by_name["seccomp"].status == "ok"
    assert by_name["apparmor"].status == ("ok" if host.apparmor else "warn")
    assert by_name["disk space"].detail.startswith(str(agent_root))
    assert exit_code(checks) == 1


def test_a_reachable_agent_with_isolation_findings(agent_root: Path, host: HostFacts) -> None:
    body = {
        "status": "ok",
        "version": "0.1.0",
        "uptime": 12.5,
        "isolation_warnings": {
            "com.example.a": ["security.apparmor_profile: AppArmor is not enabled"],
            "com.example.b": [],
        },
    }
    server = serve(agent_root, body)
    try:
        checks = run_checks(agent_root, host=host, ntp=lambda: True, fetch=_health_via_socket)
        by_name = {c.name: c for c in checks}
        assert by_name["agent"].status == "ok"
        assert by_name["agent"].detail.startswith("agent 0.1.0 answering on ")
        assert by_name["agent"].detail.endswith("(status ok, up 12s)")
        assert by_name["socket permissions"].status == "ok"
        owner = f"{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}"
        assert f" is 0660 {owner}" in by_name["socket permissions"].detail
        findings = by_name["isolation enforced"]
        assert findings.status == "warn"
        assert findings.detail == (
            "1 component(s) run with controls skipped: com.example.a: "
            "security.apparmor_profile: AppArmor is not enabled"
        )
        # The default path goes through the API client, if that module is there.
        agent, health = check_agent(agent_root / "run" / "agent.sock")
        assert agent.status == "ok", agent.detail
        assert health is not None
        assert health["version"] == "0.1.0"
    finally:
        server.shutdown()
        server.server_close()


def test_agent_without_isolation_data_is_skipped_with_the_reason(
    agent_root: Path, host: HostFacts
) -> None:
    server = serve(agent_root, {"status": "ok", "version": "0.1.0"})
    try:
        checks = run_checks(agent_root, host=host, ntp=lambda: True, fetch=_health_via_socket)
    finally:
        server.shutdown()
        server.server_close()
    last = checks[-1]
    assert last.status == "skip"
    assert "does not report isolation findings" in last.detail


def test_stale_socket_is_a_failure(agent_root: Path) -> None:
    import socket

    path = agent_root / "run" / "agent.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # bound, never listened: what a crashed agent leaves behind
    check, health = check_agent(path, fetch=_health_via_socket)
    assert check.status == "fail"
    assert check.detail.startswith(f"agent at {path} is not answering: ")
    assert health is None


def test_world_writable_socket_fails(agent_root: Path) -> None:
    path = agent_root / "run" / "agent.sock"
    path.write_text("")
    path.chmod(0o666)
    check = check_socket(path)
    assert check.status == "fail"
    assert "anyone on the device can control the agent" in check.detail
    assert check.fix.startswith(f"chmod 0660 {path}")


def test_isolation_findings() -> None:
    assert isolation_findings([("a", []), ("b", [])]).status == "ok"
    found = isolation_findings([("a", ["resources.memory_limit: no memory controller"])])
    assert found.status == "warn"
    assert "a: resources.memory_limit: no memory controller" in found.detail


def test_clock_and_cgroup_checks() -> None:
    old = check_clock(now=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC), ntp=lambda: True)
    assert old.status == "fail"
    assert "certificates and signatures will not verify" in old.detail
    unsynced = check_clock(ntp=lambda: False)
    assert unsynced.status == "warn"
    assert check_clock(ntp=lambda: True).detail.endswith("NTP synchronised")
    from keystone_edge.isolation.cgroups import CgroupLayout, Hierarchy

    none = check_cgroups(CgroupLayout(kind="none"), root=True)
    assert none.status == "fail"
    partial = check_cgroups(
        CgroupLayout(
            kind="v2",
            hierarchies=(Hierarchy(version=2, mount="/x", controllers=("memory",), own=""),),
        ),
        root=True,
    )
    assert partial.status == "warn"
    assert partial.detail.endswith("missing: cpu, pids, blkio/io")
    assert "Delegate=yes" in partial.fix


def test_disk_check_reports_space(tmp_path: Path) -> None:
    check = check_disk(tmp_path / "not-yet-created")
    assert check.status in {"ok", "warn", "fail"}
    assert check.detail.startswith(f"{tmp_path}: ")
    assert "inodes free" in check.detail


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(doctor, list(args), obj=CliContext(socket_path=None, output="table"))


def test_cli_table_and_exit_code(agent_root: Path) -> None:
    result = invoke("--root", str(agent_root))
    assert result.exit_code == 1  # no agent: a failed check
    assert "FAIL" in result.output
    assert "agent" in result.output
    assert "cgroups" in result.output


def test_cli_json(agent_root: Path) -> None:
    server = serve(agent_root, {"status": "ok", "version": "9.9.9"})
    try:
        result = invoke("--root", str(agent_root), "-o", "json")
    finally:
        server.shutdown()
        server.server_close()
    checks = [Check(**c) for c in json.loads(result.output)]
    assert [c.name for c in checks] == NAMES
    assert checks[0].status == "ok"
    assert result.exit_code == exit_code(checks)
