"""Deployments as traces over OTLP/HTTP, received by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from keystone_edge.observe.events import EventBus
from keystone_edge.observe.tracing import start_tracing

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)


class Collector(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.headers_seen: list[dict[str, str]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append(request)
        self.server.paths.append(self.path)
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.shutdown()
    server.server_close()


def test_a_deployment_is_one_trace_with_a_span_per_step(collector: Collector) -> None:
    tracer = start_tracing(
        collector.endpoint,
        headers={"Authorization": "Bearer t"},
        timeout=5.0,
        service_name="keystone-agent",
        service_version="1.2.3",
        device_id="edge-7",
    )
    clock = iter([100.0 + n for n in range(100)])
    bus = EventBus(clock=lambda: next(clock))
    bus.subscribe(tracer)
    bus.publish("deployment.queued", deployment_id="d-1")
    bus.publish("deployment.started", deployment_id="d-1")
    for step, component in [("resolve", None), ("fetch", "com.a"), ("install", "com.a")]:
        bus.publish(
            "deployment.step", deployment_id="d-1", step=step, component=component, status="running"
        )
        bus.publish(
            "deployment.step",
            deployment_id="d-1",
            step=step,
            component=component,
            status="done",
            duration=1.0,
        )
    bus.publish(
        "deployment.step", deployment_id="d-1", step="ready", component="com.a", status="running"
    )
    bus.publish(
        "deployment.step",
        deployment_id="d-1",
        step="ready",
        component="com.a",
        status="failed",
        error="not ready",
    )
    bus.publish("deployment.rollback", deployment_id="d-1", error="not ready")
    bus.publish("deployment.done", deployment_id="d-1", status="rolled_back", error="not ready")
    deadline = time.monotonic() + 10
    while not collector.spans() and time.monotonic() < deadline:
        time.sleep(0.02)
    tracer.close()

    spans = {span.name: span for span in collector.spans()}
    assert set(spans) == {
        "deployment d-1",
        "resolve",
        "fetch com.a",
        "install com.a",
        "ready com.a",
    }
    root = spans["deployment d-1"]
    assert root.parent_span_id == b""
    assert {s.trace_id for s in spans.values()} == {root.trace_id}
    assert all(s.parent_span_id == root.span_id for n, s in spans.items() if s is not root)
    assert root.start_time_unix_nano == 101 * 10**9  # deployment.started, not queued
    assert root.end_time_unix_nano == 111 * 10**9
    assert root.status.code == 2  # ERROR
    assert root.status.message == "not ready"
    assert [e.name for e in root.events] == ["rollback"]
    assert spans["ready com.a"].status.code == 2
    assert spans["fetch com.a"].status.code == 0
    fetch = spans["fetch com.a"]
    assert fetch.end_time_unix_nano - fetch.start_time_unix_nano == 10**9
    attributes = {a.key: a.value.string_value for a in fetch.attributes}
    assert attributes == {"keystone.step": "fetch", "keystone.component": "com.a"}
    resource = {
        a.key: a.value.string_value
        for a in collector.requests[0].resource_spans[0].resource.attributes
    }
    assert resource["service.name"] == "keystone-agent"
    assert resource["service.version"] == "1.2.3"
    assert resource["service.instance.id"] == "edge-7"
    assert collector.paths == ["/v1/traces"]
    assert collector.headers_seen[0]["authorization"] == "Bearer t"
    assert len(collector.requests) == 1  # the whole trace in one export
