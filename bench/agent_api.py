"""A minimal HTTP/1.1 client for the agent's local API over its Unix socket (stdlib only).

The bench talks to the agent the way any program would, through the documented routes
(``GET /healthz``, ``POST /v1/deployments``, ``GET /v1/deployments/{id}``,
``GET /v1/components``), and imports nothing from ``keystone_edge``: the timed path must
not pay for loading the agent's own client, and the bench keeps working while the
package's internals move.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

__all__ = ["AgentApi", "ApiError"]


class ApiError(RuntimeError):
    """The agent answered with an error status (or could not be reached)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("keystone", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AgentApi:
    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except OSError as exc:
            raise ApiError(
                f"{method} {path}: agent unreachable at {self.socket_path}: {exc}"
            ) from exc
        finally:
            conn.close()
        if response.status >= 400:
            raise ApiError(
                f"{method} {path}: HTTP {response.status}: {data.decode(errors='replace')[:2000]}"
            )
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)
