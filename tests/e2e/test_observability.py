"""Observability end to end: a real agent, real components, real sockets and servers.

Metrics as Prometheus scrapes them (and as promtool judges them), JSON log lines, the disk
cap under a flood, syslog and Loki sinks, event catch-up after a reconnect, the systemd
watchdog, readiness, and deployment traces.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import (
    BIN,
    Agent,
    deployment,
    python_argv,
    recipe,
    wait_for,
    write_program,
)

pytestmark = pytest.mark.slow

PROMTOOL = shutil.which("promtool")
SLEEPER = "import time\nprint('up', flush=True)\nwhile True: time.sleep(3600)\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(agent: Agent, path: str) -> tuple[int, bytes]:
    with httpcore.ConnectionPool(uds=str(agent.socket)) as pool:
        response = pool.request(
            "GET", f"http://localhost{path}", extensions={"timeout": {"read": 30}}
        )
    return response.status, response.content


def scrape(agent: Agent) -> str:
    status, body = get(agent, "/metrics")
    assert status == 200, body
    return body.decode()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def metric_at_least(agent: Agent, minimum: float, name: str, **labels: str) -> float | None:
    got = value(samples(scrape(agent)), name, **labels)
    return got if got is not None and got >= minimum else None


def promtool_check(text: str) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool missing (Debian package prometheus; scripts/test installs it)")
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""  # no lint warning either


def web_server(path: Path, port: int, flag: Path) -> Path:
    return write_program(
        path,
        f"""
import http.server, pathlib
FLAG = pathlib.Path({str(flag)!r})
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if FLAG.exists() else 200)
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
""",
    )


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_follow_the_components_and_pass_promtool(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    tcp_port = free_port()
    agent = agent_factory(config=f"[metrics]\ntcp = true\nport = {tcp_port}\n").start()
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    crasher = write_program(
        tmp_path / "crash.py", "import sys, time\ntime.sleep(0.3)\nsys.exit(3)\n"
    )
    web_port, flag = free_port(), tmp_path / "sick"
    web = web_server(tmp_path / "web.py", web_port, flag)
    always = {"restart_policy": "always", "backoff": {"initial": "50ms", "max": "100ms"}}
    recipes = [
        recipe("com.test.sleeper", argv=python_argv(sleeper), run=always),
        recipe("com.test.crash", argv=python_argv(crasher), run=always),
        recipe(
            "com.test.web",
            "2.1.0",
            argv=python_argv(web),
            run={
                **always,
                "health": {
                    "check": f"http://127.0.0.1:{web_port}/healthz",
                    "interval": "100ms",
                    "timeout": "1s",
                    "failure_threshold": 2,
                },
            },
        ),
    ]
    doc = deployment("com.test.sleeper", "com.test.crash", "com.test.web")
    assert agent.deploy_and_wait(doc, recipes).status == "succeeded"
    first = agent.wait_state("com.test.sleeper", "RUNNING")
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    agent.wait_state("com.test.web", "RUNNING")
    flag.write_text("sick")

    sleeper_labels = {"component": "com.test.sleeper", "version": "1.0.0"}
    web_labels = {"component": "com.test.web", "version": "2.1.0"}
    crash_labels = {"component": "com.test.crash", "version": "1.0.0"}
    wait_for(
        lambda: metric_at_least(
            agent, 1, "keystone_component_restarts_total", **sleeper_labels, reason="signal"
        ),
        what="a restart by signal",
    )
    wait_for(
        lambda: metric_at_least(
            agent, 1, "keystone_component_restarts_total", **web_labels, reason="health"
        ),
        what="a restart for failed health checks",
    )
    flag.unlink()
    wait_for(
        lambda: metric_at_least(
            agent, 2, "keystone_component_restarts_total", **crash_labels, reason="exit"
        ),
        what="restarts after exits",
    )
    agent.wait_state("com.test.sleeper", "RUNNING")
    text = scrape(agent)
    promtool_check(text)
    found = samples(text)
    assert value(found, "keystone_component_state", **sleeper_labels, state="RUNNING") == 1
    assert value(found, "keystone_component_state", **sleeper_labels, state="FAILED") == 0
    assert value(found, "keystone_component_restarts_total", **sleeper_labels, reason="exit") == 0
    assert (value(found, "keystone_component_health_check_failures_total", **web_labels) or 0) >= 2
    assert value(found, "keystone_component_health_check_latency_seconds", **web_labels) is not None
    assert (value(found, "keystone_component_resident_memory_bytes", **sleeper_labels) or 0) > 1e6
    assert value(found, "keystone_component_cpu_seconds_total", **sleeper_labels) is not None
    assert value(found, "keystone_component_processes", **sleeper_labels) == 1
    assert value(found, "keystone_component_last_exit_code", **sleeper_labels) == 128 + 9
    assert (value(found, "keystone_component_uptime_seconds", **sleeper_labels) or -1) >= 0
    assert value(found, "keystone_deployments_total", outcome="succeeded") == 1
    assert (
        value(
            found,
            "keystone_deployment_step_duration_seconds_count",
            step="start-new",
            outcome="succeeded",
        )
        == 3
    )
    assert value(found, "keystone_deployment_duration_seconds_count", outcome="succeeded") == 1
    assert value(found, "keystone_deployment_queue_length") == 0
    assert value(found, "keystone_agent_resident_memory_bytes")
    assert value(found, "keystone_agent_open_fds")
    assert value(found, "keystone_agent_event_loop_lag_seconds") is not None
    assert value(found, "keystone_artifact_cache_entries") == 0
    assert value(found, "keystone_artifact_gc_runs_total") == 1  # after the deployment

    # The same metrics over TCP, for a Prometheus on the network.
    with httpcore.ConnectionPool() as pool:
        response = pool.request("GET", f"http://127.0.0.1:{tcp_port}/metrics")
    assert response.status == 200
    assert response.headers[0] == (b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
    promtool_check(response.content.decode())


def test_oom_kills_count_as_oom_restarts(agent: Agent, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("memory limits need root (cgroups)")
    hog = write_program(
        tmp_path / "hog.py", "import time\ntime.sleep(0.2)\ndata = b'x' * (256 << 20)\n"
    )
    r = recipe(
        "com.test.hog",
        argv=python_argv(hog),
        run={"restart_policy": "always", "backoff": {"initial": "100ms", "max_retries": 2}},
        resources={"memory_limit": "32Mi"},
    )
    agent.deploy(deployment("com.test.hog", failure_policy="do_nothing"), [r])
    record = agent.wait_state("com.test.hog", "FAILED", timeout=60)
    if "OOM killer" not in record.reason:
        pytest.skip(f"no OOM reported here (no memory cgroup for components?): {record.reason}")
    found = samples(scrape(agent))
    labels = {"component": "com.test.hog", "version": "1.0.0"}
    assert value(found, "keystone_component_restarts_total", **labels, reason="oom") == 2
    assert value(found, "keystone_component_restarts_total", **labels, reason="signal") == 0


def test_artifact_downloads_and_failures_are_counted(agent: Agent, tmp_path: Path) -> None:
    payload = os.urandom(3 << 20)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "app.bin").write_bytes(payload)

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = tmp_path / "www" / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    digest = hashlib.sha256(payload).hexdigest()
    try:
        good = recipe(
            "com.test.app",
            argv=python_argv(sleeper),
            artifacts=[{"uri": f"{base}/app.bin", "sha256": digest}],
        )
        assert agent.deploy_and_wait(deployment("com.test.app"), [good]).status == "succeeded"
        missing = recipe(
            "com.test.app",
            "2.0.0",
            argv=python_argv(sleeper),
            artifacts=[{"uri": f"{base}/gone.bin", "sha256": hashlib.sha256(b"?").hexdigest()}],
        )
        done = agent.deploy_and_wait(deployment(("com.test.app", "2.0.0")), [good, missing])
        assert done.status == "rolled_back"
    finally:
        server.shutdown()
        server.server_close()
    found = samples(scrape(agent))
    assert value(found, "keystone_artifact_downloaded_bytes_total") == len(payload)
    assert value(found, "keystone_artifact_download_failures_total", reason="artifact_failed") == 1
    assert value(found, "keystone_artifact_cache_entries") == 1
    assert value(found, "keystone_artifact_cache_size_bytes") == len(payload)
    assert value(found, "keystone_deployment_rollbacks_total") == 1
    assert value(found, "keystone_deployments_total", outcome="rolled_back") == 1


# -- logs -------------------------------------------------------------------------------------


def test_json_log_lines_carry_the_fields(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    agent = agent_factory(config='[logging]\nsinks = ["file"]\n').start()
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    record = agent.deploy_and_wait(
        deployment("com.test.sleeper"), [recipe("com.test.sleeper", argv=python_argv(sleeper))]
    )
    assert record.status == "succeeded"
    path = agent.root / "logs" / "keystone-agent.log"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    def running_line() -> dict[str, Any] | None:
        return next(
            (
                line
                for line in lines()
                if line.get("event") == "component.state" and line.get("to_state") == "RUNNING"
            ),
            None,
        )

    line = wait_for(running_line, what="the RUNNING transition in the agent log")
    for entry in lines():
        assert {"timestamp", "level", "logger", "message"} <= set(entry)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["timestamp"])
        assert None not in entry.values()
    assert line["component"] == "com.test.sleeper"
    assert line["logger"] == "keystone_edge.events"
    assert line["level"] == "info"
    assert line["message"].startswith("com.test.sleeper 1.0.0: STARTING -> RUNNING")
    steps = [e for e in lines() if e.get("event") == "deployment.step"]
    assert steps
    assert all(e["deployment_id"] == record.id for e in steps)
    assert agent.log() == ""  # stderr was not asked for


def test_rotation_and_the_disk_cap_hold_under_a_flood(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    cap = 1 << 20
    agent = agent_factory(
        config='[logs]\nmax_bytes = "256Ki"\nbackups = 3\n'
        '[logging]\nmax_total_bytes = "1Mi"\n[logging.file]\nmax_bytes = "64Ki"\n'
    ).start()
    flood = write_program(
        tmp_path / "flood.py",
        "import sys, time\n"
        "for i in range(150000): sys.stdout.write(f'line {i} ' + 'x' * 90 + '\\n')\n"
        "sys.stdout.write('flood done\\n'); sys.stdout.flush()\n"
        "while True: time.sleep(3600)\n",
    )
    names = ["com.test.flood1", "com.test.flood2"]
    recipes = [recipe(name, argv=python_argv(flood)) for name in names]
    assert agent.deploy_and_wait(deployment(*names), recipes).status == "succeeded"
    logs = agent.root / "logs"
    sizes: list[int] = []

    def done() -> bool:
        total = 0
        for entry in logs.iterdir():
            with contextlib.suppress(FileNotFoundError):  # deleted or rotated meanwhile
                total += entry.stat().st_size
        sizes.append(total)
        tails = [agent.client().component_logs(name, tail=3) for name in names]
        return all(any("flood done" in line for line in tail) for tail in tails)

    wait_for(done, timeout=120, what="both floods to end")
    # 2 x 15 MB were written; the directory never held more than the cap plus the one
    # chunk (256 KiB per pipe read) a writer adds just before the budget trims.
    assert max(sizes) <= cap + 2 * 256 * 1024, max(sizes)
    assert sum(f.stat().st_size for f in logs.iterdir()) <= cap
    for name in names:
        assert 0 < (logs / f"{name}.log").stat().st_size <= 256 * 1024
    # Rotated files remain (the oldest of them went first to keep the total down).
    assert any(logs.glob("com.test.flood*.log.[0-9]"))
    assert (logs / "keystone-agent.log").exists()
    found = samples(scrape(agent))
    assert (value(found, "keystone_log_disk_usage_bytes") or 0) <= cap
    assert value(found, "keystone_log_disk_limit_bytes") == cap
    assert agent.client().health()["status"] == "ok"


def test_syslog_sink_gets_agent_and_component_lines(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    path = tmp_path / "log.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        agent = agent_factory(
            config='[logging]\nsinks = ["syslog"]\nforward_components = true\n'
            f'[logging.syslog]\naddress = "{path}"\nfacility = "local0"\n'
        ).start()
        echo = write_program(
            tmp_path / "echo.py", SLEEPER.replace("'up'", "'hello from the component'")
        )
        agent.deploy(deployment("com.test.echo"), [recipe("com.test.echo", argv=python_argv(echo))])
        received: list[str] = []
        while not any("hello from the component" in d for d in received):
            received.append(sock.recv(65536).decode())
    ready = next(d for d in received if "agent 0.1.0 ready" in d or " ready: root " in d)
    assert re.match(
        r"<134>1 \d{4}-\d\d-\d\dT[\d:.]+Z \S+ keystone-agent \d+ - \[keystone@32473 ", ready
    )
    forwarded = next(d for d in received if "hello from the component" in d)
    assert 'component="com.test.echo"' in forwarded
    assert 'stream="out"' in forwarded
    assert forwarded.endswith("] hello from the component")
    assert agent.log() == ""  # syslog only


class _SlowLoki(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _SlowLokiHandler)
        self.delay = delay
        self.requests = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _SlowLokiHandler(BaseHTTPRequestHandler):
    server: _SlowLoki

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests += 1
        time.sleep(self.server.delay)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(params=["slow", "down"])
def loki_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "down":
        yield f"http://127.0.0.1:{free_port()}/loki/api/v1/push"
        return
    server = _SlowLoki(delay=3.0)
    yield f"http://127.0.0.1:{server.server_address[1]}/loki/api/v1/push"
    server.shutdown()
    server.server_close()


def test_loki_slow_or_down_leaves_the_agent_unaffected(
    agent_factory: Callable[..., Agent], tmp_path: Path, loki_url: str
) -> None:
    agent = agent_factory(
        config='[logging]\nsinks = ["file", "loki"]\nforward_components = true\n'
        f'[logging.loki]\nurl = "{loki_url}"\nqueue_size = 50\nbatch_size = 10\n'
        'batch_wait = "50ms"\ntimeout = "1s"\n'
    ).start()
    chatty = write_program(
        tmp_path / "chatty.py",
        "import time\nfor i in range(3000): print('line', i, flush=True)\n"
        "while True: time.sleep(3600)\n",
    )
    started = time.monotonic()
    record = agent.deploy_and_wait(
        deployment("com.test.chatty"), [recipe("com.test.chatty", argv=python_argv(chatty))]
    )
    assert record.status == "succeeded"
    assert time.monotonic() - started < 15
    dropped = wait_for(
        lambda: metric_at_least(agent, 1000, "keystone_log_records_dropped_total", sink="loki"),
        what="dropped Loki lines to be counted",
    )
    assert dropped <= 3000 + 200  # component lines plus the agent's own
    asked = time.monotonic()
    assert agent.client().health()["status"] == "ok"
    assert time.monotonic() - asked < 1.0
    # The file sink is unaffected.
    assert (agent.root / "logs" / "keystone-agent.log").stat().st_size > 0
    assert agent.stop(timeout=30) == 0


# -- events -----------------------------------------------------------------------------------


class EventReader:
    """``keystonectl events ... -o json`` in the background; events read with a deadline."""

    def __init__(self, agent: Agent, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                str(BIN / "keystonectl"),
                "--socket",
                str(agent.socket),
                "events",
                *args,
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=agent.env,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def next(self, timeout: float = 20.0) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self._lines.get(timeout=timeout))
        return event

    def until(self, kind: str) -> list[dict[str, Any]]:
        got = [self.next()]
        while got[-1]["type"] != kind:
            got.append(self.next())
        return got

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_events_catch_up_after_a_reconnect(agent: Agent, tmp_path: Path) -> None:
    sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
    follower = EventReader(agent, "-f", "--since", "0")
    try:
        agent.deploy(
            deployment("com.test.sleeper"), [recipe("com.test.sleeper", argv=python_argv(sleeper))]
        )
        seen = follower.until("deployment.done")
    finally:
        follower.close()  # the client goes away
    last = seen[-1]["id"]
    assert [e["id"] for e in seen] == list(range(seen[0]["id"], last + 1))

    # While nobody listens: a restart.
    agent.client().component_action("com.test.sleeper", "restart")
    agent.wait_state("com.test.sleeper", "RUNNING")

    caught_up = agent.ctl("events", "--since", str(last), "-o", "json")
    assert caught_up.returncode == 0, caught_up.stderr
    missed = [json.loads(line) for line in caught_up.stdout.splitlines()]
    ids = [e["id"] for e in missed]
    assert ids == list(range(last + 1, last + 1 + len(ids)))  # no gap, no duplicate
    states = [e["payload"]["to_state"] for e in missed if e["type"] == "component.state"]
    assert states == ["STOPPING", "STARTING", "RUNNING"]

    # Following again from the same point: the backlog, then live events, seamlessly.
    again = EventReader(agent, "-f", "--since", str(last))
    try:
        assert [again.next()["id"] for _ in ids] == ids
        agent.client().component_action("com.test.sleeper", "stop")
        live = again.next()
        assert live["id"] == ids[-1] + 1
        assert live["type"] == "component.state"
        assert live["payload"]["to_state"] == "STOPPING"
    finally:
        again.close()


# -- systemd and readiness ----------------------------------------------------------------------


def test_watchdog_pings_come_while_the_agent_runs(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        agent = agent_factory()
        agent.env["NOTIFY_SOCKET"] = str(path)
        agent.env["WATCHDOG_USEC"] = "200000"  # 0.2 s: a ping every 0.1 s
        agent.start()
        messages: list[tuple[float, bytes]] = []
        while sum(m == b"WATCHDOG=1" for _, m in messages) < 10:
            messages.append((time.monotonic(), sock.recv(64)))
        assert b"READY=1" in [m for _, m in messages]
        pings = [t for t, m in messages if m == b"WATCHDOG=1"]
        assert pings[-1] - pings[-10] < 2.0  # ~0.9 s for nine intervals of 0.1 s


def test_readyz_200_then_503_while_the_store_takes_no_writes(agent: Agent) -> None:
    status, body = get(agent, "/readyz")
    report = json.loads(body)
    assert status == 200, report
    assert report["ready"] is True
    assert set(report["checks"]) == {"agent", "store", "event_loop", "deployments"}
    other = sqlite3.connect(agent.root / "state" / "keystone.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        status, body = get(agent, "/readyz")
    finally:
        other.execute("ROLLBACK")
        other.close()
    report = json.loads(body)
    assert status == 503, report
    assert report["ready"] is False
    assert report["checks"]["store"]["ok"] is False
    assert "locked" in report["checks"]["store"]["detail"]
    assert report["checks"]["event_loop"]["ok"] is True
    assert get(agent, "/readyz")[0] == 200


# -- tracing ----------------------------------------------------------------------------------


def test_a_deployment_produces_a_trace(agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="otel extra missing")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest()
            request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(request)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        agent = agent_factory(config=f'[tracing]\nendpoint = "{endpoint}"\n').start()
        sleeper = write_program(tmp_path / "sleeper.py", SLEEPER)
        record = agent.deploy_and_wait(
            deployment("com.test.sleeper"), [recipe("com.test.sleeper", argv=python_argv(sleeper))]
        )
        wait_for(lambda: received, what="a trace")
    finally:
        server.shutdown()
        server.server_close()
    spans = [
        span
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = [span.name for span in spans]
    assert f"deployment {record.id}" in names
    assert {
        "resolve",
        "fetch com.test.sleeper",
        "start-new com.test.sleeper",
        "ready com.test.sleeper",
        "commit",
    } <= set(names)
    assert len({span.trace_id for span in spans}) == 1
