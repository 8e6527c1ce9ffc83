"""A component's effective configuration: layered, then checked against its JSON Schema.

Rules:

- Layers, lowest first: the recipe's ``config.defaults`` < the device's overrides < the
  deployment's overrides, combined with :func:`~keystone_edge.recipe.deep_merge` (tables
  merge, everything else replaces).
- When the recipe has ``config.schema``, the merged config is validated with
  fastjsonschema; the schema's ``default`` values fill keys no layer set. Every violation
  is reported, each naming the key (``config.interval``) and the layer that supplied the
  bad value.
- A schema is compiled once and cached by content. ``$ref`` may only point inside the
  schema (``#/...``): fetching a remote schema on a device would make a recipe reach out
  to any URL, so remote references are refused when the schema compiles.
- At load time the schema must compile and the recipe's own defaults must satisfy it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec

from keystone_edge.documents import (
    KeyPath,
    Problem,
    Source,
    combine_errors,
    describe,
    enc_hook,
    errors_for,
)
from keystone_edge.errors import RecipeError
from keystone_edge.recipe._merge import deep_merge
from keystone_edge.recipe.model import ConfigSection, Recipe

__all__ = ["SchemaInvalid", "compile_schema", "effective_config", "schema_problems"]

Validator = Callable[[Any], Any]


class SchemaInvalid(ValueError):  # noqa: N818 - internal; becomes a RecipeError at the edge
    """The config schema does not compile."""


class _NoRemoteRefs(Mapping[str, Callable[[str], Any]]):
    """fastjsonschema's URI handlers: one for every scheme, refusing them all."""

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse

    def __contains__(self, scheme: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _refuse(uri: str) -> Any:
    raise SchemaInvalid(f"$ref {uri!r} points outside the schema; only #/... references work")


@functools.lru_cache(maxsize=64)
def _compile(key: bytes) -> Validator:
    import fastjsonschema  # only components with a config schema need it

    return fastjsonschema.compile(
        msgspec.json.decode(key), handlers=_NoRemoteRefs(), use_default=True, fast_fail=False
    )


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema`` (cached); :class:`SchemaInvalid` if it does not compile."""
    key = msgspec.json.encode(schema, enc_hook=enc_hook, order="deterministic")
    try:
        return _compile(key)
    except SchemaInvalid:
        raise
    # fastjsonschema generates and exec()s Python code: a malformed schema can surface as
    # almost any exception (KeyError, TypeError, re.error, ...). All of them mean the same.
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        raise SchemaInvalid(message) from exc


def _violations(validator: Validator, data: Any) -> tuple[Any, list[Any]]:
    """Run a validator: (validated data with defaults, []) or (None, violations)."""
    import fastjsonschema

    try:
        return validator(data), []
    except fastjsonschema.JsonSchemaValuesException as exc:
        return None, list(exc.errors)
    except fastjsonschema.JsonSchemaValueException as exc:
        return None, [exc]


def _problems(
    violations: list[Any], data: Any, prefix: KeyPath, layer_of: Callable[[KeyPath], str | None]
) -> list[Problem]:
    problems: list[Problem] = []
    for violation in violations:
        path = _data_path(violation.path[1:], data)
        if violation.rule == "required" and isinstance(violation.value, dict):
            required = violation.rule_definition or []
            problems.extend(
                Problem((*prefix, *path, key), "missing (the config schema requires it)")
                for key in required
                if key not in violation.value
            )
            continue
        extra = _unexpected_keys(violation)
        if extra:
            for key in extra:
                text = "unknown key (the config schema allows no other keys here)"
                layer = layer_of((*path, key))
                problems.append(
                    Problem((*prefix, *path, key), f"{text} (from the {layer})" if layer else text)
                )
            continue
        name = violation.name or "data"
        text = violation.message.removeprefix(f"{name} ")
        text += f", got {describe(violation.value)}"
        layer = layer_of(path)
        if layer:
            text += f" (from the {layer})"
        problems.append(Problem((*prefix, *path), text))
    return problems


def _unexpected_keys(violation: Any) -> list[str]:
    """For an ``additionalProperties: false`` violation, the keys that are not allowed."""
    definition = violation.definition
    value = violation.value
    if violation.rule != "additionalProperties" or not isinstance(definition, dict):
        return []
    if not isinstance(value, dict):
        return []
    known = definition.get("properties") or {}
    patterns = definition.get("patternProperties") or {}
    try:
        return [
            key
            for key in value
            if key not in known and not any(re.search(p, key) for p in patterns)
        ]
    except (re.error, TypeError):
        return []


def _data_path(parts: list[str], data: Any) -> KeyPath:
    # fastjsonschema names paths as "data.a[0].b"; indices come back as digit strings.
    path: list[str | int] = []
    node = data
    for part in parts:
        key: str | int = int(part) if isinstance(node, list) and part.isdigit() else part
        path.append(key)
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(path)


def _has(layer: Mapping[str, Any], path: KeyPath) -> bool:
    node: Any = layer
    for part in path:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if not (in_dict or in_list):
            return False
        node = node[part]
    return True


def schema_problems(config: ConfigSection) -> list[Problem]:
    """Load-time check: the schema compiles and the recipe's defaults satisfy it."""
    if config.schema is None:
        return []
    try:
        validator = compile_schema(config.schema)
    except SchemaInvalid as exc:
        return [Problem(("config", "schema"), f"invalid JSON Schema: {exc}")]
    data = deep_merge({}, config.defaults)
    try:
        _, violations = _violations(validator, data)
    except Exception as exc:  # noqa: BLE001 - generated code; see compile_schema
        return [Problem(("config", "schema"), f"the config schema cannot be applied: {exc}")]
    # Defaults are checked as the first layer: a missing required key is fine here as long
    # as the schema says so (overrides may supply it), so only report values that are wrong.
    violations = [v for v in violations if v.rule != "required"]
    return _problems(violations, data, ("config", "defaults"), lambda _path: None)


def effective_config(
    recipe: Recipe,
    device: Mapping[str, Any] | None = None,
    deployment: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
) -> dict[str, Any]:
    """The component's config: defaults < device < deployment, validated by the schema.

    ``source`` names where the overrides came from in error messages (a deployment id or
    file); by default the component's ``name@version``.
    """
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("deployment overrides", deployment or {}),
        ("device overrides", device or {}),
        ("recipe defaults", recipe.config.defaults),
    ]
    merged: dict[str, Any] = {}
    for _name, layer in reversed(layers):
        merged = deep_merge(merged, layer)
    if recipe.config.schema is None:
        return merged
    where = Source(name=source or f"{recipe.name}@{recipe.version}", data={})
    try:
        validator = compile_schema(recipe.config.schema)
        validated, violations = _violations(validator, merged)
    except SchemaInvalid as exc:
        raise RecipeError(
            f"invalid JSON Schema: {exc}", file=where.name, key="config.schema"
        ) from exc
    except Exception as exc:  # generated code can fail in any way: see compile_schema
        raise RecipeError(
            f"the config schema cannot be applied: {exc}", file=where.name, key="config.schema"
        ) from exc
    if violations:

        def layer_of(path: KeyPath) -> str | None:
            return next((name for name, layer in layers if _has(layer, path)), None)

        problems = _problems(violations, merged, ("config",), layer_of)
        raise combine_errors(errors_for(problems, where, RecipeError), RecipeError)
    return validated  # type: ignore[no-any-return]
