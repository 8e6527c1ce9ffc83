"""The agent's local HTTP API: Starlette on uvicorn, on a Unix socket.

Rules this module enforces:

- It depends on :class:`~keystone_edge.api.control.AgentControl` and nothing else of the
  agent; every answer comes from there.
- JSON in and out through msgspec, strictly typed (a body is decoded straight into
  :class:`DeploymentRequest`; a wrong type names the field). Every response is
  ``application/json`` except component logs (``text/plain``) and events
  (``text/event-stream``). Every error is ``{"error": {"code", "message", "details"}}``
  with the statuses listed in :mod:`keystone_edge.api._errors`.
- Everything is bounded (:class:`ApiLimits`): request bodies are counted while they are
  read and refused past the cap, query parameters have ranges, connections are capped.
- A handler bug answers 500 ``internal`` (the traceback goes to the agent log) and the
  server keeps serving.
- Events: a client that passes ``since`` (or reconnects with ``Last-Event-ID``) gets every
  retained event after that id, then live events, with no gap and no duplicate: the
  live stream is subscribed *before* the backlog is read, and live events at or below the
  last id sent are skipped. If the client is too slow and its live stream drops events,
  the gap is refilled from the store (the store persists each event before any stream
  sees it).
- Streams (log follow, events) end when the client goes away or the agent shuts down.
- The socket is created by :mod:`._socket` (born private, then given its group and mode,
  and only then listened on); :func:`serve` removes it on the way out.
- uvicorn runs inside the agent's event loop as a guest: it installs no signal handlers
  (the agent owns SIGTERM), sets up no loop, loads no logging config, runs no lifespan,
  and does not wake up every 100 ms (its main loop is replaced by a wait on the agent's
  shutdown event, so an idle API costs no CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, cast
from urllib.parse import quote

import msgspec
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from keystone_edge.api import _uvicorn as uvicorn
from keystone_edge.api._errors import ApiRequestError, ErrorBody, ErrorInfo, error_body, status_for
from keystone_edge.api._socket import bind_unix_socket
from keystone_edge.api._sse import KEEPALIVE, encode_event
from keystone_edge.api.control import AgentControl, ComponentAction, DeploymentRequest
from keystone_edge.errors import KeyStoneError
from keystone_edge.observe.events import Event, EventStream
from keystone_edge.runners import logfile

__all__ = ["ApiLimits", "bind_unix_socket", "create_app", "serve"]

log = logging.getLogger(__name__)

T = TypeVar("T")

COMPONENT_ACTIONS: Final[tuple[ComponentAction, ...]] = ("restart", "start", "stop")
DEPLOYMENT_ACTIONS: Final = ("cancel",)


@dataclass(frozen=True)
class ApiLimits:
    """Every bound the API enforces, with its unit."""

    max_body_bytes: int = 16 * 2**20
    tail_default_lines: int = 100
    tail_max_lines: int = 10_000
    list_default: int = 100  # deployments per GET /v1/deployments
    list_max: int = 1000
    backlog_page_events: int = 1000  # events read from the store per query
    keepalive_seconds: float = 15.0  # SSE comment after this long without an event
    min_keepalive_seconds: float = 1.0  # smallest ?keepalive= a client may ask for
    max_connections: int = 64  # uvicorn answers 503 beyond this
    graceful_shutdown_seconds: float = 5.0  # open requests get this long at shutdown


# -- responses and errors ---------------------------------------------------------------

_encode = msgspec.json.Encoder(enc_hook=str).encode
_TEXT = "text/plain; charset=utf-8"
# Prometheus' classic text format, which every Prometheus 2.x parses.
_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encode(content)


def _error_response(exc: KeyStoneError, headers: dict[str, str] | None = None) -> Response:
    return JsonResponse(error_body(exc), status_code=status_for(exc.code), headers=headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method), in the API's error shape."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        info = ErrorInfo("not_found", f"no such endpoint: {where}", {})
    elif exc.status_code == 405:
        # Starlette builds Allow from a set; sort it so the answer is the same every time.
        allowed = sorted(m.strip() for m in headers.get("Allow", "").split(",") if m.strip())
        headers["Allow"] = ", ".join(allowed)
        info = ErrorInfo(
            "method_not_allowed",
            f"method {request.method} is not allowed on {request.url.path}"
            + (f" (allowed: {', '.join(allowed)})" if allowed else ""),
            {"allowed": allowed},
        )
    else:
        info = ErrorInfo("bad_request", f"{where}: {exc.detail}", {})
    return JsonResponse(ErrorBody(info), status_code=exc.status_code, headers=headers)


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Endpoint) -> Endpoint:
    """Map KeyStoneError to its error response and anything else to a logged 500."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except KeyStoneError as exc:
            return _error_response(exc)
        except ClientDisconnect:
            # The client left while sending its body; nobody is there to read an answer.
            return Response(status_code=400)
        except Exception as exc:  # the agent must outlive any bug behind one request
            log.exception("local API: %s %s failed", request.method, request.url.path)
            return _error_response(
                KeyStoneError(
                    f"internal error in {request.method} {request.url.path}: "
                    f"{type(exc).__name__}: {exc}",
                    hint="this is a bug in the agent; its log has the traceback",
                )
            )

    return endpoint


# -- request parsing ----------------------------------------------------------------------


class _RefConvertor(Convertor[str]):
    """A component name or deployment id: one path segment without ``:``.

    The colon separates a resource from a custom method (``/v1/components/x:restart``),
    so ``GET /v1/components/x:restart`` is a wrong method, not a component named
    ``x:restart``.
    """

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("keystone_ref", _RefConvertor())

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_DIGITS = re.compile(r"[0-9]+")
_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")


def _int_query(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if _DIGITS.fullmatch(raw) is None or not low <= int(raw) <= high:
        raise ApiRequestError(
            f"query parameter {name}: expected an integer from {low} to {high}, got {raw!r}",
            details={"parameter": name, "value": raw},
        )
    return int(raw)


def _bool_query(request: Request, name: str, *, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ApiRequestError(
        f"query parameter {name}: expected 1 or 0 (true/false), got {raw!r}",
        details={"parameter": name, "value": raw},
    )


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = ApiRequestError(
        f"request body is larger than the {limit // 2**20} MiB limit",
        code="payload_too_large",
        details={"limit_bytes": limit},
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    # Counted while reading: Content-Length may be absent (chunked) or wrong.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, type: type[T]) -> T:
    name = type.__name__
    if not body.strip():
        raise ApiRequestError(f"request body is empty: expected a JSON {name}")
    try:
        return msgspec.json.decode(body, type=type)
    except msgspec.ValidationError as exc:
        # msgspec says which field, e.g. "Expected `str`, got `int` - at `$.artifacts_dir`".
        match = _MSGSPEC_PATH.search(str(exc))
        raise ApiRequestError(
            f"invalid {name}: {exc}", details={"field": match.group(1) if match else None}
        ) from exc
    except msgspec.DecodeError as exc:
        raise ApiRequestError(f"request body is not valid JSON: {exc}") from exc


# -- streams ------------------------------------------------------------------------------


class _Pacer(Generic[T]):
    """Items of ``source``; ``None`` after ``idle`` seconds without one; ends on ``stopping``.

    The pending ``__anext__`` survives an idle tick (it is not cancelled and restarted),
    so no item is lost to a keep-alive. :meth:`start` asks ``source`` for its first item
    right away (a log follower opens its file then). Always :meth:`close` it: that
    cancels the pending ``__anext__``, which runs ``source``'s own cleanup (close the
    file, leave the event bus) without awaiting anything, so it also works inside a
    cancelled task.
    """

    def __init__(self, source: AsyncIterator[T], stopping: asyncio.Event, idle: float | None):
        self._source = source
        self._stopping = stopping
        self._idle = idle
        self._pending: asyncio.Future[T] | None = None
        self._stop: asyncio.Future[Any] | None = None

    def start(self) -> None:
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._source))

    def __aiter__(self) -> _Pacer[T]:
        return self

    async def __anext__(self) -> T | None:
        if self._stop is None:
            self._stop = asyncio.ensure_future(self._stopping.wait())
        self.start()
        assert self._pending is not None
        waiters: set[asyncio.Future[Any]] = {self._pending, self._stop}
        done, _ = await asyncio.wait(waiters, timeout=self._idle, return_when=FIRST_COMPLETED)
        if self._pending in done:
            future, self._pending = self._pending, None
            return future.result()  # StopAsyncIteration at the end of source ends us too
        if self._stop in done:
            raise StopAsyncIteration
        return None

    def close(self) -> None:
        if self._stop is not None:
            self._stop.cancel()
        if self._pending is not None:
            self._pending.cancel()


async def _iterate(stream: EventStream) -> AsyncIterator[Event]:
    while True:
        yield await stream.get()


def _lines(lines: list[str]) -> bytes:
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode()


# -- the API ------------------------------------------------------------------------------


class _Api:
    def __init__(self, control: AgentControl, limits: ApiLimits, stopping: asyncio.Event):
        self.control = control
        self.limits = limits
        self.stopping = stopping

    def routes(self) -> list[Route]:
        def route(path: str, handler: Endpoint, method: str) -> Route:
            return Route(path, _guarded(handler), methods=[method])

        ref = "{name:keystone_ref}"
        dep = "{id:keystone_ref}"
        return [
            route("/healthz", self.health, "GET"),
            route("/readyz", self.readiness, "GET"),
            route("/metrics", self.metrics, "GET"),
            route("/v1/components", self.list_components, "GET"),
            route(f"/v1/components/{ref}", self.get_component, "GET"),
            route(f"/v1/components/{ref}:{{action}}", self.component_action, "POST"),
            route(f"/v1/components/{ref}/logs", self.component_logs, "GET"),
            route("/v1/deployments", self.list_deployments, "GET"),
            route("/v1/deployments", self.submit_deployment, "POST"),
            route("/v1/deployments:rollback", self.rollback_deployment, "POST"),
            route(f"/v1/deployments/{dep}", self.get_deployment, "GET"),
            route(f"/v1/deployments/{dep}:{{action}}", self.deployment_action, "POST"),
            route("/v1/events", self.events, "GET"),
        ]

    async def health(self, _request: Request) -> Response:
        return JsonResponse(self.control.health())

    async def readiness(self, _request: Request) -> Response:
        report = await self.control.readiness()
        return JsonResponse(report, status_code=200 if report.ready else 503)

    async def metrics(self, _request: Request) -> Response:
        return Response(await self.control.metrics(), media_type=_METRICS)

    # components

    async def list_components(self, _request: Request) -> Response:
        return JsonResponse(await self.control.list_components())

    async def get_component(self, request: Request) -> Response:
        return JsonResponse(await self.control.get_component(request.path_params["name"]))

    async def component_action(self, request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action in COMPONENT_ACTIONS:
            action = cast(ComponentAction, action)
            return JsonResponse(await self.control.component_action(name, action))
        raise ApiRequestError(
            f"unknown component action {action!r}: expected one of "
            f"{', '.join(COMPONENT_ACTIONS)} (POST /v1/components/{name}:ACTION)",
            code="not_found",
            details={"action": action},
        )

    async def component_logs(self, request: Request) -> Response:
        limits = self.limits
        lines = _int_query(
            request, "tail", default=limits.tail_default_lines, low=0, high=limits.tail_max_lines
        )
        follow = _bool_query(request, "follow", default=False)
        path = self.control.component_log_path(request.path_params["name"])
        if follow:
            return StreamingResponse(self._follow_log(path, lines), media_type=_TEXT)
        # Reading up to 10,000 lines is file I/O: keep it off the event loop.
        recent = await asyncio.to_thread(logfile.tail, path, lines) if lines else []
        return Response(_lines(recent), media_type=_TEXT)

    async def _follow_log(self, path: Path, lines: int) -> AsyncIterator[bytes]:
        pacer = _Pacer(logfile.follow(path), self.stopping, None)
        try:
            # The follower must sit at the end of the file before the tail is read: a line
            # written in between is then sent twice, never lost. (The agent writes logs
            # from this loop, so the window is one loop iteration plus the tail read.)
            pacer.start()
            await asyncio.sleep(0)
            if lines:
                yield _lines(await asyncio.to_thread(logfile.tail, path, lines))
            async for line in pacer:
                if line is not None:
                    yield _lines([line])
        finally:
            pacer.close()

    # deployments

    async def submit_deployment(self, request: Request) -> Response:
        body = await _read_body(request, self.limits.max_body_bytes)
        record = await self.control.submit_deployment(_decode(body, DeploymentRequest))
        location = f"/v1/deployments/{quote(record.id, safe='')}"
        return JsonResponse(record, status_code=202, headers={"Location": location})

    async def list_deployments(self, request: Request) -> Response:
        limit = _int_query(
            request, "limit", default=self.limits.list_default, low=1, high=self.limits.list_max
        )
        return JsonResponse(await self.control.list_deployments(limit))

    async def get_deployment(self, request: Request) -> Response:
        return JsonResponse(await self.control.get_deployment(request.path_params["id"]))

    async def rollback_deployment(self, _request: Request) -> Response:
        record = await self.control.rollback_deployment()
        location = f"/v1/deployments/{quote(record.id, safe='')}"
        return JsonResponse(record, status_code=202, headers={"Location": location})

    async def deployment_action(self, request: Request) -> Response:
        deployment_id, action = request.path_params["id"], request.path_params["action"]
        if action not in DEPLOYMENT_ACTIONS:
            raise ApiRequestError(
                f"unknown deployment action {action!r}: expected one of "
                f"{', '.join(DEPLOYMENT_ACTIONS)} (POST /v1/deployments/{deployment_id}:ACTION)",
                code="not_found",
                details={"action": action},
            )
        return JsonResponse(await self.control.cancel_deployment(deployment_id))

    # events

    async def events(self, request: Request) -> Response:
        limits = self.limits
        since: int | None = None
        if "since" in request.query_params:
            since = _int_query(request, "since", default=0, low=0, high=2**63 - 1)
        # Per the SSE spec a reconnecting client sends Last-Event-ID with the original URL;
        # the header is the newer position, so it wins over ?since.
        last_event_id = request.headers.get("last-event-id", "").strip()
        if last_event_id:
            if _DIGITS.fullmatch(last_event_id) is None:
                raise ApiRequestError(
                    f"Last-Event-ID: expected an event id (an integer), got {last_event_id!r}",
                    details={"header": "Last-Event-ID", "value": last_event_id},
                )
            since = int(last_event_id)
        follow = _bool_query(request, "follow", default=True)
        keepalive = float(
            _int_query(
                request,
                "keepalive",
                default=math.ceil(limits.keepalive_seconds),
                low=math.ceil(limits.min_keepalive_seconds),
                high=3600,
            )
        )
        if not follow:
            body = b"".join(encode_event(e) for page in self._backlog(since or 0) for e in page)
            return Response(body, media_type="text/event-stream")
        # Subscribe first, read the backlog second: an event published in between is in
        # both, and the id check in _event_stream drops the second copy.
        stream = self.control.event_stream()
        return StreamingResponse(
            self._event_stream(stream, since, keepalive),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

    def _backlog(self, after: int) -> Iterator[list[Event]]:
        page_size = self.limits.backlog_page_events
        while True:
            page = self.control.events_since(after, page_size)
            if page:
                yield page
                after = page[-1].id
            if len(page) < page_size:
                return

    async def _event_stream(
        self, stream: EventStream, since: int | None, keepalive: float
    ) -> AsyncIterator[bytes]:
        pacer = _Pacer(_iterate(stream), self.stopping, keepalive)
        last = since
        try:
            if since is not None:
                for page in self._backlog(since):
                    yield b"".join(encode_event(e) for e in page)
                    last = page[-1].id
            dropped = stream.dropped
            async for event in pacer:
                if event is None:
                    yield KEEPALIVE
                    continue
                if stream.dropped != dropped and last is not None:
                    # This reader fell behind and its bounded stream lost events: resend
                    # them from the store, which holds every event before streams see it.
                    dropped = stream.dropped
                    for page in self._backlog(last):
                        yield b"".join(encode_event(e) for e in page)
                        last = page[-1].id
                if last is not None and event.id <= last:
                    continue
                yield encode_event(event)
                last = event.id
        finally:
            pacer.close()
            stream.close()


def create_app(
    control: AgentControl,
    *,
    limits: ApiLimits | None = None,
    stopping: asyncio.Event | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The API as an ASGI app. Streams end when ``stopping`` is set.

    ``extra_routes`` are mounted after the API's own, for routes other packages define
    (such as :func:`keystone_edge.api.artifacts.artifact_routes`); they get the same
    404/405 error bodies.
    """
    api = _Api(control, limits or ApiLimits(), stopping or asyncio.Event())
    return Starlette(
        routes=[*api.routes(), *extra_routes],
        exception_handlers={HTTPException: _http_exception},
    )


# -- the server ----------------------------------------------------------------------------


class _GuestServer(uvicorn.Server):
    """uvicorn running inside the agent's loop; see the module docstring."""

    def __init__(
        self,
        config: uvicorn.Config,
        where: Path,
        shutdown: asyncio.Event,
        ready: asyncio.Event | None,
    ) -> None:
        super().__init__(config)
        self._where = where
        self._shutdown = shutdown
        self._ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The agent owns SIGINT/SIGTERM and sets ``shutdown``; uvicorn must not take them.
        yield

    async def main_loop(self) -> None:
        # Upstream ticks every 100 ms to refresh the Date header and poll should_exit; we
        # send no Date header, and the agent tells us when to exit.
        log.info("local API listening on %s", self._where)  # startup() has run
        if self._ready is not None:
            self._ready.set()
        await self._shutdown.wait()
        self.should_exit = True


async def serve(
    control: AgentControl,
    socket_path: Path,
    *,
    mode: int = 0o660,
    group: str | None = None,
    shutdown: asyncio.Event,
    ready: asyncio.Event | None = None,
    limits: ApiLimits | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> None:
    """Serve the API on ``socket_path`` until ``shutdown`` is set, then remove the socket.

    ``ready`` is set once the socket accepts connections (tell systemd READY=1 after it);
    ``extra_routes`` as for :func:`create_app`.
    Raises :class:`AgentConfigError` if the socket cannot be created (see
    :func:`bind_unix_socket`). Open streams end at shutdown; requests still running get
    ``limits.graceful_shutdown_seconds`` before they are cancelled.
    """
    limits = limits or ApiLimits()
    # uvicorn narrates its own start and stop at INFO ("Started server process", "Waiting
    # for connections to close"); the agent logs those moments itself. Its warnings stay.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    sock = bind_unix_socket(socket_path, mode=mode, group=group)
    inode = socket_path.stat().st_ino
    try:
        config = uvicorn.Config(
            create_app(control, limits=limits, stopping=shutdown, extra_routes=extra_routes),
            loop="none",
            http="h11",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            # uvicorn counts the connection asking, so its limit N admits N - 1.
            limit_concurrency=limits.max_connections + 1,
            timeout_graceful_shutdown=math.ceil(limits.graceful_shutdown_seconds),
        )
        await _GuestServer(config, socket_path, shutdown, ready).serve(sockets=[sock])
    finally:
        sock.close()
        # Remove the socket file only if it is still ours, so that the CLI says "not
        # running" instead of "connection refused".
        with contextlib.suppress(OSError):
            if socket_path.stat().st_ino == inode:
                socket_path.unlink()
        log.info("local API stopped")
