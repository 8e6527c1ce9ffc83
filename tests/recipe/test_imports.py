"""imports: resolution relative to the importer, deep merge order, cycles, missing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from keystone_edge.errors import RecipeError
from keystone_edge.recipe import load_recipe
from tests.recipe.helpers import MINIMAL, Write


def errors(exc: RecipeError) -> list[str]:
    return [str(p) for p in (exc.problems or (exc,))]


def test_imports_merge_deeply_and_the_importer_wins(write: Write) -> None:
    write(
        "common.recipe.toml",
        """\
        [config.defaults]
        level = "INFO"
        tags = ["a", "b"]
        nested = { keep = 1, change = 1 }

        [lifecycle.run]
        script = "run-common"
        stop_timeout = "20s"
        """,
    )
    path = write(
        "app.recipe.toml",
        'imports = ["common.recipe.toml"]\n'
        + MINIMAL
        + """\
[config.defaults]
tags = ["c"]
nested = { change = 2 }

[lifecycle.run]
script = "run-app"
""",
    )
    loaded = load_recipe(path)
    recipe = loaded.recipe
    assert recipe.config.defaults == {
        "level": "INFO",
        "tags": ["c"],  # arrays replace
        "nested": {"keep": 1, "change": 2},  # tables merge
    }
    assert recipe.lifecycle.run is not None
    assert recipe.lifecycle.run.script == "run-app"
    assert recipe.lifecycle.run.stop_timeout == 20.0
    assert loaded.files == (path.absolute(), Path("common.recipe.toml").absolute())


def test_imports_nest_relative_to_each_importer_and_apply_in_order(write: Write) -> None:
    write("lib/base.toml", '[config.defaults]\nx = "base"\ny = "base"\nz = "base"\n')
    write("lib/mid.yaml", "imports: [base.toml]\nconfig: {defaults: {y: mid}}\n")
    write("other.json", '{"config": {"defaults": {"z": "other"}}}')
    path = write(
        "app/app.recipe.toml", 'imports = ["../lib/mid.yaml", "../other.json"]\n' + MINIMAL
    )
    recipe = load_recipe(path).recipe
    assert recipe.config.defaults == {"x": "base", "y": "mid", "z": "other"}


def test_a_file_imported_twice_is_applied_once_at_its_first_place(write: Write) -> None:
    write("common.toml", "[config.defaults]\nx = 'common'\n")
    write("b.toml", "imports = ['common.toml']\n[config.defaults]\nx = 'b'\n")
    write("c.toml", "imports = ['common.toml']\n[config.defaults]\ny = 'c'\n")
    path = write("a.recipe.toml", "imports = ['b.toml', 'c.toml']\n" + MINIMAL)
    loaded = load_recipe(path)
    # common, b, c, a: c's copy of common does not undo b's override.
    assert loaded.recipe.config.defaults == {"x": "b", "y": "c"}
    assert [p.name for p in loaded.files] == ["a.recipe.toml", "common.toml", "b.toml", "c.toml"]


def test_an_import_cycle_shows_the_chain(write: Write) -> None:
    write("b.toml", 'imports = ["c.toml"]\n')
    write("c.toml", '\n\nimports = ["a.recipe.toml"]\n')
    path = write("a.recipe.toml", 'imports = ["b.toml"]\n' + MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "c.toml:3: imports[0]: import cycle: a.recipe.toml -> b.toml -> c.toml -> a.recipe.toml"
    ]


def test_a_file_cannot_import_itself(write: Write) -> None:
    path = write("a.recipe.toml", '# itself\nimports = ["./a.recipe.toml"]\n' + MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "a.recipe.toml:2: imports[0]: import cycle: a.recipe.toml -> a.recipe.toml"
    ]


def test_a_missing_import_shows_the_chain(write: Write) -> None:
    write("sub/b.toml", '# shared bits\nimports = ["gone.toml"]\n')
    path = write("a.recipe.toml", 'imports = ["sub/b.toml", "nope.toml"]\n' + MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "sub/b.toml:2: imports[0]: imported file `gone.toml` not found "
        "(a.recipe.toml -> sub/b.toml -> sub/gone.toml)",
        "a.recipe.toml:1: imports[1]: imported file `nope.toml` not found "
        "(a.recipe.toml -> nope.toml)",
    ]


def test_imports_must_be_a_list_of_paths(write: Write) -> None:
    path = write("a.recipe.toml", 'imports = "common.toml"\n' + MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "a.recipe.toml:1: imports: expected an array of file paths (strings), got string "
        "'common.toml'"
    ]


def test_an_error_in_an_imported_file_names_that_file_and_line(write: Write) -> None:
    write(
        "common.toml",
        "[lifecycle.run]\nscript = 'x'\n\n[lifecycle.run.health]\ncheck = 'cmd:x'\n"
        "interval = '10 s'\n",
    )
    write("broken.toml", "[x\n")
    path = write("a.recipe.toml", 'imports = ["common.toml"]\n' + MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "common.toml:6: lifecycle.run.health.interval: invalid duration '10 s': expected terms "
        "like '500ms', '10s' or '1h30m' (units: d, h, m, s, ms, us)"
    ]
    path = write("b.recipe.toml", 'imports = ["broken.toml"]\n' + MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert errors(caught.value) == [
        "broken.toml:1: invalid TOML: expected ']' at the end of a table declaration (column 3)"
    ]


def test_imported_file_names_follow_how_the_recipe_was_named(write: Write, tmp_path: Path) -> None:
    write("recipes/common.toml", "[resources]\nnice = 99\n")
    write("recipes/app.recipe.toml", 'imports = ["common.toml"]\n' + MINIMAL)
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "recipes" / "app.recipe.toml")
    assert errors(caught.value) == [
        f"{tmp_path}/recipes/common.toml:2: resources.nice: expected an integer <= 19, "
        "got integer 99"
    ]
