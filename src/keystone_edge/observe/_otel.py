"""The OpenTelemetry side of :mod:`keystone_edge.observe.tracing` (imported only when
tracing is configured; importing this module imports the SDK)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Span, Status, StatusCode

from keystone_edge import __version__
from keystone_edge.observe.events import Event

__all__ = ["DeploymentTracer", "ExportPerTrace"]

log = logging.getLogger("keystone_edge.observe.tracing")

_MAX_PENDING_SPANS = 10_000  # finished spans waiting for their trace's root to end


class DeploymentTracer:
    """Bus subscriber that turns ``deployment.*`` events into spans (see the module rules)."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("keystone_edge.deploy", __version__)
        self._roots: dict[str, Span] = {}
        self._steps: dict[tuple[str, str, str | None], Span] = {}

    def __call__(self, event: Event) -> None:
        kind, _, what = event.type.partition(".")
        if kind != "deployment":
            return
        p = event.payload
        deployment_id = str(p.get("deployment_id", ""))
        at = int(event.ts * 1e9)
        if what == "queued":
            return  # the trace starts when the work does
        root = self._root(deployment_id, at)
        if what == "step":
            self._step(deployment_id, root, p, at)
        elif what == "rollback":
            root.add_event("rollback", {"error": str(p.get("error", ""))}, timestamp=at)
        elif what == "recovered":
            attributes = {"action": str(p.get("action", "")), "reason": str(p.get("reason", ""))}
            root.add_event("recovered", attributes, timestamp=at)
        elif what == "done":
            status = str(p.get("status", ""))
            root.set_attribute("keystone.deployment.status", status)
            if status != "succeeded":
                root.set_status(Status(StatusCode.ERROR, str(p.get("error") or status)))
            for key in [k for k in self._steps if k[0] == deployment_id]:
                self._steps.pop(key).end(end_time=at)  # a step cut short by cancellation
            del self._roots[deployment_id]
            root.end(end_time=at)

    def _root(self, deployment_id: str, at: int) -> Span:
        root = self._roots.get(deployment_id)
        if root is None:
            root = self._tracer.start_span(
                f"deployment {deployment_id}",
                attributes={"keystone.deployment.id": deployment_id},
                start_time=at,
            )
            self._roots[deployment_id] = root
        return root

    def _step(self, deployment_id: str, root: Span, p: Mapping[str, Any], at: int) -> None:
        step, component = str(p.get("step", "")), p.get("component")
        key = (deployment_id, step, component if isinstance(component, str) else None)
        status = p.get("status")
        if status == "running":
            attributes: dict[str, str] = {"keystone.step": step}
            if key[2]:
                attributes["keystone.component"] = key[2]
            self._steps[key] = self._tracer.start_span(
                f"{step} {key[2]}" if key[2] else step,
                context=trace.set_span_in_context(root),
                attributes=attributes,
                start_time=at,
            )
            return
        span = self._steps.pop(key, None)
        if span is None:
            return
        if status == "failed":
            span.set_status(Status(StatusCode.ERROR, str(p.get("error", "failed"))))
        span.end(end_time=at)

    def close(self) -> None:
        """Export what has finished and stop (waits up to the exporter's timeout)."""
        self._provider.shutdown()


class ExportPerTrace(SpanProcessor):
    """A span processor that exports a trace's spans together once its root span ends."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._pending: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            if len(self._pending) >= _MAX_PENDING_SPANS:
                self._pending.pop(0)
            self._pending.append(span)
            if span.parent is not None:
                return
            trace_id = span.context.trace_id if span.context is not None else None
            batch = [s for s in self._pending if s.context and s.context.trace_id == trace_id]
            self._pending = [s for s in self._pending if s not in batch]
        thread = threading.Thread(target=self._export, args=(batch,), name="otlp-export")
        self._threads.add(thread)
        thread.start()

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            result = self._exporter.export(batch)
        except Exception:
            log.exception("exporting a deployment trace failed")
        else:
            if result is not SpanExportResult.SUCCESS:
                log.warning("exporting a deployment trace failed: %s", result.name)
        finally:
            self._threads.discard(threading.current_thread())

    def shutdown(self) -> None:
        for thread in list(self._threads):
            thread.join()
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        for thread in list(self._threads):
            thread.join(timeout_millis / 1000)
        return not self._threads
