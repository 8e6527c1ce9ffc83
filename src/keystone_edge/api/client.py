"""A small synchronous client of the local API, for ``keystonectl`` and scripts.

Rules:

- One method per route, returning the store's records (msgspec Structs), never raw JSON.
- Errors come back as the :class:`KeyStoneError` subclass the agent raised, with the same
  code and message (``not_found`` is :class:`NotFound`, and so on; see
  :mod:`keystone_edge.api._errors`), so a CLI exit code means the same thing whichever
  side found the problem.
- httpcore exceptions never leave this module: an agent that cannot be reached, or that
  drops the connection, is a :class:`TransportError` naming the socket, with a hint that
  says why (not running, stale socket, no permission).
- Streams (events, log follow) are opened when the method returns, so the subscription
  exists on the agent before the caller does anything else; close them (or use ``with``).
- Import-light: no asyncio server parts, no Starlette; the path defaults live in
  :mod:`keystone_edge.layout`, shared with the agent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, urlencode

import httpcore
import msgspec

from keystone_edge.api._errors import ErrorBody, error_from_body
from keystone_edge.api._sse import SseParser
from keystone_edge.api.control import ComponentAction, ComponentDetail, DeploymentRequest
from keystone_edge.errors import KeyStoneError, TransportError
from keystone_edge.layout import Layout, default_root
from keystone_edge.observe.events import Event
from keystone_edge.store.records import ComponentRecord, DeploymentRecord

__all__ = ["AgentClient", "EventSubscription", "LogStream", "default_socket_path"]

T = TypeVar("T")

SOCKET_ENV: Final = "KEYSTONE_SOCKET"
# The agent sends an SSE keep-alive every 15 s by default; three missed ones mean it is gone.
_STREAM_READ_TIMEOUT: Final = 45.0
_BASE: Final = "http://keystone"


def default_socket_path() -> Path:
    """``$KEYSTONE_SOCKET``, else the default agent's ``<root>/run/agent.sock``."""
    configured = os.environ.get(SOCKET_ENV)
    if configured:
        return Path(configured)
    return Layout(default_root()).socket


_encode = msgspec.json.Encoder(enc_hook=str).encode


class AgentClient:
    """Talks to one agent over its Unix socket. Not thread-safe; cheap to create."""

    def __init__(self, socket_path: str | Path | None = None, *, timeout: float = 30.0) -> None:
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        self.timeout = timeout
        # More than one connection: `deploy apply --wait` keeps an event stream open on one
        # while it polls the deployment on another.
        self._pool = httpcore.ConnectionPool(uds=str(self.socket_path), max_connections=4)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- routes -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz", dict[str, Any])

    def list_components(self) -> list[ComponentRecord]:
        return self._call("GET", "/v1/components", list[ComponentRecord])

    def get_component(self, name: str) -> ComponentDetail:
        return self._call("GET", f"/v1/components/{_segment(name)}", ComponentDetail)

    def component_action(self, name: str, action: ComponentAction) -> ComponentRecord:
        return self._call("POST", f"/v1/components/{_segment(name)}:{action}", ComponentRecord)

    def component_logs(self, name: str, *, tail: int = 100) -> list[str]:
        with self.stream_logs(name, tail=tail, follow=False) as lines:
            return list(lines)

    def stream_logs(self, name: str, *, tail: int = 100, follow: bool = False) -> LogStream:
        """The last ``tail`` lines of the component's log, then new ones if ``follow``."""
        query = urlencode({"tail": tail, "follow": int(follow)})
        path = f"/v1/components/{_segment(name)}/logs?{query}"
        # A followed log may stay quiet for hours: no read timeout then.
        response = self._open("GET", path, read_timeout=None if follow else self.timeout)
        return LogStream(self, response, follow=follow)

    def submit_deployment(self, request: DeploymentRequest) -> DeploymentRecord:
        return self._call("POST", "/v1/deployments", DeploymentRecord, body=_encode(request))

    def list_deployments(self, limit: int = 100) -> list[DeploymentRecord]:
        return self._call("GET", f"/v1/deployments?limit={limit}", list[DeploymentRecord])

    def get_deployment(self, deployment_id: str) -> DeploymentRecord:
        return self._call("GET", f"/v1/deployments/{_segment(deployment_id)}", DeploymentRecord)

    def rollback_deployment(self) -> DeploymentRecord:
        return self._call("POST", "/v1/deployments:rollback", DeploymentRecord)

    def cancel_deployment(self, deployment_id: str) -> DeploymentRecord:
        path = f"/v1/deployments/{_segment(deployment_id)}:cancel"
        return self._call("POST", path, DeploymentRecord)

    def events(self, since: int = 0) -> list[Event]:
        """Every retained event after ``since`` (no live events)."""
        with self.stream_events(since, follow=False) as subscription:
            return list(subscription)

    def stream_events(
        self,
        since: int | None = None,
        *,
        follow: bool = True,
        keepalive: int | None = None,
    ) -> EventSubscription:
        """Events after ``since`` (none from the past when None), then live ones.

        ``keepalive`` asks the agent for a keep-alive every that many seconds without an
        event; :meth:`EventSubscription.items` yields ``None`` for each, which lets a
        caller do periodic work (such as polling) without a thread.
        """
        params: dict[str, int] = {"follow": int(follow)}
        if since is not None:
            params["since"] = since
        if keepalive is not None:
            params["keepalive"] = keepalive
        read_timeout = max(_STREAM_READ_TIMEOUT, 3.0 * (keepalive or 0)) if follow else self.timeout
        response = self._open("GET", f"/v1/events?{urlencode(params)}", read_timeout=read_timeout)
        return EventSubscription(self, response, follow=follow)

    # -- plumbing -----------------------------------------------------------------------

    def call(self, method: str, path: str, type: type[T], *, body: bytes | None = None) -> T:
        """One JSON request, its answer decoded into ``type``; for routes added elsewhere.

        Errors as for every method here: the agent's KeyStoneError, or TransportError.
        """
        return self._call(method, path, type, body=body)

    def _call(self, method: str, path: str, type: type[T], *, body: bytes | None = None) -> T:
        response = self._open(method, path, body=body, read_timeout=self.timeout)
        try:
            content = self._read(response)
        finally:
            response.close()
        try:
            return msgspec.json.decode(content, type=type)
        except msgspec.DecodeError as exc:
            raise TransportError(
                f"the agent at {self.socket_path} sent a response this client does not "
                f"understand ({method} {path}): {exc}",
                hint="are keystonectl and keystone-agent the same version?",
            ) from exc

    def _open(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        read_timeout: float | None,
    ) -> httpcore.Response:
        """Send a request and return the response once its headers arrived (2xx only)."""
        # httpcore.Request adds no headers of its own (pool.request() would).
        headers = [(b"Host", b"keystone"), (b"Accept", b"application/json")]
        if body is not None:
            headers += [
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(body)).encode()),
            ]
        request = httpcore.Request(
            method,
            _BASE + path,
            headers=headers,
            content=body,
            extensions={
                "timeout": {
                    "connect": self.timeout,
                    "read": read_timeout,
                    "write": self.timeout,
                    "pool": self.timeout,
                }
            },
        )
        try:
            response = self._pool.handle_request(request)
        except httpcore.ConnectError as exc:
            raise self._unreachable(exc) from exc
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise self._lost(exc) from exc
        if response.status < 300:
            return response
        try:
            content = self._read(response)
        finally:
            response.close()
        raise self._api_error(response.status, content, method, path)

    def _read(self, response: httpcore.Response) -> bytes:
        try:
            return response.read()
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise self._lost(exc) from exc

    def _api_error(self, status: int, content: bytes, method: str, path: str) -> KeyStoneError:
        try:
            body = msgspec.json.decode(content, type=ErrorBody)
        except msgspec.DecodeError:
            # Not our error shape: uvicorn's own 503 when all connections are busy, say.
            text = content.decode(errors="replace").strip()[:200]
            return TransportError(
                f"the agent at {self.socket_path} answered {method} {path} with HTTP {status}"
                + (f": {text}" if text else "")
            )
        return error_from_body(body.error)

    def _unreachable(self, exc: Exception) -> TransportError:
        path = self.socket_path
        if not path.exists():
            hint = (
                "is keystone-agent running? Start it (systemctl start keystone-agent), or "
                f"point --socket or ${SOCKET_ENV} at the socket of the agent you mean"
            )
        elif not os.access(path, os.R_OK | os.W_OK):
            hint = (
                "the API socket is open only to root and the agent's admin group "
                "(api.socket_group); run as root or join that group"
            )
        else:
            hint = "the socket is there but nothing answers: is keystone-agent running?"
        return TransportError(f"cannot reach the agent at {path}: {exc}", hint=hint)

    def _lost(self, exc: Exception) -> TransportError:
        return TransportError(
            f"lost the connection to the agent at {self.socket_path}: {type(exc).__name__}: {exc}",
            hint="the agent may have stopped or restarted; check its status and log",
        )


def _segment(value: str) -> str:
    return quote(value, safe="")


class _Stream:
    """An open streaming response. Iterating it again (after a ``break``) resumes it."""

    def __init__(self, client: AgentClient, response: httpcore.Response, *, follow: bool):
        self._client = client
        self._response = response
        self._follow = follow

    def _ended(self, what: str, resume: str) -> TransportError:
        # The agent ends a followed stream only when it shuts down.
        return TransportError(
            f"the agent at {self._client.socket_path} closed the {what}",
            hint=f"the agent is stopping or restarting; {resume}",
        )

    def _chunks(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_stream()
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise self._client._lost(exc) from exc

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LogStream(_Stream):
    """Lines of a component log (without their newline), as the agent sends them."""

    def __init__(self, client: AgentClient, response: httpcore.Response, *, follow: bool):
        super().__init__(client, response, follow=follow)
        self._lines = self._read()

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def _read(self) -> Iterator[str]:
        pending = b""
        for chunk in self._chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")
        if self._follow:
            raise self._ended("log stream", "run the command again once it is back")


class EventSubscription(_Stream):
    """An open ``GET /v1/events``; iterate it for :class:`Event` objects."""

    def __init__(self, client: AgentClient, response: httpcore.Response, *, follow: bool):
        super().__init__(client, response, follow=follow)
        self._parser = SseParser()
        self._items = self._read()
        self.last_id: int | None = None
        """The id of the last event handed out: pass it as ``since`` to resume."""

    def __iter__(self) -> Iterator[Event]:
        return (item for item in self._items if item is not None)

    def items(self) -> Iterator[Event | None]:
        """Events, and ``None`` for each keep-alive the agent sends while idle."""
        return self._items

    def _read(self) -> Iterator[Event | None]:
        for chunk in self._chunks():
            for message in self._parser.feed(chunk):
                if message.data is None:
                    yield None
                    continue
                try:
                    event = msgspec.json.decode(message.data, type=Event)
                except msgspec.DecodeError as exc:
                    raise TransportError(
                        f"the agent at {self._client.socket_path} sent an event this client "
                        f"does not understand: {exc}",
                        hint="are keystonectl and keystone-agent the same version?",
                    ) from exc
                self.last_id = event.id
                yield event
        if self._follow:
            since = str(self.last_id) if self.last_id is not None else "ID"
            raise self._ended("event stream", f"resume with --since {since}")
