"""Deployments as OpenTelemetry traces, exported over OTLP/HTTP (the optional ``otel`` extra).

Rules this module enforces:

- Nothing OpenTelemetry is imported unless ``[tracing] endpoint`` is set: the agent calls
  :func:`start_tracing` only then, and it imports the SDK inside. Without the extra
  installed it raises :class:`~keystone_edge.errors.AgentConfigError` saying what to
  install.
- One trace per deployment, built by a bus subscriber (``_otel.DeploymentTracer``; the
  engine knows nothing of tracing): a root span ``deployment <id>`` from
  ``deployment.started`` (or the first event seen for it) to ``deployment.done``, and one
  child span per step (``fetch com.example.hello``, ``rollback-restore ...``) from its
  ``running`` event to its ``done``/``failed`` one. Span times are the events' times. A
  failed step or an unsuccessful deployment has status ERROR with the error; a rollback
  is an event on the root span.
- Export happens per trace, in a short-lived thread, when the root span ends: the SDK's
  BatchSpanProcessor would wake the agent every few seconds forever, and the simple one
  would block the event loop on HTTP. Spans still open when the agent stops are dropped
  (the deployment is rolled back or resumed by the next agent, which starts a new trace).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from keystone_edge.errors import AgentConfigError
from keystone_edge.observe.events import Event

__all__ = ["DeploymentTracing", "start_tracing"]

log = logging.getLogger(__name__)


class DeploymentTracing(Protocol):
    """The bus subscriber :func:`start_tracing` returns."""

    def __call__(self, event: Event) -> None: ...

    def close(self) -> None:
        """Export what has finished and stop."""
        ...


def start_tracing(
    endpoint: str,
    *,
    headers: Mapping[str, str],
    timeout: float,
    service_name: str,
    service_version: str,
    device_id: str,
) -> DeploymentTracing:
    """A tracer exporting to ``endpoint`` (e.g. ``http://collector:4318/v1/traces``)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        from keystone_edge.observe import _otel
    except ImportError as exc:
        raise AgentConfigError(
            f"tracing.endpoint is set but OpenTelemetry is not installed ({exc.name} is "
            "missing): install keystone-edge[otel], or remove [tracing] endpoint"
        ) from exc
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.version": service_version,
            "service.instance.id": device_id,
        }
    )
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers), timeout=timeout)
    provider.add_span_processor(_otel.ExportPerTrace(exporter))
    log.info("tracing deployments to %s", endpoint)
    return _otel.DeploymentTracer(provider)
