"""The artifact cache over the local API: ``GET /v1/artifacts`` and ``POST /v1/artifacts:gc``.

- ``GET /v1/artifacts`` -> ``[ArtifactInfo]``: every cache entry, by digest, with the
  component versions that reference it and why it is protected from collection (empty:
  evictable when the cache is over its quota).
- ``POST /v1/artifacts:gc`` with an optional JSON body ``{"dry_run": bool, "quota_bytes":
  int}`` -> ``GcOutcome``: what was (or, dry, would be) removed and the sizes around it.
  ``quota_bytes`` overrides the configured quota for this run (``0``: evict everything
  that is not protected).

The agent side is :class:`ArtifactControl` (two methods the agent's ``AgentControl``
implements); :func:`artifact_routes` turns it into Starlette routes that answer errors in
the API's shape (:mod:`keystone_edge.api._errors`). The wire types are defined here, apart
from the domain types of :mod:`keystone_edge.artifacts.gc`, so that ``keystonectl`` reads
them without importing the artifact manager; :func:`artifact_infos` and
:func:`gc_outcome` convert. :func:`list_artifacts` and :func:`gc_artifacts` are the
client side. Starlette is imported only when the routes are built.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from keystone_edge.api.client import AgentClient
    from keystone_edge.artifacts.cache import CacheEntry
    from keystone_edge.artifacts.gc import Eviction, GcReport, Retention

__all__ = [
    "ArtifactControl",
    "ArtifactInfo",
    "GcOutcome",
    "GcRemoval",
    "GcRequest",
    "artifact_infos",
    "artifact_routes",
    "gc_artifacts",
    "gc_outcome",
    "list_artifacts",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096


class ArtifactInfo(msgspec.Struct, kw_only=True):
    """One cache entry as ``GET /v1/artifacts`` lists it."""

    sha256: str
    file: str
    size: int  # bytes
    last_used: float  # seconds since the epoch
    uri: str  # where it first came from, without query or credentials
    referenced_by: list[str] = msgspec.field(default_factory=list)  # "component@version"
    protected: list[str] = msgspec.field(default_factory=list)  # why it is kept; empty: not


class GcRequest(msgspec.Struct, forbid_unknown_fields=True):
    dry_run: bool = False
    quota_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None


class GcRemoval(msgspec.Struct, kw_only=True):
    sha256: str
    file: str
    size: int
    last_used: float
    reason: str


class GcOutcome(msgspec.Struct, kw_only=True):
    """What ``POST /v1/artifacts:gc`` did, or with ``dry_run`` would do. Sizes in bytes."""

    dry_run: bool
    removed: list[GcRemoval]  # removed, or that would be
    skipped: list[GcRemoval]  # used while the collection ran, so kept
    freed_bytes: int
    total_bytes: int  # before
    remaining_bytes: int  # after (as planned)
    quota_bytes: int
    protected_bytes: int
    over_quota_bytes: int  # protected content alone over the quota


class ArtifactControl(Protocol):
    """What the artifact routes need from the agent."""

    async def list_artifacts(self) -> list[ArtifactInfo]: ...

    async def gc_artifacts(self, dry_run: bool, quota_bytes: int | None = None) -> GcOutcome:
        """Collect garbage now (``quota_bytes`` None: the configured quota)."""
        ...


# -- conversions (agent side) -----------------------------------------------------------------


def artifact_infos(entries: Iterable[CacheEntry], retention: Retention) -> list[ArtifactInfo]:
    """The listing of ``entries`` with the references and protections of ``retention``."""
    return [
        ArtifactInfo(
            sha256=e.sha256,
            file=e.file,
            size=e.size,
            last_used=e.last_used,
            uri=e.uri,
            referenced_by=list(retention.references.get(e.sha256, ())),
            protected=list(retention.protected.get(e.sha256, ())),
        )
        for e in entries
    ]


def _removal(eviction: Eviction) -> GcRemoval:
    entry = eviction.entry
    return GcRemoval(
        sha256=entry.sha256,
        file=entry.file,
        size=entry.size,
        last_used=entry.last_used,
        reason=eviction.reason,
    )


def gc_outcome(report: GcReport) -> GcOutcome:
    plan = report.plan
    return GcOutcome(
        dry_run=report.dry_run,
        removed=[_removal(e) for e in report.removed],
        skipped=[_removal(e) for e in report.skipped],
        freed_bytes=report.freed_bytes,
        total_bytes=plan.total_bytes,
        remaining_bytes=plan.total_bytes - report.freed_bytes,
        quota_bytes=plan.quota_bytes,
        protected_bytes=plan.protected_bytes,
        over_quota_bytes=max(0, plan.total_bytes - report.freed_bytes - plan.quota_bytes),
    )


# -- routes (server side) ---------------------------------------------------------------------


def artifact_routes(control: ArtifactControl) -> list[Route]:
    """``GET /v1/artifacts`` and ``POST /v1/artifacts:gc`` over ``control``."""
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response
    from starlette.routing import Route

    from keystone_edge.api._errors import ApiRequestError, error_body, status_for
    from keystone_edge.errors import KeyStoneError

    encode = msgspec.json.Encoder().encode

    def json(content: Any, status: int = 200) -> Response:
        return Response(encode(content), status_code=status, media_type="application/json")

    async def answer(request: Request, handler: Callable[[Request], Awaitable[Any]]) -> Response:
        try:
            return json(await handler(request))
        except KeyStoneError as exc:
            return json(error_body(exc), status_for(exc.code))
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception as exc:  # the agent must outlive any bug behind one request
            log.exception("local API: %s %s failed", request.method, request.url.path)
            error = KeyStoneError(
                f"internal error in {request.method} {request.url.path}: "
                f"{type(exc).__name__}: {exc}",
                hint="this is a bug in the agent; its log has the traceback",
            )
            return json(error_body(error), 500)

    async def listing(_request: Request) -> list[ArtifactInfo]:
        return await control.list_artifacts()

    async def collect(request: Request) -> GcOutcome:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ApiRequestError(
                    f"request body is larger than the {MAX_BODY_BYTES}-byte limit",
                    code="payload_too_large",
                    details={"limit_bytes": MAX_BODY_BYTES},
                )
        gc = GcRequest()
        if body.strip():
            try:
                gc = msgspec.json.decode(body, type=GcRequest)
            except msgspec.DecodeError as exc:  # ValidationError included
                raise ApiRequestError(f"invalid GcRequest: {exc}") from exc
        return await control.gc_artifacts(gc.dry_run, gc.quota_bytes)

    async def get_artifacts(request: Request) -> Response:
        return await answer(request, listing)

    async def post_gc(request: Request) -> Response:
        return await answer(request, collect)

    return [
        Route("/v1/artifacts", get_artifacts, methods=["GET"]),
        Route("/v1/artifacts:gc", post_gc, methods=["POST"]),
    ]


# -- client side ------------------------------------------------------------------------------


def list_artifacts(client: AgentClient) -> list[ArtifactInfo]:
    return client._call("GET", "/v1/artifacts", list[ArtifactInfo])


def gc_artifacts(
    client: AgentClient, *, dry_run: bool, quota_bytes: int | None = None
) -> GcOutcome:
    body = msgspec.json.encode(GcRequest(dry_run=dry_run, quota_bytes=quota_bytes))
    return client._call("POST", "/v1/artifacts:gc", GcOutcome, body=body)
