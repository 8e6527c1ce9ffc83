"""``keystonectl recipe ...``: validate, render and describe recipes, offline.

- ``validate FILE|DIR...``: prints ``ok: FILE (name@version)`` per good recipe, every
  problem of every bad one (``error: file:line: key: message``), and exits 1 if any is
  bad. A directory means every ``*.recipe.*`` file in it (fragments skipped).
- ``render FILE``: the recipe as the agent would run it: imports merged, config layered
  (recipe defaults < ``--device-config`` < ``--config``) and validated, interpolation
  done; ``config.defaults`` shows the effective config. ``--config a.b=3`` sets a nested
  key; the value is read as JSON when it parses (``3``, ``true``, ``["x"]``), else as a
  string.
- ``schema``: the JSON Schema of the recipe format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from keystone_edge.cli._context import CliContext, fail, output_option, print_json
from keystone_edge.errors import DocumentError, KeyStoneError, RecipeError

if TYPE_CHECKING:
    from keystone_edge.recipe import LoadedRecipe

__all__ = ["recipe"]

_DEFAULT_ROOT = "/opt/keystone"


@click.group()
def recipe() -> None:
    """Validate, render and describe component recipes (no agent needed)."""


def _problems(exc: RecipeError) -> tuple[DocumentError, ...]:
    return exc.problems or (exc,)


def _fail(exc: KeyStoneError) -> NoReturn:
    """Like :func:`fail`, with each of several problems on its own ``error:`` line."""
    problems: tuple[KeyStoneError, ...] = getattr(exc, "problems", ()) or (exc,)
    for problem in problems[:-1]:
        click.secho(f"error: {problem}", fg="red", err=True)
    last = problems[-1]
    if exc.hint and not last.hint:
        last.hint = exc.hint
    fail(last)


@recipe.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_option
@click.pass_obj
def validate(obj: CliContext, paths: tuple[Path, ...]) -> None:
    """Check recipe files (or directories of them) and report every problem."""
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            loaded = _load_path(path)
        except RecipeError as exc:
            problems = _problems(exc)
            results.append(
                {
                    "file": str(path),
                    "ok": False,
                    "errors": [
                        {"file": p.file, "line": p.line, "key": p.key, "message": p.reason}
                        for p in problems
                    ],
                }
            )
            if not obj.json:
                for problem in problems:
                    click.secho(f"error: {problem}", fg="red", err=True)
            continue
        for item in loaded:
            name, version = item.recipe.name, item.recipe.version
            results.append({"file": str(item.path), "ok": True, "name": name, "version": version})
            if not obj.json:
                click.echo(f"ok: {item.path} ({name}@{version})")
    if obj.json:
        print_json(results)
    bad = [r["file"] for r in results if not r["ok"]]
    if bad:
        fail(RecipeError(f"{len(bad)} of {len(results)} invalid", file=", ".join(bad)))


def _load_path(path: Path) -> list[LoadedRecipe]:
    from keystone_edge.recipe import RECIPE_SUFFIXES, load_recipe, load_recipe_dir

    if not path.is_dir():
        return [load_recipe(path)]
    loaded = load_recipe_dir(path)
    if not loaded:
        raise RecipeError(f"no recipe files ({', '.join(RECIPE_SUFFIXES)})", file=str(path))
    return loaded


def _parse_assignment(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise click.BadParameter(f"expected KEY=VALUE (KEY may be dotted: a.b=3), got {text!r}")
    try:
        value: Any = json.loads(raw)
    except (ValueError, RecursionError):
        value = raw
    return parts, value


def _set_nested(target: dict[str, Any], parts: list[str], value: Any) -> None:
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


@recipe.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Deployment-level config override (repeatable; KEY may be dotted).",
)
@click.option(
    "--device-config",
    type=click.Path(path_type=Path),
    help="File (TOML/YAML/JSON) holding the device's config overrides for this component.",
)
@click.option("--artifacts-path", help="Value of ${artifacts.path} (default: the agent's path).")
@click.option("--work-path", help="Value of ${work.path} (default: the agent's path).")
@click.option(
    "--device-id", default="<device-id>", show_default=True, help="Value of ${device.id}."
)
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["toml", "json"]),
    default=None,
    help="Output format (default: toml; json when keystonectl -o json).",
)
@click.pass_obj
def render(  # noqa: PLR0917 - click passes each option as a parameter
    obj: CliContext,
    path: Path,
    assignments: tuple[str, ...],
    device_config: Path | None,
    artifacts_path: str | None,
    work_path: str | None,
    device_id: str,
    fmt: str | None,
) -> None:
    """Print the effective recipe: imports, config layering and interpolation applied."""
    from keystone_edge.documents import read_document
    from keystone_edge.recipe import (
        RenderContext,
        effective_config,
        load_recipe,
        recipe_to_builtins,
    )
    from keystone_edge.recipe import render as render_recipe

    overrides: dict[str, Any] = {}
    for text in assignments:
        parts, value = _parse_assignment(text)
        _set_nested(overrides, parts, value)
    try:
        loaded = load_recipe(path)
        recipe_ = loaded.recipe
        device = read_document(device_config, RecipeError).data if device_config else None
        config = effective_config(recipe_, device, overrides, source=str(path))
        component_dir = f"{_DEFAULT_ROOT}/runtime/components/{recipe_.name}/{recipe_.version}"
        context = RenderContext(
            artifacts_path=artifacts_path or component_dir,
            work_path=work_path or f"{_DEFAULT_ROOT}/runtime/work/{recipe_.name}",
            device_id=device_id,
        )
        data = recipe_to_builtins(render_recipe(recipe_, config, context))
    except KeyStoneError as exc:
        _fail(exc)
    data.setdefault("config", {})["defaults"] = config
    if (fmt or ("json" if obj.json else "toml")) == "json":
        print_json(data)
        return
    import tomli_w

    null = _null_at(data)
    if null is not None:
        _not_toml(path, f"TOML has no null (at {null})")
    try:
        text = tomli_w.dumps(data, multiline_strings=True)
    except TypeError as exc:
        _not_toml(path, str(exc))
    click.echo(text, nl=False)


def _not_toml(path: Path, reason: str) -> NoReturn:
    error = RecipeError(reason, file=str(path))
    error.hint = "use -o json to see it"
    fail(error)


def _null_at(value: Any, path: str = "") -> str | None:
    """The key path of the first null (TOML has none), or None."""
    if value is None:
        return path or "."
    items: Any = value.items() if isinstance(value, dict) else []
    if isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    for key, item in items:
        where = (
            f"{path}{key}" if str(key).startswith("[") else f"{path}.{key}" if path else str(key)
        )
        if (found := _null_at(item, where)) is not None:
            return found
    return None


@recipe.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of the recipe format."""
    from keystone_edge.recipe._schema import recipe_schema_text

    click.echo(recipe_schema_text(), nl=False)
