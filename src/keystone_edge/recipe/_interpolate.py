"""Interpolation: ``${config.interval}`` and friends in the fields that allow it.

Rules:

- Syntax: ``${name}`` is canonical; ``{{ name }}`` (the seed's YAML) is accepted too.
  Spaces inside the braces are allowed. ``$${`` is a literal ``${``. There is no escape
  for ``{{``: text between ``{{ }}`` that is not a dotted name (a Go template's
  ``{{ .Values }}``) is left alone.
- Names: ``config.<key>[.<key>...]`` (the effective config), ``component.name``,
  ``component.version``, ``artifacts.path`` (the component's unpacked artifacts),
  ``work.path`` (its writable work directory), ``device.id``.
- Only the fields listed in :data:`~keystone_edge.recipe.model.INTERPOLATED_FIELDS` are
  interpolated (commands, args, env values, scripts, the health check, container command
  and env). Anywhere else ``${`` is plain text.
- Checked twice: when a recipe is loaded, every reference must name a known namespace and,
  for ``config.*``, a key declared in ``config.defaults`` or in the config schema's
  ``properties`` (so a typo fails ``keystonectl recipe validate``, not a deployment);
  when rendering, every reference must resolve. An unknown reference is an error naming
  the field and the reference; it never becomes an empty string.
- Values: strings as they are; other config values as JSON text (``30``, ``true``,
  ``1.5``, ``["a","b"]``, ``{"k":1}``); dates in ISO 8601.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from keystone_edge.documents import (
    KeyPath,
    Problem,
    Source,
    combine_errors,
    dec_hook,
    enc_hook,
    errors_for,
    suggest,
    to_builtins,
)
from keystone_edge.errors import RecipeError
from keystone_edge.recipe.model import INTERPOLATED_FIELDS, Recipe

__all__ = [
    "NAMESPACES",
    "RenderContext",
    "Reference",
    "interpolated_values",
    "parse_template",
    "reference_problems",
    "render",
]

StrPath = str | os.PathLike[str]

# namespace -> names inside it; "config" is open-ended and checked against the recipe.
NAMESPACES: dict[str, tuple[str, ...]] = {
    "config": (),
    "component": ("name", "version"),
    "artifacts": ("path",),
    "work": ("path",),
    "device": ("id",),
}
_TOKEN = re.compile(r"\$\$\{|\$\{(?P<dollar>[^}]*)\}|\{\{(?P<braces>[^{}]*)\}\}|\$\{")
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*")
# {{ }} only counts with a dotted name: {{ name }} may well be another tool's template.
_BRACES_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)+)\s*")
_ESCAPE_HINT = "write `$${` for a literal `${`"


@dataclass(frozen=True, slots=True)
class Reference:
    written: str  # as in the text: "${config.interval}", "{{ config.interval }}"
    name: tuple[str, ...]  # ("config", "interval")


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Where a component lives on the device, for ``${artifacts.path}`` and friends."""

    artifacts_path: StrPath
    work_path: StrPath
    device_id: str


def parse_template(text: str) -> tuple[list[str | Reference], list[str]]:
    """Split ``text`` into literal parts and references; also return syntax problems."""
    parts: list[str | Reference] = []
    problems: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        parts.append(text[pos : match.start()])
        pos = match.end()
        token = match.group()
        if token == "$${":  # noqa: S105 - not a password: the escape for a literal ${
            parts.append("${")
        elif match.group("dollar") is not None:
            name = _NAME.fullmatch(match.group("dollar"))
            if name is None:
                problems.append(f"malformed reference `{token}`: expected `${{namespace.name}}`")
            else:
                parts.append(Reference(token, tuple(name.group(1).split("."))))
        elif match.group("braces") is not None:
            name = _BRACES_NAME.fullmatch(match.group("braces"))
            # Not a dotted name: someone else's template syntax, left alone.
            parts.append(
                token if name is None else Reference(token, tuple(name.group(1).split(".")))
            )
        else:
            problems.append(f"unterminated `${{` ({_ESCAPE_HINT})")
            parts.append(token)
    parts.append(text[pos:])
    return [p for p in parts if p != ""], problems


def interpolated_values(data: Mapping[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    """Every string in an interpolated field of a recipe in plain-data form."""
    for pattern in INTERPOLATED_FIELDS:
        yield from _match(data, pattern.split("."), ())


def _match(node: Any, parts: list[str], path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    if not parts:
        if isinstance(node, str):
            yield path, node
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(node, dict):
            for key, item in node.items():
                yield from _match(item, rest, (*path, key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from _match(item, rest, (*path, index))
    elif isinstance(node, dict) and head in node:
        yield from _match(node[head], rest, (*path, head))


def reference_problems(
    data: Mapping[str, Any], defaults: Mapping[str, Any], schema: Mapping[str, Any] | None
) -> list[Problem]:
    """Load-time check: every reference in ``data`` names something that will exist."""
    problems: list[Problem] = []
    for path, text in interpolated_values(data):
        parts, syntax = parse_template(text)
        problems.extend(Problem(path, message) for message in syntax)
        for part in parts:
            if isinstance(part, Reference):
                message = _unknown(part, lambda key: _declared(key, defaults, schema), defaults)
                if message:
                    problems.append(Problem(path, message))
    return problems


def _unknown(
    ref: Reference,
    config_has: Callable[[tuple[str, ...]], bool],
    config: Mapping[str, Any],
    config_name: str = "config.defaults or the config schema",
) -> str | None:
    namespace, *rest = ref.name
    if namespace not in NAMESPACES:
        spaces = ", ".join(f"{n}." for n in NAMESPACES)
        return f"unknown reference `{ref.written}`: names start with {spaces} ({_ESCAPE_HINT})"
    if namespace == "config":
        if config_has(tuple(rest)):
            return None
        close = suggest(rest[0], [k for k in config if isinstance(k, str)]) if rest else None
        hint = f" (did you mean `config.{close}`?)" if close and close != rest[0] else ""
        return (
            f"unknown reference `{ref.written}`: `{'.'.join(rest)}` is not in {config_name}{hint}"
        )
    if len(rest) != 1 or rest[0] not in NAMESPACES[namespace]:
        known = ", ".join(f"{namespace}.{n}" for n in NAMESPACES[namespace])
        return f"unknown reference `{ref.written}`: expected {known}"
    return None


def _declared(key: tuple[str, ...], defaults: Mapping[str, Any], schema: Any) -> bool:
    return _lookup(defaults, key) is not _MISSING or _schema_declares(schema, key)


def _schema_declares(schema: Any, key: tuple[str, ...]) -> bool:
    node = schema
    for part in key:
        properties = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(properties, dict) or part not in properties:
            return False
        node = properties[part]
    return True


_MISSING = object()


def _lookup(config: Any, key: tuple[str, ...]) -> Any:
    node = config
    for part in key:
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return msgspec.json.encode(value, enc_hook=enc_hook).decode()


def render(recipe: Recipe, config: Mapping[str, Any], context: RenderContext) -> Recipe:
    """A copy of ``recipe`` with every interpolated field rendered.

    ``config`` is the effective config (see :func:`effective_config`). Render once: the
    result holds the literal ``${`` that ``$${`` stood for.
    """
    from keystone_edge.recipe._checks import health_check_problem

    names: dict[tuple[str, ...], str] = {
        ("component", "name"): recipe.name,
        ("component", "version"): recipe.version,
        ("artifacts", "path"): os.fspath(context.artifacts_path),
        ("work", "path"): os.fspath(context.work_path),
        ("device", "id"): context.device_id,
    }
    data = to_builtins(recipe)
    problems: list[Problem] = []
    rendered: list[tuple[KeyPath, str]] = []
    for path, text in interpolated_values(data):
        parts, syntax = parse_template(text)
        problems.extend(Problem(path, message) for message in syntax)
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.name in names:
                out.append(names[part.name])
                continue
            value = _lookup(config, part.name[1:]) if part.name[0] == "config" else _MISSING
            if value is _MISSING:
                message = _unknown(part, lambda _key: False, config, "the effective config")
                problems.append(Problem(path, message or f"unknown reference `{part.written}`"))
            else:
                out.append(_text(value))
        rendered.append((path, "".join(out)))
    for path, text in rendered:
        _assign(data, path, text)
    if not problems:
        check = _lookup(data, ("lifecycle", "run", "health", "check"))
        if isinstance(check, str):
            message = health_check_problem(check, rendered=True)
            if message:
                problems.append(Problem(("lifecycle", "run", "health", "check"), message))
    if problems:
        where = Source(name=f"{recipe.name}@{recipe.version}", data={})
        raise combine_errors(errors_for(problems, where, RecipeError), RecipeError)
    return msgspec.convert(data, Recipe, dec_hook=dec_hook)


def _assign(data: Any, path: KeyPath, value: str) -> None:
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
