"""Loading recipes from files and from plain data, with every problem reported at once.

The pipeline, for one recipe file:

1. read the file and its imports (:mod:`._imports`), each mapped to the canonical form
   (:mod:`._forms`), and deep-merge them;
2. resolve what the recipe points at: inline the config schema, make local artifact
   paths absolute ``file://`` URIs (:mod:`._references`);
3. check the structure against the model (unknown keys, types, values), with
   :mod:`keystone_edge.documents`;
4. leave out the bad values and check the rules beyond types on the rest
   (:mod:`._checks`), so that one mistake does not hide the others;
5. raise one :class:`~keystone_edge.errors.RecipeError` listing every problem, each with
   its file, key path and line; or return the :class:`LoadedRecipe`.

Directories (:func:`load_recipe_dir`) hold recipe files named ``*.recipe.toml``,
``*.recipe.yaml``, ``*.recipe.yml`` or ``*.recipe.json`` (other files, such as a
``deployment.toml`` or a schema, are ignored). A file with no ``metadata`` that another
recipe file of the directory imports is a *fragment* (``common.recipe.toml``) and is not
loaded on its own. Two files defining the same ``name@version`` are an error.

:func:`recipe_from_builtins` is the strict decoder for a recipe sent as plain data (the
agent's API, the store): canonical form only, no imports, no relative paths, same checks.
:func:`recipe_to_builtins` is its inverse (durations and sizes as their text).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from keystone_edge.documents import (
    KeyPath,
    Locator,
    Problem,
    Source,
    check_plain,
    combine_errors,
    dec_hook,
    describe,
    errors_for,
    prune_point,
    to_builtins,
    validate,
    without,
)
from keystone_edge.errors import RecipeError
from keystone_edge.recipe._checks import check_recipe
from keystone_edge.recipe._imports import SourceCache, resolve_imports
from keystone_edge.recipe._merge import deep_merge
from keystone_edge.recipe._references import resolve_references
from keystone_edge.recipe.model import Recipe

__all__ = [
    "RECIPE_SUFFIXES",
    "LoadedRecipe",
    "load_recipe",
    "load_recipe_dir",
    "recipe_from_builtins",
    "recipe_to_builtins",
]

RECIPE_SUFFIXES = (".recipe.toml", ".recipe.yaml", ".recipe.yml", ".recipe.json")
# Stands in for broken metadata so the other sections can still be checked; every rule
# that reads metadata is skipped then, so these values are never looked at.
_PLACEHOLDER_METADATA = {"name": "invalid", "version": "0.0.0"}


@dataclass(frozen=True, slots=True)
class LoadedRecipe:
    """A recipe read from disk: the model, its file, and every file that was read."""

    recipe: Recipe
    path: Path
    files: tuple[Path, ...]


def load_recipe(path: str | os.PathLike[str]) -> LoadedRecipe:
    """Load one recipe file (``.toml``, ``.yaml``/``.yml`` or ``.json``)."""
    return _load(Path(path), SourceCache(), None)


def _load(path: Path, cache: SourceCache, name: str | None) -> LoadedRecipe:
    tree = resolve_imports(path, cache, name=name)
    files, problems, errors = resolve_references(tree.data, tree.base_dir)
    # Only a schema file fails on its own; config.schema then still holds the reference.
    pruned: set[KeyPath] = {("config", "schema")} if errors else set()
    recipe = _check(tree.data, tree, problems, [*tree.errors, *errors], pruned)
    every = dict.fromkeys(p.absolute() for p in (*tree.files, *files))
    return LoadedRecipe(recipe=recipe, path=path, files=tuple(every))


def _check(
    data: dict[str, Any],
    locator: Locator,
    problems: list[Problem],
    errors: list[RecipeError],
    pruned: set[KeyPath],
) -> Recipe:
    problems = [*problems, *validate(data, Recipe, spell=locator.spell)]
    # Leave out each bad value (its nearest optional field), convert the rest and check it:
    # one run reports the problems of every part of the recipe, not only the first ones.
    for problem in problems:
        if problem.key is not None:
            pruned.add(problem.at)  # not a model field: dropping it hides nothing
            continue
        point = prune_point(Recipe, problem.path) or problem.path[:1]
        if point:  # () is the whole recipe: a missing `metadata`, handled below
            pruned.add(point)
    partial = without(data, pruned)
    if not isinstance(partial.get("metadata"), dict) or ("metadata",) in pruned:
        partial["metadata"] = _PLACEHOLDER_METADATA
        pruned.add(("metadata",))
    recipe: Recipe | None = None
    try:
        recipe = msgspec.convert(partial, Recipe, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        # validate() mirrors msgspec; should they ever disagree, report msgspec's verdict.
        problems.append(Problem((), f"invalid recipe: {exc}"))
    if recipe is not None:
        problems.extend(check_recipe(recipe, pruned=pruned))
    all_errors = [*errors, *errors_for(problems, locator, RecipeError)]
    if all_errors:
        raise combine_errors(_in_reading_order(all_errors), RecipeError)
    assert recipe is not None
    return recipe


def _in_reading_order(errors: list[RecipeError]) -> list[RecipeError]:
    """Sorted by file (in order of first appearance), then line; stable otherwise."""
    files: dict[str | None, int] = {}
    for exc in errors:
        files.setdefault(exc.file, len(files))
    return sorted(errors, key=lambda exc: (files[exc.file], exc.line or 0))


def recipe_from_builtins(data: Any, source: str = "<recipe>") -> Recipe:
    """Decode a recipe sent as plain data; problems are reported against ``source``."""
    where = Source(name=source, data={})
    if not isinstance(data, Mapping):
        raise RecipeError(f"expected a table, got {describe(data)}", file=source)
    problems = check_plain(data)
    if problems:
        raise combine_errors(errors_for(problems, where, RecipeError), RecipeError)
    plain = deep_merge({}, data)  # a copy: references are resolved in place
    _files, problems, errors = resolve_references(plain, None)
    return _check(plain, where, problems, errors, set())


def recipe_to_builtins(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data (for JSON, TOML, the API); durations/sizes as text."""
    data = to_builtins(recipe)
    assert isinstance(data, dict)
    return data


def load_recipe_dir(directory: str | os.PathLike[str]) -> list[LoadedRecipe]:
    """Every recipe in ``directory`` (not recursive), sorted by file name.

    Problems in all files are reported together in one RecipeError.
    """
    root = Path(directory)
    if not root.is_dir():
        raise RecipeError("not a directory", file=str(root))
    paths = sorted(p for p in root.iterdir() if p.name.endswith(RECIPE_SUFFIXES) and p.is_file())
    cache = SourceCache()
    errors: list[RecipeError] = []
    imported: set[Path] = set()
    candidates: list[Path] = []
    for path in paths:
        try:
            item = cache.get(path, str(path))
        except RecipeError as exc:
            errors.append(exc)
            continue
        candidates.append(path)
        for entry in item.imports:
            imported.add((path.absolute().parent / entry).resolve())
    loaded: list[LoadedRecipe] = []
    owners: dict[tuple[str, str], Path] = {}
    for path in candidates:
        if "metadata" not in cache.get(path, str(path)).data and path.resolve() in imported:
            continue  # a fragment: only meaningful inside the recipes that import it
        try:
            result = _load(path, cache, str(path))
        except RecipeError as exc:
            errors.append(exc)
            continue
        key = (result.recipe.name, result.recipe.version)
        if key in owners:
            errors.append(
                RecipeError(
                    f"{key[0]}@{key[1]} is already defined in {owners[key]}",
                    file=str(path),
                    key="metadata",
                )
            )
            continue
        owners[key] = path
        loaded.append(result)
    if errors:
        raise combine_errors(errors, RecipeError)
    return loaded
