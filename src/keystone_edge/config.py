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

[logging]                   # the agent's own log (docs/observability.md)
format = "auto"             # auto (text on a TTY, JSON lines otherwise) | json | text
sinks = ["file", "stderr"]  # file | stderr | syslog | journald | loki
max_total_bytes = "100Mi"   # all of <root>/logs: the agent's and every component's logs
forward_components = false  # also send component output through the sinks (not "file")
levels = { "keystone_edge.api" = "debug" }   # per-logger levels

[logging.file]
path = "/var/log/keystone/agent.log"   # default: <root>/logs/keystone-agent.log
max_bytes = "10Mi"
backups = 3

[logging.syslog]            # RFC 5424 datagrams
address = "/dev/log"
facility = "daemon"

[logging.journald]          # journald's native protocol (structured fields)
address = "/run/systemd/journal/socket"

[logging.loki]
url = "http://loki.example.com:3100/loki/api/v1/push"
labels = { site = "plant-7" }
headers = { "X-Scope-OrgID" = "acme" }
batch_size = 500            # lines per push
batch_wait = "1s"           # a line waits at most this long for others to join its push
queue_size = 10000          # lines held while Loki is slow or down; then the oldest drop
timeout = "10s"

[metrics]
enabled = true              # GET /metrics on the API socket
tcp = false                 # also serve GET /metrics over TCP
address = "127.0.0.1"
port = 9273

[tracing]                   # needs the `otel` extra (OpenTelemetry SDK + OTLP/HTTP exporter)
endpoint = "http://collector.example.com:4318/v1/traces"   # unset: no tracing
headers = {}
timeout = "10s"

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

[isolation]                 # least privilege for components (docs/isolation.md)
mode = "best_effort"        # best_effort: skip controls the host lacks, with a warning event
                            # strict: such a component fails to start, with the reason
isolate_all = false         # true: default seccomp + no_new_privs for every component,
                            # even one whose recipe asks for nothing (~20 ms per start)
cgroup_parent = "keystone"  # components' cgroups: <agent's cgroup>/<parent>/<component>;
                            # default: "keystone" for the default root, else
                            # "keystone/<8 hex of the root's sha256>" (agents sharing a cgroup
                            # must not sweep each other's components)
create_user = false         # create a missing run_as user (system user, no login)

[isolation.namespaces]      # private namespaces: pid, net (no network), mount (read-only /)
"com.example.hello" = ["pid", "net", "mount"]
"*" = ["pid"]               # every component without an entry of its own

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

from keystone_edge.recipe.model import Backoff
from keystone_edge.units import Duration, Size

__all__ = [
    "AgentConfig",
    "AgentSection",
    "ApiSection",
    "ArtifactSource",
    "ArtifactsSection",
    "DeploymentsSection",
    "IsolationSection",
    "LogsSection",
    "LoggingSection",
    "MetricsSection",
    "TracingSection",
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


LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogSink = Literal["file", "stderr", "syslog", "journald", "loki"]
SyslogFacility = Literal[
    "kern", "user", "daemon", "auth", "syslog", "local0", "local1", "local2", "local3",
    "local4", "local5", "local6", "local7",
]  # fmt: skip


class LogFileSink(_Section):
    path: str | None = None  # default: <root>/logs/keystone-agent.log
    max_bytes: Size = msgspec.field(default_factory=lambda: Size.parse("10Mi"))
    backups: Annotated[int, msgspec.Meta(ge=0)] = 3


class SyslogSink(_Section):
    address: str = "/dev/log"
    facility: SyslogFacility = "daemon"
    app_name: str = "keystone-agent"


class JournaldSink(_Section):
    address: str = "/run/systemd/journal/socket"


class LokiSink(_Section):
    url: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 500
    batch_wait: Duration = msgspec.field(default_factory=lambda: Duration.parse("1s"))
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    timeout: Duration = msgspec.field(default_factory=lambda: Duration.parse("10s"))

    def __repr__(self) -> str:
        # Header values may be credentials.
        return f"LokiSink(url={self.url!r}, headers={sorted(self.headers)})"


class LoggingSection(_Section):
    """The agent's own log and where it goes (``keystone_edge.observe.logs``).

    The root level is ``[agent] log_level`` (or ``--log-level``); ``levels`` sets it per
    logger. ``max_total_bytes`` caps everything under ``<root>/logs``.
    """

    format: Literal["auto", "json", "text"] = "auto"
    sinks: list[LogSink] = msgspec.field(default_factory=lambda: ["file", "stderr"])
    levels: dict[str, LogLevel] = msgspec.field(default_factory=dict)
    max_total_bytes: Size = msgspec.field(default_factory=lambda: Size.parse("100Mi"))
    forward_components: bool = False
    file: LogFileSink = msgspec.field(default_factory=LogFileSink)
    syslog: SyslogSink = msgspec.field(default_factory=SyslogSink)
    journald: JournaldSink = msgspec.field(default_factory=JournaldSink)
    loki: LokiSink = msgspec.field(default_factory=LokiSink)


class MetricsSection(_Section):
    """Prometheus metrics (``keystone_edge.observe.metrics``)."""

    enabled: bool = True  # GET /metrics on the API socket; false: prometheus-client unloaded
    tcp: bool = False  # also on a TCP listener
    address: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9273


class TracingSection(_Section):
    """OpenTelemetry traces of deployments over OTLP/HTTP (the ``otel`` extra)."""

    endpoint: str | None = None  # e.g. http://collector:4318/v1/traces; unset: no tracing
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: Duration = msgspec.field(default_factory=lambda: Duration.parse("10s"))
    service_name: str = "keystone-agent"

    def __repr__(self) -> str:
        return f"TracingSection(endpoint={self.endpoint!r}, headers={sorted(self.headers)})"


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


NamespaceName = Literal["pid", "net", "mount"]
# Path segments that cannot climb out of the agent's cgroup ("." and ".." are refused).
CgroupParent = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^/?[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]*(/[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]*)*$"
    ),
]


class IsolationSection(_Section):
    """How recipes' security and resources sections are enforced (``keystone_edge.isolation``)."""

    mode: Literal["best_effort", "strict"] = "best_effort"
    # false: a recipe that sets nothing in security, resources or permissions (and gets
    # no namespaces here) runs as a plain exec, no launcher: restarts in ~2 ms instead of
    # ~25 ms. A recipe that sets anything gets the least-privilege defaults as well (the
    # default seccomp profile, no_new_privileges). true: every component gets them.
    isolate_all: bool = False
    cgroup_parent: CgroupParent | None = None  # None: see parent_for()
    create_user: bool = False
    namespaces: dict[str, list[NamespaceName]] = msgspec.field(default_factory=dict)

    def parent_for(self, root: Path, default_root: Path) -> str:
        """The cgroup parent of an agent whose root is ``root``."""
        if self.cgroup_parent is not None:
            return self.cgroup_parent
        if root == default_root:
            return "keystone"
        import hashlib

        return "keystone/" + hashlib.sha256(str(root).encode()).hexdigest()[:8]

    def namespaces_for(self, component: str) -> list[NamespaceName]:
        return self.namespaces.get(component, self.namespaces.get("*", []))


class AgentConfig(_Section):
    agent: AgentSection = msgspec.field(default_factory=AgentSection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    logs: LogsSection = msgspec.field(default_factory=LogsSection)
    logging: LoggingSection = msgspec.field(default_factory=LoggingSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    tracing: TracingSection = msgspec.field(default_factory=TracingSection)
    deployments: DeploymentsSection = msgspec.field(default_factory=DeploymentsSection)
    artifacts: ArtifactsSection = msgspec.field(default_factory=ArtifactsSection)
    isolation: IsolationSection = msgspec.field(default_factory=IsolationSection)
    backoff: dict[str, Any] = msgspec.field(default_factory=dict)
    device_config: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


def load_agent_config(path: Path) -> AgentConfig:
    """Read ``agent.toml``; a missing file gives the defaults."""
    from keystone_edge.documents import decode, read_document
    from keystone_edge.errors import AgentConfigError

    if not path.exists():
        return AgentConfig()
    source = read_document(path, AgentConfigError)
    config = decode(source.data, AgentConfig, source, AgentConfigError)
    if config.backoff:
        # [backoff] is kept as given (only the keys set override recipes' defaults), but
        # checked by the recipe model's own rules: keys, types, durations.
        decode({"backoff": config.backoff}, _BackoffTable, source, AgentConfigError)
    return config


class _BackoffTable(msgspec.Struct, forbid_unknown_fields=True):
    backoff: Backoff
