"""Files a recipe points at, resolved while it is loaded.

Rules:

- ``[config.schema] ref = "..."``: the JSON Schema lives in another file. The reference is
  ``file://schemas/x.json`` (the seed's spelling: relative, despite the two slashes),
  ``file:schemas/x.json``, ``file:///abs/x.json`` or a plain path, relative to the file
  that wrote it. The file (JSON, or YAML/TOML by extension) is read and inlined, so a
  loaded recipe always carries its schema. ``ref`` must be the table's only key; a
  missing or invalid schema file is an error naming it.
- ``[[artifacts]] uri``: a relative path or relative ``file:`` URI is rewritten to an
  absolute ``file:///...`` URI against the directory of the file that wrote it, so the
  recipe still points at the artifact once it is sent to the agent. ``http://`` and
  ``https://`` URIs are kept (they must carry a ``sha256``: see the checks). No other
  scheme is supported.
- A recipe that is not read from a file (sent over the API) has no directory to resolve
  against: relative references in it are errors.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keystone_edge.documents import KeyPath, Problem, describe, read_document
from keystone_edge.errors import RecipeError

__all__ = ["REMOTE_SCHEMES", "resolve_references", "split_uri"]

REMOTE_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")

BaseDir = Callable[[KeyPath], Path]


def split_uri(uri: str) -> tuple[str, str]:
    """``(scheme, rest)``; a local path (``file:`` or none) comes back as ``("file", path)``.

    The path of a ``file:`` URI is percent-decoded and may be relative.
    """
    match = _SCHEME.match(uri)
    if match is None:
        return "file", uri
    scheme = match.group(1).lower()
    rest = uri[match.end() :]
    if scheme != "file":
        return scheme, rest
    if rest.startswith("//"):
        rest = rest[2:]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
    return "file", urllib.parse.unquote(rest)


def resolve_references(
    data: dict[str, Any], base_dir: BaseDir | None
) -> tuple[list[Path], list[Problem], list[RecipeError]]:
    """Inline the config schema and absolutize artifact paths, in place.

    Returns the files read, problems located in the recipe, and errors in other files.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    errors: list[RecipeError] = []
    _inline_schema(data, base_dir, files, problems, errors)
    _absolutize_artifacts(data, base_dir, problems)
    return files, problems, errors


def _inline_schema(
    data: dict[str, Any],
    base_dir: BaseDir | None,
    files: list[Path],
    problems: list[Problem],
    errors: list[RecipeError],
) -> None:
    config = data.get("config")
    schema = config.get("schema") if isinstance(config, dict) else None
    if not isinstance(schema, dict) or "ref" not in schema:
        return
    assert isinstance(config, dict)
    where: KeyPath = ("config", "schema", "ref")
    ref = schema["ref"]
    if len(schema) > 1:
        others = ", ".join(f"`{k}`" for k in schema if k != "ref")
        problems.append(
            Problem(("config", "schema"), f"`ref` cannot be combined with other keys ({others})")
        )
        return
    if not isinstance(ref, str) or not ref:
        problems.append(Problem(where, f"expected a path to a schema file, got {describe(ref)}"))
        return
    scheme, rest = split_uri(ref)
    if scheme != "file":
        problems.append(
            Problem(where, f"schema reference {ref!r}: only local files (file: or a path) work")
        )
        return
    if base_dir is None and not Path(rest).is_absolute():
        problems.append(
            Problem(where, f"relative schema reference {ref!r} needs a recipe file to resolve")
        )
        return
    target = Path(rest) if base_dir is None else base_dir(where) / rest
    target = Path(os.path.normpath(target))
    if not target.is_file():
        problems.append(Problem(where, f"schema file {ref!r} not found (looked for {target})"))
        return
    try:
        source = read_document(target, RecipeError, name=str(target))
    except RecipeError as exc:
        errors.append(exc)
        return
    files.append(target)
    config["schema"] = source.data


def _absolutize_artifacts(
    data: dict[str, Any], base_dir: BaseDir | None, problems: list[Problem]
) -> None:
    artifacts = data.get("artifacts")
    if not isinstance(artifacts, list):
        return
    for index, artifact in enumerate(artifacts):
        uri = artifact.get("uri") if isinstance(artifact, dict) else None
        if not isinstance(uri, str):
            continue  # missing or of the wrong type: the model check reports it
        where: KeyPath = ("artifacts", index, "uri")
        scheme, rest = split_uri(uri)
        if scheme in REMOTE_SCHEMES:
            continue
        if scheme != "file":
            problems.append(
                Problem(
                    where,
                    f"unsupported URI scheme {scheme!r} in {uri!r}: expected https://, "
                    "http://, file: or a path relative to the recipe",
                )
            )
            continue
        if not rest:
            problems.append(Problem(where, "empty artifact URI"))
            continue
        if not Path(rest).is_absolute():
            if base_dir is None:
                problems.append(
                    Problem(where, f"relative artifact path {uri!r} needs a recipe file")
                )
                continue
            rest = str(base_dir(where) / rest)
        artifact["uri"] = Path(os.path.normpath(rest)).as_uri()
