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

[artifacts]
quota = "2G"                # cache size beyond which least-recently-used artifacts go
max_unpack_bytes = "4Gi"    # largest unpacked archive
connect_timeout = "10s"
read_timeout = "30s"        # without a byte from the server
retries = 5                 # failed attempts in a row without progress, then give up
backoff_initial = "1s"
backoff_max = "1m"
max_redirects = 5
max_download_bytes = "8Gi"  # when a recipe gives no size
partial_max_age = "7d"      # unfinished downloads kept for resuming this long
ca_bundle = "/etc/keystone/artifacts-ca.pem"  # default: the system trust store

[[artifacts.sources]]       # credentials for URLs under a prefix (never logged)
prefix = "https://artifacts.example.com/"
bearer_token_file = "/etc/keystone/artifacts.token"   # or bearer_token = "..."
headers = { "X-Tenant" = "acme" }

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
from typing import Annotated, Any, Literal

import msgspec

from keystone_edge.units import Duration, Size

__all__ = [
    "AgentConfig",
    "AgentSection",
    "ApiSection",
    "ArtifactSource",
    "ArtifactsSection",
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


NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class ArtifactSource(_Section):
    """Extra request headers for artifact URLs under ``prefix``; values are secrets."""

    prefix: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    bearer_token: str | None = None
    bearer_token_file: str | None = None

    def __repr__(self) -> str:
        # The config object may end up in a log line; the header values and the token
        # must not.
        secret = ", bearer_token=<redacted>" if self.bearer_token is not None else ""
        return f"ArtifactSource(prefix={self.prefix!r}, headers={sorted(self.headers)}{secret})"


class ArtifactsSection(_Section):
    """The artifact cache and its HTTP fetcher (``keystone_edge.artifacts``).

    Versions kept for rollback come from ``deployments.keep_versions``.
    """

    quota: Size = msgspec.field(default_factory=lambda: Size.parse("2G"))
    max_unpack_bytes: Size = msgspec.field(default_factory=lambda: Size.parse("4Gi"))
    connect_timeout: Duration = msgspec.field(default_factory=lambda: Duration.parse("10s"))
    read_timeout: Duration = msgspec.field(default_factory=lambda: Duration.parse("30s"))
    retries: NonNegInt = 5
    backoff_initial: Duration = msgspec.field(default_factory=lambda: Duration.parse("1s"))
    backoff_max: Duration = msgspec.field(default_factory=lambda: Duration.parse("1m"))
    max_redirects: NonNegInt = 5
    max_download_bytes: Size = msgspec.field(default_factory=lambda: Size.parse("8Gi"))
    partial_max_age: Duration = msgspec.field(default_factory=lambda: Duration.parse("7d"))
    ca_bundle: str | None = None
    sources: list[ArtifactSource] = msgspec.field(default_factory=list)


class AgentConfig(_Section):
    agent: AgentSection = msgspec.field(default_factory=AgentSection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    logs: LogsSection = msgspec.field(default_factory=LogsSection)
    deployments: DeploymentsSection = msgspec.field(default_factory=DeploymentsSection)
    artifacts: ArtifactsSection = msgspec.field(default_factory=ArtifactsSection)
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
