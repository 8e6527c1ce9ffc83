"""The operator's agent configuration, ``<root>/etc/agent.toml``.

```toml
[agent]
device_id = "edge-0042"      # default: the host name
log_level = "info"          # debug | info | warning | error

[api]
socket = "/run/keystone/agent.sock"   # default: <root>/run/agent.sock
socket_mode = "0660"
socket_group = "keystone-admin"       # optional group allowed to use the API

[logs]
max_bytes = "10Mi"          # per component log file before rotation
backups = 3                 # rotated files kept per component

[deployments]
default_timeout = "10m"     # for documents that don't set one
keep_versions = 2           # previous versions kept per component for rollback

[backoff]                   # defaults for recipes that don't set lifecycle.run.backoff.*
initial = "100ms"
max = "30s"

[device_config."com.example.hello"]   # device-level config overrides per component
message = "hello from this device"
```

Every key is optional; a missing file means all defaults. Unknown keys are errors (with a
"did you mean"), as in recipes.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

import msgspec

from keystone_edge.units import Duration, Size

__all__ = [
    "AgentConfig",
    "AgentSection",
    "ApiSection",
    "DeploymentsSection",
    "LogsSection",
    "load_agent_config",
]


class _Section(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class AgentSection(_Section):
    device_id: str = msgspec.field(default_factory=socket.gethostname)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ApiSection(_Section):
    socket: str | None = None
    socket_mode: str = "0660"
    socket_group: str | None = None


class LogsSection(_Section):
    max_bytes: Size = msgspec.field(default_factory=lambda: Size.parse("10Mi"))
    backups: int = 3


class DeploymentsSection(_Section):
    default_timeout: Duration = msgspec.field(default_factory=lambda: Duration.parse("10m"))
    keep_versions: int = 2


class AgentConfig(_Section):
    agent: AgentSection = msgspec.field(default_factory=AgentSection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    logs: LogsSection = msgspec.field(default_factory=LogsSection)
    deployments: DeploymentsSection = msgspec.field(default_factory=DeploymentsSection)
    backoff: dict[str, Any] = msgspec.field(default_factory=dict)
    device_config: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


def load_agent_config(path: Path) -> AgentConfig:
    """Read ``agent.toml``; a missing file gives the defaults."""
    from keystone_edge.documents import decode, read_document
    from keystone_edge.errors import AgentConfigError

    if not path.exists():
        return AgentConfig()
    source = read_document(path, AgentConfigError)
    return decode(source.data, AgentConfig, source, AgentConfigError)
