"""The rules a recipe must follow beyond its types, one function per rule.

Each rule reads a converted recipe and returns problems. When parts of a recipe are bad,
the loader leaves them out (back to their defaults) and checks the rest, so one
``recipe validate`` run shows every mistake; :data:`RULES` lists, for each rule, the key
paths (``*`` for any index) whose absence would make it report something false, and a
rule is skipped when one of them, or something inside one, was left out.

- **run**: a generic component with a ``lifecycle.run`` section has exactly one of
  ``exec`` and ``script``; a container component runs its image, so it has neither
  (``restart_policy``, ``health`` and ``backoff`` still apply to it). ``exec.command``
  is not empty.
- **container**: ``type = "container"`` requires ``[container]``, and ``[container]`` is
  only for that type; ``ports`` read ``[ip:][host:]container[/tcp|udp|sctp]``, ``volumes``
  read ``source:/absolute/target[:options]``.
- **health**: ``check`` is ``http://host[:port]/...``, ``https://...``,
  ``tcp://host:port`` or ``cmd:<command>``. Before rendering, a check with references is
  only checked for its scheme; after rendering it is checked in full.
- **dependencies**: ``version`` is an npm-style range that can match something
  (``semantic_version.NpmSpec``); no component depends on itself or names the same
  dependency twice.
- **security**: ``run_as`` is ``user`` or ``user:group`` (names or numeric ids);
  ``capabilities`` are upper-case Linux capability names (``CAP_NET_BIND_SERVICE``);
  ``seccomp_profile`` is ``default``, ``unconfined`` or ``path:/absolute/profile.json``.
- **artifacts**: an ``http(s)`` artifact has a ``sha256``; each artifact's file name (its
  ``name``, else the URI's last part) is a plain file name, unique in the recipe.
- **permissions**: file paths and devices are absolute (devices under ``/dev``); ``owner``
  reads like ``run_as``.
- **config**: the schema compiles and the defaults satisfy it (:mod:`._config`).
- **references**: every ``${...}`` in an interpolated field names something that will
  exist (:mod:`._interpolate`).
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from keystone_edge.documents import KeyPath, Problem, suggest, to_builtins
from keystone_edge.recipe._config import schema_problems
from keystone_edge.recipe._interpolate import reference_problems
from keystone_edge.recipe._references import REMOTE_SCHEMES, split_uri
from keystone_edge.recipe.model import Recipe

__all__ = ["RULES", "check_recipe", "health_check_problem"]

Rule = Callable[[Recipe], Iterable[Problem]]

# From linux/capability.h (CAP_LAST_CAP = CAP_CHECKPOINT_RESTORE, Linux 5.9).
CAPABILITIES = frozenset(
    f"CAP_{name}"
    for name in (
        *("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID"),
        *("SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST"),
        *("NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO"),
        *("SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE"),
        *("SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE"),
        *("AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM"),
        *("BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"),
    )
)
_ACCOUNT = r"(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10})"
_RUN_AS = re.compile(rf"{_ACCOUNT}(?::{_ACCOUNT})?")
_TCP_CHECK = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")
_PORT_MAPPING = re.compile(
    r"(?:(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:]+\]):)?"
    r"(?:([0-9]{1,5}):)?([0-9]{1,5})(?:/(?:tcp|udp|sctp))?"
)
_HEALTH_FORMS = "http://host[:port]/path, https://..., tcp://host:port or cmd:<command>"


def check_recipe(recipe: Recipe, *, pruned: Collection[KeyPath] = ()) -> list[Problem]:
    """Every rule's problems; rules that need a ``pruned`` (left out) path are skipped."""
    problems: list[Problem] = []
    for needs, rule in RULES:
        if not any(_overlap(need, gone) for need in needs for gone in pruned):
            problems.extend(rule(recipe))
    return problems


def _overlap(need: KeyPath, gone: KeyPath) -> bool:
    """Whether one path contains the other; ``*`` in ``need`` matches any key or index."""
    return all(n in ("*", g) for n, g in zip(need, gone, strict=False))


def health_check_problem(check: str, *, rendered: bool) -> str | None:
    """What is wrong with a health check string, or None."""
    templated = not rendered and ("${" in check or "{{" in check)
    if check.startswith("cmd:"):
        return None if check[4:].strip() else "invalid health check 'cmd:': no command"
    scheme = check.partition("://")[0] if "://" in check else None
    if scheme in ("http", "https"):
        if templated:
            return None
        parts = urllib.parse.urlsplit(check)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port in (-1, 0):
            return f"invalid health check {check!r}: expected {scheme}://host[:port]/path"
        return None
    if scheme == "tcp":
        if templated:
            return None
        match = _TCP_CHECK.fullmatch(check)
        if match is None or not 1 <= int(match.group(2)) <= 65535:
            return f"invalid health check {check!r}: expected tcp://host:port (port 1-65535)"
        return None
    return f"invalid health check {check!r}: expected {_HEALTH_FORMS}"


def _run(recipe: Recipe) -> Iterator[Problem]:
    run = recipe.lifecycle.run
    if run is None:
        return
    where = ("lifecycle", "run")
    if recipe.metadata.type == "container":
        for key in ("exec", "script"):
            if getattr(run, key) is not None:
                yield Problem(
                    (*where, key),
                    f"a container component runs its image: use container.command, not "
                    f"lifecycle.run.{key}",
                )
        return
    if run.exec is not None and run.script is not None:
        yield Problem(where, "set either `exec` or `script`, not both")
    elif run.exec is None and run.script is None:
        yield Problem(where, "missing `exec` (a command to run) or `script` (a shell script)")
    if run.exec is not None and not run.exec.command.strip():
        yield Problem((*where, "exec", "command"), "empty command")


def _container(recipe: Recipe) -> Iterator[Problem]:
    container = recipe.container
    if recipe.metadata.type == "container" and container is None:
        yield Problem(
            ("metadata", "type"), "a container component needs a [container] section (image)"
        )
    if container is None:
        return
    if recipe.metadata.type != "container":
        yield Problem(("container",), 'only used when metadata.type = "container"')
    if not container.image.strip():
        yield Problem(("container", "image"), "empty image reference")
    for index, port in enumerate(container.ports):
        match = _PORT_MAPPING.fullmatch(port)
        numbers = [int(n) for n in match.groups() if n] if match else []
        if match is None or not all(1 <= n <= 65535 for n in numbers):
            yield Problem(
                ("container", "ports", index),
                f"invalid port mapping {port!r}: expected [ip:][host:]container[/tcp|udp|sctp]",
            )
    for index, volume in enumerate(container.volumes):
        parts = volume.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            yield Problem(
                ("container", "volumes", index),
                f"invalid volume {volume!r}: expected source:/absolute/target[:options]",
            )


def _health(recipe: Recipe) -> Iterator[Problem]:
    run = recipe.lifecycle.run
    if run is not None and run.health is not None:
        message = health_check_problem(run.health.check, rendered=False)
        if message:
            yield Problem(("lifecycle", "run", "health", "check"), message)


def _self_dependency(recipe: Recipe) -> Iterator[Problem]:
    for index, dependency in enumerate(recipe.dependencies):
        if dependency.name == recipe.name:
            yield Problem(("dependencies", index, "name"), f"{recipe.name} cannot depend on itself")


def _dependencies(recipe: Recipe) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for index, dependency in enumerate(recipe.dependencies):
        where = ("dependencies", index)
        if dependency.name in seen:
            yield Problem(
                (*where, "name"),
                f"{dependency.name} is already a dependency "
                f"(dependencies[{seen[dependency.name]}])",
            )
        seen.setdefault(dependency.name, index)
        message = range_problem(dependency.version)
        if message:
            yield Problem((*where, "version"), message)


def range_problem(text: str) -> str | None:
    """What is wrong with an npm-style version range, or None."""
    import semantic_version  # ~5 MB resident (it imports importlib.metadata): load lazily

    if not text.strip():
        return "empty version range: use '*' for any version"
    try:
        spec = semantic_version.NpmSpec(text)
    except ValueError:
        return (
            f"invalid version range {text!r}: expected an npm-style range such as "
            "'>=1.0.0 <2.0.0', '^1.2', '~1.2.3', '1.x' or '*'"
        )
    if not _satisfiable(spec.clause):
        return f"version range {text!r} matches no version"
    return None


def _satisfiable(clause: Any) -> bool:
    """Whether an NpmSpec clause can match some version (conservative: True if unsure)."""
    from semantic_version import base

    if isinstance(clause, base.AnyOf):
        return any(_satisfiable(c) for c in clause.clauses)
    if isinstance(clause, base.AllOf):
        low: tuple[Any, bool] | None = None  # (version, inclusive)
        high: tuple[Any, bool] | None = None
        for item in clause.clauses:
            if not isinstance(item, base.Range):
                return True
            op, version = item.operator, item.target
            if op in (">=", ">", "=="):
                bound = (version, op != ">")
                if low is None or version > low[0] or (version == low[0] and not bound[1]):
                    low = bound
            if op in ("<=", "<", "=="):
                bound = (version, op != "<")
                if high is None or version < high[0] or (version == high[0] and not bound[1]):
                    high = bound
        if low is not None and high is not None:
            if low[0] > high[0]:
                return False
            if low[0] == high[0] and not (low[1] and high[1]):
                return False
        return True
    return True


def _security(recipe: Recipe) -> Iterator[Problem]:
    security = recipe.security
    if security.run_as is not None and not _RUN_AS.fullmatch(security.run_as):
        yield Problem(
            ("security", "run_as"),
            f"invalid run_as {security.run_as!r}: expected `user` or `user:group`",
        )
    for index, capability in enumerate(security.capabilities):
        message = _capability_problem(capability)
        if message:
            yield Problem(("security", "capabilities", index), message)
    profile = security.seccomp_profile
    if (
        profile is not None
        and profile not in ("default", "unconfined")
        and not (profile.startswith("path:/") and len(profile) > len("path:/"))
    ):
        yield Problem(
            ("security", "seccomp_profile"),
            f"invalid seccomp_profile {profile!r}: expected 'default', 'unconfined' or "
            "'path:/absolute/profile.json'",
        )


def _capability_problem(name: str) -> str | None:
    if name in CAPABILITIES:
        return None
    upper = name.upper()
    if upper in CAPABILITIES:
        return f"capability {name!r} must be written in upper case: {upper!r}"
    if f"CAP_{upper}" in CAPABILITIES:
        return f"unknown capability {name!r} (did you mean 'CAP_{upper}'?)"
    longer = sorted(c for c in CAPABILITIES if c.startswith(upper))
    # Compare without the CAP_ every name shares, or everything looks alike.
    bare = suggest(upper.removeprefix("CAP_"), sorted(c[4:] for c in CAPABILITIES))
    close = longer[0] if longer else (f"CAP_{bare}" if bare else None)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown capability {name!r}{hint}"


def _artifacts(recipe: Recipe) -> Iterator[Problem]:
    names: dict[str, int] = {}
    for index, artifact in enumerate(recipe.artifacts):
        where = ("artifacts", index)
        scheme, rest = split_uri(artifact.uri)
        if scheme in REMOTE_SCHEMES and artifact.sha256 is None:
            yield Problem(
                (*where, "sha256"),
                f"missing: a remote artifact ({scheme}://) must have a sha256 to verify it",
            )
        if artifact.name is not None:
            name = artifact.name
            if name in ("", ".", "..") or "/" in name or "\0" in name:
                yield Problem((*where, "name"), f"{name!r} is not a plain file name")
                continue
        else:
            path = urllib.parse.urlsplit(artifact.uri).path if scheme != "file" else rest
            name = posixpath.basename(path)
            if name in ("", ".", ".."):
                yield Problem(
                    (*where, "uri"),
                    f"no file name in {artifact.uri!r}: set `name` for this artifact",
                )
                continue
        if name in names:
            yield Problem(
                where,
                f"file name {name!r} is already used by artifacts[{names[name]}]: set `name`",
            )
        names.setdefault(name, index)


def _permissions(recipe: Recipe) -> Iterator[Problem]:
    for index, entry in enumerate(recipe.permissions.files):
        where = ("permissions", "files", index)
        if not entry.path.startswith("/"):
            yield Problem((*where, "path"), f"{entry.path!r} is not an absolute path")
        if entry.owner is not None and not _RUN_AS.fullmatch(entry.owner):
            yield Problem(
                (*where, "owner"), f"invalid owner {entry.owner!r}: expected `user` or `user:group`"
            )
    for index, device in enumerate(recipe.permissions.devices):
        if not device.startswith("/dev/") or ".." in device.split("/"):
            yield Problem(
                ("permissions", "devices", index), f"{device!r} is not a device path (/dev/...)"
            )


def _config(recipe: Recipe) -> list[Problem]:
    return schema_problems(recipe.config)


def _references(recipe: Recipe) -> list[Problem]:
    return reference_problems(to_builtins(recipe), recipe.config.defaults, recipe.config.schema)


_TYPE: KeyPath = ("metadata", "type")
# (key paths the rule cannot do without, rule)
RULES: tuple[tuple[tuple[KeyPath, ...], Rule], ...] = (
    ((_TYPE, ("lifecycle", "run")), _run),
    ((_TYPE, ("container",)), _container),
    ((), _health),
    ((), _dependencies),
    ((("metadata", "name"),), _self_dependency),
    ((), _security),
    ((("artifacts", "*", "sha256"), ("artifacts", "*", "name")), _artifacts),
    ((), _permissions),
    ((("config",),), _config),
    ((("config",),), _references),
)
