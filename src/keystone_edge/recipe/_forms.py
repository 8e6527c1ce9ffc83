"""The forms authors write a recipe in, mapped onto the canonical (TOML, snake_case) shape.

Two mappings, both kept deliberately small, and both remembered in the
:class:`~keystone_edge.documents.Source` (``aliases``) so errors point at what the author
wrote, spelled the way they wrote it:

1. **The seed's manifest form** (YAML usually; any format works), recognised by a top-level
   ``apiVersion``, ``kind`` or ``spec``::

       apiVersion: keystone.wisewolf/v1     # or keystone/v1
       kind: Component
       metadata: {name: ..., version: ...}
       spec: {description, type, publisher, configSchema, defaults, artifacts, lifecycle,
              security, resources, dependencies, permissions, container}

   ``metadata.*`` stays under metadata; ``spec.description``/``type``/``publisher`` go to
   ``metadata``; ``spec.configSchema`` to ``config.schema``; ``spec.defaults`` to
   ``config.defaults``; every other ``spec.X`` to the top-level section ``X``. Keys are
   converted from camelCase to snake_case (``failureThreshold`` -> ``failure_threshold``)
   everywhere *except inside user data*: config defaults, the config schema and the
   environment maps (``lifecycle.run.exec.env``, ``container.env``) are copied verbatim.
   ``imports`` may sit at the top level next to ``apiVersion``.

2. **Misplaced ``restart_policy``**: the seed's TOML examples write ``restart_policy`` in
   ``[lifecycle.run.health]`` and in ``[container]``. Both are accepted and moved to
   ``lifecycle.run.restart_policy``, its one canonical place; two different values for it
   in one file are an error.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from keystone_edge.documents import (
    KeyPath,
    Problem,
    Source,
    camel_case,
    describe,
    format_key,
    suggest,
)

__all__ = ["API_VERSIONS", "is_manifest", "normalize", "snake_case"]

API_VERSIONS = ("keystone.wisewolf/v1", "keystone/v1")
_MANIFEST_KEYS = ("apiVersion", "kind", "metadata", "spec", "imports")
# spec key (snake_case) -> canonical path
_SPEC_TARGETS: dict[str, KeyPath] = {
    "description": ("metadata", "description"),
    "type": ("metadata", "type"),
    "publisher": ("metadata", "publisher"),
    "config_schema": ("config", "schema"),
    "defaults": ("config", "defaults"),
    "artifacts": ("artifacts",),
    "lifecycle": ("lifecycle",),
    "security": ("security",),
    "resources": ("resources",),
    "dependencies": ("dependencies",),
    "permissions": ("permissions",),
    "container": ("container",),
}
# Canonical paths whose contents are the author's own data: keys are copied verbatim.
_USER_DATA: frozenset[KeyPath] = frozenset(
    {
        ("config", "schema"),
        ("config", "defaults"),
        ("lifecycle", "run", "exec", "env"),
        ("container", "env"),
    }
)
_RESTART_POLICY = ("lifecycle", "run", "restart_policy")
_MISPLACED_RESTART_POLICY: tuple[KeyPath, ...] = (
    ("lifecycle", "run", "health", "restart_policy"),
    ("container", "restart_policy"),
)
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")


def is_manifest(data: dict[str, Any]) -> bool:
    return any(key in data for key in ("apiVersion", "kind", "spec"))


def normalize(source: Source) -> tuple[dict[str, Any], list[Problem]]:
    """The canonical form of ``source.data`` (a new dict) and the problems found.

    Records in ``source.aliases`` where each moved key was written.
    """
    problems: list[Problem] = []
    data = copy.deepcopy(source.data)
    if is_manifest(data):
        source.camel = True
        data = _from_manifest(data, source.aliases, problems)
    _move_restart_policy(data, source.aliases, problems)
    return data, problems


def snake_case(key: str) -> str:
    return _CAMEL_HUMP.sub(r"_\1", key).lower()


def _from_manifest(
    data: dict[str, Any], aliases: dict[KeyPath, KeyPath], problems: list[Problem]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    api = data.get("apiVersion")
    if api is None:
        problems.append(Problem((), "missing required key `apiVersion`"))
    elif api not in API_VERSIONS:
        choices = " or ".join(repr(v) for v in API_VERSIONS)
        problems.append(
            Problem(("apiVersion",), f"unsupported {describe(api)}: expected {choices}")
        )
    kind = data.get("kind")
    if kind is None:
        problems.append(Problem((), "missing required key `kind`"))
    elif kind != "Component":
        problems.append(Problem(("kind",), f"unsupported {describe(kind)}: expected 'Component'"))
    for key in data:
        if key not in _MANIFEST_KEYS:
            close = suggest(key, _MANIFEST_KEYS)
            hint = f" (did you mean `{close}`?)" if close else ""
            problems.append(Problem((), f"unknown key `{key}`{hint}", key=key))
    if "imports" in data:
        out["imports"] = data["imports"]
    if "metadata" in data:
        out["metadata"] = _snake_tree(
            data["metadata"], ("metadata",), ("metadata",), aliases, problems
        )
    spec = data.get("spec", {})
    if not isinstance(spec, dict):
        problems.append(Problem(("spec",), f"expected a table, got {describe(spec)}"))
        return out
    spec_names = [camel_case(name) for name in _SPEC_TARGETS]
    for key, value in spec.items():
        written: KeyPath = ("spec", key)
        target = _SPEC_TARGETS.get(snake_case(key))
        if target is None:
            close = suggest(key, spec_names)
            hint = f" (did you mean `{close}`?)" if close else ""
            problems.append(Problem(("spec",), f"unknown key `{key}`{hint}", key=key))
            continue
        parent = out
        for part in target[:-1]:
            parent = parent.setdefault(str(part), {})
            if not isinstance(parent, dict):  # metadata written as a non-table: reported later
                break
        else:
            last = str(target[-1])
            converted = _snake_tree(value, target, written, aliases, problems)
            if last in parent and parent[last] != converted:
                earlier = aliases.get(target, target)
                problems.append(
                    Problem(
                        written,
                        f"conflicts with `{format_key(earlier)}` given elsewhere in this file",
                    )
                )
                continue
            parent[last] = converted
            aliases[target] = written
    return out


def _snake_tree(
    value: Any,
    canonical: KeyPath,
    written: KeyPath,
    aliases: dict[KeyPath, KeyPath],
    problems: list[Problem],
) -> Any:
    if canonical in _USER_DATA:
        return value
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = snake_case(key) if isinstance(key, str) else key
            if name in out:
                problems.append(
                    Problem(
                        written, f"key `{key}` is given twice (as camelCase and snake_case)", key
                    )
                )
                continue
            aliases[(*canonical, name)] = (*written, key)
            out[name] = _snake_tree(item, (*canonical, name), (*written, key), aliases, problems)
        return out
    if isinstance(value, list):
        return [
            _snake_tree(item, (*canonical, i), (*written, i), aliases, problems)
            for i, item in enumerate(value)
        ]
    return value


def _move_restart_policy(
    data: dict[str, Any], aliases: dict[KeyPath, KeyPath], problems: list[Problem]
) -> None:
    for path in _MISPLACED_RESTART_POLICY:
        table = _table_at(data, path[:-1])
        if table is None or "restart_policy" not in table:
            continue
        run = _table_at(data, _RESTART_POLICY[:-1], create=True)
        if run is None:  # lifecycle or run is not a table: that is reported on its own
            continue
        value = table.pop("restart_policy")
        if "restart_policy" not in run:
            run["restart_policy"] = value
            aliases[_RESTART_POLICY] = aliases.get(path, path)
        elif run["restart_policy"] != value:
            earlier = aliases.get(_RESTART_POLICY, _RESTART_POLICY)
            problems.append(
                Problem(
                    path,
                    f"{describe(value)} conflicts with {describe(run['restart_policy'])} "
                    f"at `{format_key(earlier)}` (both set lifecycle.run.restart_policy)",
                )
            )


def _table_at(
    data: dict[str, Any], path: KeyPath, *, create: bool = False
) -> dict[str, Any] | None:
    table: Any = data
    for part in path:
        if not isinstance(table, dict):
            return None
        if part not in table and create:
            table[part] = {}
        table = table.get(part)
    return table if isinstance(table, dict) else None
