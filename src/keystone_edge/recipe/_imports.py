"""Recipe imports: ``imports = ["common.recipe.toml"]``, resolved and deep-merged.

Rules:

- Each entry is a path relative to the file that lists it (absolute paths work too); the
  imported file may be TOML, YAML or JSON and in either author form. Imports nest.
- Order: every file is applied once, depth first: a file's imports (in the order listed)
  before the file itself; a file reached twice (a "diamond") is applied at its first
  place. Values are combined with :func:`~keystone_edge.recipe.deep_merge`: later wins,
  tables merge, arrays replace.
- A cycle, a missing file or an ``imports`` that is not a list of strings is an error
  naming the importing file, its line and the chain of files
  (``a.recipe.toml -> b.toml -> a.recipe.toml``); these stop the load, since what the
  recipe means is unknown without its imports.
- Every value remembers the file that supplied it, so a later error about
  ``lifecycle.run.health.interval`` names the imported file and line it came from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keystone_edge.documents import (
    KeyPath,
    Location,
    Problem,
    Source,
    combine_errors,
    describe,
    errors_for,
    read_document,
)
from keystone_edge.errors import RecipeError
from keystone_edge.recipe._forms import normalize
from keystone_edge.recipe._merge import deep_merge

__all__ = ["RecipeFile", "RecipeTree", "SourceCache", "display_name", "resolve_imports"]


@dataclass(eq=False)
class RecipeFile:
    """One recipe file, parsed and in canonical form (``imports`` taken out)."""

    source: Source
    data: dict[str, Any]
    imports: list[str]
    problems: list[Problem]

    @property
    def path(self) -> Path:
        assert self.source.path is not None
        return self.source.path


class SourceCache:
    """Parsed recipe files by real path, so a file read twice is parsed once."""

    def __init__(self) -> None:
        self._files: dict[Path, RecipeFile] = {}

    def get(self, path: Path, name: str) -> RecipeFile:
        key = path.resolve()
        cached = self._files.get(key)
        if cached is None:
            source = read_document(path, RecipeError, name=name)
            data, problems = normalize(source)
            imports = data.pop("imports", [])
            if not (isinstance(imports, list) and all(isinstance(i, str) for i in imports)):
                problems.append(
                    Problem(
                        ("imports",),
                        f"expected an array of file paths (strings), got {describe(imports)}",
                    )
                )
                imports = []
            cached = RecipeFile(source, data, imports, problems)
            self._files[key] = cached
        return cached


@dataclass(eq=False)
class RecipeTree:
    """A recipe with its imports merged, and where every value came from."""

    root: RecipeFile
    data: dict[str, Any]
    files: list[Path]
    origins: dict[KeyPath, Source] = field(default_factory=dict)
    errors: list[RecipeError] = field(default_factory=list)  # already located

    def source_of(self, path: KeyPath) -> Source:
        for cut in range(len(path), -1, -1):
            source = self.origins.get(path[:cut])
            if source is not None:
                return source
        return self.root.source

    def locate(self, path: KeyPath) -> Location:
        return self.source_of(path).locate(path)

    def spell(self, path: KeyPath, name: str) -> str:
        return self.source_of(path).spell(path, name)

    def base_dir(self, path: KeyPath) -> Path:
        """Directory of the file that supplied the value at ``path``."""
        source = self.source_of(path)
        return (source.path or self.root.path).absolute().parent


def display_name(path: Path, root: Path, root_name: str) -> str:
    """How to show ``path`` in messages: relative to how the root recipe was named."""
    rel = os.path.relpath(path.absolute(), root.absolute().parent)
    return os.path.normpath(Path(root_name).parent / rel)


def resolve_imports(path: Path, cache: SourceCache, *, name: str | None = None) -> RecipeTree:
    """Read ``path`` and everything it imports; raise one RecipeError for all problems."""
    root_name = name if name is not None else str(path)
    root = cache.get(path, root_name)
    order: list[RecipeFile] = []
    errors: list[RecipeError] = []
    done: set[Path] = set()
    root_dir = path.absolute().parent

    def chain_text(chain: Sequence[Path]) -> str:
        return " -> ".join(os.path.relpath(p, root_dir) for p in chain)

    def visit(current: RecipeFile, chain: list[Path]) -> None:
        for index, entry in enumerate(current.imports):
            where: KeyPath = ("imports", index)
            target = Path(os.path.normpath(current.path.absolute().parent / entry))
            real = target.resolve()
            if real in [p.resolve() for p in chain]:
                problem = Problem(where, f"import cycle: {chain_text([*chain, target])}")
                errors.extend(errors_for([problem], current.source, RecipeError))
                continue
            if real in done:
                continue
            if not target.is_file():
                problem = Problem(
                    where,
                    f"imported file `{entry}` not found ({chain_text([*chain, target])})",
                )
                errors.extend(errors_for([problem], current.source, RecipeError))
                continue
            try:
                child = cache.get(target, display_name(target, path, root_name))
            except RecipeError as exc:
                errors.append(exc)
                continue
            visit(child, [*chain, target])
        done.add(current.path.resolve())
        order.append(current)

    visit(root, [path.absolute()])
    if errors:
        raise combine_errors(errors, RecipeError, file=root_name)
    # Problems of form (unknown manifest keys, conflicts) left the bad key out of the
    # data: they are reported along with the rest of the recipe's problems.
    form_errors = [e for item in order for e in errors_for(item.problems, item.source, RecipeError)]

    data: dict[str, Any] = {}
    origins: dict[KeyPath, Source] = {}
    for item in order:
        data = deep_merge(data, item.data)
        _record(item.data, (), item.source, origins)
    files = [root.path, *(item.path for item in order if item is not root)]
    return RecipeTree(root=root, data=data, files=files, origins=origins, errors=form_errors)


def _record(value: Any, path: KeyPath, source: Source, origins: dict[KeyPath, Source]) -> None:
    # Later files overwrite earlier ones path by path: the merged value at any path came
    # from the last file that wrote that path (or the array holding it).
    origins[path] = source
    if isinstance(value, dict):
        for key, item in value.items():
            _record(item, (*path, key), source, origins)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _record(item, (*path, index), source, origins)
