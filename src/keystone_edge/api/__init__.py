"""The local HTTP API (on a Unix socket) and its client.

- :mod:`.control`: :class:`AgentControl`, the one interface the server needs from the agent.
- :mod:`.server`: :func:`create_app` and :func:`serve` (Starlette on uvicorn).
- :mod:`.client`: :class:`AgentClient`, the synchronous client ``keystonectl`` uses.

The server and the client are imported on first use, not with this package: the CLI must
not pay for Starlette and uvicorn, and the agent must not pay for httpcore.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keystone_edge.api.control import (
    AgentControl,
    ComponentAction,
    ComponentDetail,
    DeploymentRequest,
)

if TYPE_CHECKING:
    from keystone_edge.api.client import (
        AgentClient,
        EventSubscription,
        LogStream,
        default_socket_path,
    )
    from keystone_edge.api.server import ApiLimits, bind_unix_socket, create_app, serve

__all__ = [
    "AgentClient",
    "AgentControl",
    "ApiLimits",
    "ComponentAction",
    "ComponentDetail",
    "DeploymentRequest",
    "EventSubscription",
    "LogStream",
    "bind_unix_socket",
    "create_app",
    "default_socket_path",
    "serve",
]

_LAZY = {
    "AgentClient": "client",
    "EventSubscription": "client",
    "LogStream": "client",
    "default_socket_path": "client",
    "ApiLimits": "server",
    "bind_unix_socket": "server",
    "create_app": "server",
    "serve": "server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
