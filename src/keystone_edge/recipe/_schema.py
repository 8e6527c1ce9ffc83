"""The JSON Schema (draft 2020-12) of the canonical recipe format, for editors and tools.

Generated from :mod:`.model` with ``msgspec.json.schema``; this module only adds what the
model cannot say: durations and sizes as strings with their patterns, ``imports``, field
descriptions, and no ``null`` (a recipe leaves a key out instead). The seed's two
misplaced ``restart_policy`` spots are listed as deprecated so the seed's examples
validate. The manifest (``apiVersion``/``spec``) form is not described: it maps one-to-one
onto this one.

A copy ships as ``recipe.schema.json`` next to this module; a test fails when it is stale
(regenerate with ``keystonectl recipe schema > src/keystone_edge/recipe/recipe.schema.json``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from keystone_edge.recipe.model import Recipe
from keystone_edge.units import Duration, Size

__all__ = ["SCHEMA_ID", "recipe_schema", "recipe_schema_text"]

SCHEMA_ID = "https://keystone.wisewolf.dev/schemas/recipe/v1.json"
DURATION_PATTERN = r"^(0|(?=[0-9])([0-9]+(\.[0-9]+)?d)?([0-9]+(\.[0-9]+)?h)?([0-9]+(\.[0-9]+)?m)?([0-9]+(\.[0-9]+)?s)?([0-9]+(\.[0-9]+)?ms)?([0-9]+(\.[0-9]+)?us)?)$"  # noqa: E501
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?(B|K|M|G|T|KB|MB|GB|TB|Ki|Mi|Gi|Ti)?$"

# (definition, property) -> description. Kept here, not in the model, because they are
# documentation for schema-aware editors; docs/recipes.md is the full reference.
_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("Recipe", "metadata"): "Name, version and kind of the component.",
    ("Recipe", "config"): "Configuration defaults and their JSON Schema.",
    ("Recipe", "artifacts"): "Files the component needs, fetched and verified before install.",
    ("Recipe", "lifecycle"): "Install, run and shutdown steps.",
    ("Recipe", "security"): "User, capabilities, seccomp and AppArmor for the component.",
    ("Recipe", "resources"): "cgroup and rlimit limits.",
    ("Recipe", "dependencies"): "Components that must run (hard) or may run (soft) first.",
    ("Recipe", "permissions"): "Files and devices the component may use.",
    ("Recipe", "container"): 'The image to run when metadata.type = "container".',
    ("Metadata", "name"): "Lower-case dotted name, such as com.example.hello.",
    ("Metadata", "version"): "SemVer 2.0.0 version.",
    ("Metadata", "type"): "generic (a native process) or container.",
    ("ConfigSection", "defaults"): "Default configuration; device and deployment override it.",
    ("ConfigSection", "schema"): 'Inline JSON Schema, or {ref = "file://schemas/x.json"}.',
    ("Artifact", "uri"): "https:// or http:// URL, file: URI, or a path relative to the recipe.",
    ("Artifact", "sha256"): "Hex sha256 of the file; required for http(s) artifacts.",
    ("Artifact", "unpack"): "Unpack the archive (tar, compressed tar, zip) after verifying it.",
    ("Artifact", "name"): "File name in the artifacts directory (default: the URI's last part).",
    ("Install", "script"): "Shell script run once when this version is installed.",
    ("Exec", "command"): "Program to run (interpolated).",
    ("Exec", "args"): "Arguments (interpolated).",
    ("Exec", "env"): "Environment variables (values interpolated).",
    ("Run", "exec"): "Run a program directly (exactly one of exec and script).",
    ("Run", "script"): "Run a shell script (exactly one of exec and script).",
    ("Run", "restart_policy"): "When the supervisor restarts the component.",
    ("Run", "stop_timeout"): "Grace between SIGTERM and SIGKILL.",
    ("Health", "check"): "http://host:port/path, https://..., tcp://host:port or cmd:<command>.",
    ("Security", "run_as"): '"user" or "user:group"; default: the agent\'s component user.',
    ("Security", "capabilities"): "Linux capabilities, such as CAP_NET_BIND_SERVICE.",
    ("Security", "seccomp_profile"): (
        "default, unconfined or path:/absolute/profile.json; unset: default when the "
        "component is isolated at all (see docs/isolation.md)."
    ),
    ("Resources", "cpu_quota"): "Percent of one CPU.",
    ("Resources", "memory_limit"): "Memory limit, such as 128Mi.",
    ("Dependency", "version"): "npm-style range: >=1.0.0 <2.0.0, ^1.2, ~1.2.3, 1.x, *.",
    ("Dependency", "type"): "hard: must be running first; soft: ordering only.",
}
_DEPRECATED_RESTART_POLICY = {
    "enum": ["always", "never", "on-failure"],
    "deprecated": True,
    "description": "Accepted for the seed's examples; means lifecycle.run.restart_policy.",
}


def _hook(type_: type) -> dict[str, Any]:
    if type_ is Duration:
        return {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "Duration: 500ms, 10s, 1h30m (units d h m s ms us, largest first).",
        }
    if type_ is Size:
        return {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "Size in bytes, or a number and unit such as 128Mi or 1G.",
        }
    raise NotImplementedError(type_)


def recipe_schema() -> dict[str, Any]:
    """The JSON Schema of the canonical recipe format."""
    generated = msgspec.json.schema(Recipe, schema_hook=_hook)
    defs: dict[str, Any] = _strip_null(generated["$defs"])
    for (name, prop), text in _DESCRIPTIONS.items():
        defs[name]["properties"][prop].setdefault("description", text)
    for definition in defs.values():
        definition.pop("title", None)
        if "description" in definition:
            definition["description"] = " ".join(definition["description"].split())
        if not definition.get("required"):
            definition.pop("required", None)
    defs["Health"]["properties"]["restart_policy"] = dict(_DEPRECATED_RESTART_POLICY)
    defs["Container"]["properties"]["restart_policy"] = dict(_DEPRECATED_RESTART_POLICY)
    root = defs.pop("Recipe")
    root["properties"] = {
        "imports": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Recipe files merged under this one, relative to this file.",
        },
        **root["properties"],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "KeyStone component recipe",
        "description": (
            "A component recipe in its canonical form (*.recipe.toml; YAML and JSON carry "
            "the same keys). See docs/recipes.md."
        ),
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def recipe_schema_text() -> str:
    """The schema as the shipped file holds it (2-space JSON and a final newline)."""
    return json.dumps(recipe_schema(), indent=2, ensure_ascii=False) + "\n"


def _strip_null(node: Any) -> Any:
    """Remove ``null`` alternatives and ``null`` defaults: recipes have no null."""
    if isinstance(node, list):
        return [_strip_null(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strip_null(v) for k, v in node.items() if not (k == "default" and v is None)}
    any_of = out.get("anyOf")
    if isinstance(any_of, list):
        kept = [s for s in any_of if s != {"type": "null"}]
        if len(kept) == 1 and len(kept) != len(any_of):
            del out["anyOf"]
            out = {**kept[0], **out}
        else:
            out["anyOf"] = kept
    return out
