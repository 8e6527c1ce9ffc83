"""The typed model of a component recipe.

This is the canonical (snake_case, TOML) shape of a recipe after imports are merged and
the seed's YAML ``apiVersion/kind/metadata/spec`` form is mapped onto it. Decoding is
strict: unknown keys and wrong types are errors (``forbid_unknown_fields``), durations and
sizes are parsed by :mod:`keystone_edge.units`. Absence of a key means "not set"; there is
no null.

Fields that accept interpolation (``${config.x}``, ``{{ config.x }}``, ``${component.name}``,
...) are listed in :data:`INTERPOLATED_FIELDS`; everywhere else a ``${`` is literal text.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from keystone_edge.units import Duration, Size

__all__ = [
    "INTERPOLATED_FIELDS",
    "Artifact",
    "Backoff",
    "ConfigSection",
    "Container",
    "Dependency",
    "Exec",
    "FilePermission",
    "Health",
    "Install",
    "Lifecycle",
    "Metadata",
    "Permissions",
    "Recipe",
    "Resources",
    "RestartPolicy",
    "Run",
    "Security",
    "Shutdown",
]

# Lower-case, dotted names: com.company.component (design.md).
NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*$"
# SemVer 2.0.0 (semver.org's recommended expression, without the named groups).
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
SHA256_PATTERN = r"^[0-9a-f]{64}$"

# A pattern's Meta description is what error messages (and the recipe JSON Schema) say is
# expected, instead of the regular expression.
ComponentName = Annotated[
    str,
    msgspec.Meta(
        pattern=NAME_PATTERN,
        max_length=255,
        description="a lower-case dotted name such as 'com.example.hello'",
    ),
]
Version = Annotated[
    str,
    msgspec.Meta(
        pattern=SEMVER_PATTERN, description="a SemVer version such as '1.0.0' or '2.1.0-rc.1'"
    ),
]
RestartPolicy = Literal["never", "on-failure", "always"]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base for every recipe table: strict, defaults left out when encoding."""


def _duration(text: str) -> Any:
    return msgspec.field(default_factory=lambda: Duration.parse(text))


class Metadata(_Section):
    name: ComponentName
    version: Version
    description: str = ""
    publisher: str = ""
    type: Literal["generic", "container"] = "generic"


class ConfigSection(_Section):
    """``[config]``: defaults and an optional JSON Schema.

    ``schema`` is either an inline JSON Schema or ``{ref = "file://schemas/x.json"}``
    (a path relative to the recipe); the loader replaces a reference with the schema it
    points at, so after loading ``schema`` is always inline (or absent).
    """

    defaults: dict[str, Any] = msgspec.field(default_factory=dict)
    schema: dict[str, Any] | None = None


class Artifact(_Section):
    uri: str
    sha256: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=SHA256_PATTERN,
                description="a sha256 digest: 64 lower-case hexadecimal digits",
            ),
        ]
        | None
    ) = None
    size: NonNegInt | None = None
    unpack: bool = False
    # Detached ed25519 signature (base64) over the artifact's sha256 digest.
    signature: str | None = None
    # File name inside the component's artifacts directory; defaults to the URI's last part.
    name: str | None = None


class Install(_Section):
    script: str
    require_privilege: bool = False
    timeout: Duration = _duration("5m")


class Exec(_Section):
    command: str
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    working_dir: str | None = None


class Backoff(_Section):
    """Exponential backoff between restarts (with jitter), bounded per window."""

    initial: Duration = _duration("100ms")
    factor: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0
    max: Duration = _duration("30s")
    jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.1
    # At most ``max_retries`` restarts within ``window``; one more marks the component FAILED.
    max_retries: NonNegInt = 10
    window: Duration = _duration("10m")
    # After this long running without a crash, the backoff resets: the next restart is immediate.
    reset_after: Duration = _duration("1m")


class Health(_Section):
    check: str  # http://host:port/path | tcp://host:port | cmd:shell command
    interval: Duration = _duration("10s")
    timeout: Duration = _duration("3s")
    failure_threshold: PosInt = 3
    start_period: Duration = _duration("0s")


class Run(_Section):
    exec: Exec | None = None
    script: str | None = None
    restart_policy: RestartPolicy = "on-failure"
    backoff: Backoff = msgspec.field(default_factory=Backoff)
    health: Health | None = None
    # Without a health probe a component is ready once it stayed up this long.
    start_period: Duration = _duration("0s")
    # Grace between SIGTERM and SIGKILL when stopping.
    stop_timeout: Duration = _duration("10s")


class Shutdown(_Section):
    script: str
    timeout: Duration = _duration("15s")


class Lifecycle(_Section):
    install: Install | None = None
    run: Run | None = None
    shutdown: Shutdown | None = None


class Security(_Section):
    run_as: str | None = None  # "user" or "user:group"
    capabilities: list[str] = msgspec.field(default_factory=list)
    # default | unconfined | path:/abs/profile.json; unset: "default" whenever the
    # component runs isolated at all (see [isolation] isolate_all, docs/isolation.md)
    seccomp_profile: str | None = None
    apparmor_profile: str | None = None
    # Unset: on whenever the launcher applies any other control.
    no_new_privileges: bool | None = None


class Resources(_Section):
    cpu_quota: Annotated[float, msgspec.Meta(gt=0)] | None = None  # % of one CPU
    memory_limit: Size | None = None
    pids_limit: PosInt | None = None
    open_files: PosInt | None = None
    nice: Annotated[int, msgspec.Meta(ge=-20, le=19)] | None = None
    io_weight: Annotated[int, msgspec.Meta(ge=1, le=10000)] | None = None


class Dependency(_Section):
    name: ComponentName
    version: str = "*"  # npm-style range: ">=1.0.0 <2.0.0", "^1.2", "*"
    type: Literal["hard", "soft"] = "hard"


class FilePermission(_Section):
    path: str
    mode: (
        Annotated[
            str,
            msgspec.Meta(pattern=r"^0?[0-7]{3,4}$", description="an octal mode such as '0750'"),
        ]
        | None
    ) = None
    owner: str | None = None


class Permissions(_Section):
    files: list[FilePermission] = msgspec.field(default_factory=list)
    devices: list[str] = msgspec.field(default_factory=list)


class Container(_Section):
    image: str
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    command: list[str] = msgspec.field(default_factory=list)
    ports: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    volumes: list[str] = msgspec.field(default_factory=list)
    devices: list[str] = msgspec.field(default_factory=list)


class Recipe(_Section):
    metadata: Metadata
    config: ConfigSection = msgspec.field(default_factory=ConfigSection)
    artifacts: list[Artifact] = msgspec.field(default_factory=list)
    lifecycle: Lifecycle = msgspec.field(default_factory=Lifecycle)
    security: Security = msgspec.field(default_factory=Security)
    resources: Resources = msgspec.field(default_factory=Resources)
    dependencies: list[Dependency] = msgspec.field(default_factory=list)
    permissions: Permissions = msgspec.field(default_factory=Permissions)
    container: Container | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version


# Key paths (``*`` = any list index or map key) whose string values are interpolated.
INTERPOLATED_FIELDS: tuple[str, ...] = (
    "lifecycle.install.script",
    "lifecycle.run.exec.command",
    "lifecycle.run.exec.args.*",
    "lifecycle.run.exec.env.*",
    "lifecycle.run.exec.working_dir",
    "lifecycle.run.script",
    "lifecycle.run.health.check",
    "lifecycle.shutdown.script",
    "container.command.*",
    "container.env.*",
)
