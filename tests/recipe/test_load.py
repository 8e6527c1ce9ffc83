"""Loading recipes: the seed's examples as written, references, transport, directories."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from keystone_edge.errors import RecipeError
from keystone_edge.recipe import (
    load_recipe,
    load_recipe_dir,
    recipe_from_builtins,
    recipe_to_builtins,
)
from tests.recipe.helpers import EMPTY_SHA256, EXAMPLES, MINIMAL, Write


def test_the_seed_yaml_recipe_loads_as_written() -> None:
    loaded = load_recipe(EXAMPLES / "seed" / "com.keylab.hello.recipe.yaml")
    recipe = loaded.recipe
    assert (recipe.name, recipe.version) == ("com.keylab.hello", "1.0.0")
    assert recipe.metadata.description == "Hello edge"
    assert recipe.metadata.type == "generic"
    assert recipe.config.defaults == {"interval": 30, "message": "Hello from Keystone"}
    assert recipe.config.schema is not None
    assert recipe.config.schema["properties"]["interval"]["minimum"] == 1
    assert recipe.artifacts[0].unpack is True
    assert recipe.artifacts[0].sha256 == EMPTY_SHA256
    lifecycle = recipe.lifecycle
    assert lifecycle.install is not None
    assert lifecycle.install.require_privilege is False
    assert lifecycle.run is not None
    assert lifecycle.run.exec is not None
    assert lifecycle.run.exec.args[1] == "{{ config.interval }}"
    assert lifecycle.run.exec.working_dir == "."
    assert lifecycle.run.exec.env == {"LOG_LEVEL": "info"}
    assert lifecycle.run.restart_policy == "always"
    assert lifecycle.run.health is not None
    assert lifecycle.run.health.failure_threshold == 3
    assert lifecycle.run.health.interval == 10.0
    assert recipe.security.run_as == "ks_user:ks_group"
    assert recipe.security.seccomp_profile == "default"
    assert recipe.security.apparmor_profile == "ks-default"
    assert recipe.resources.cpu_quota == 40
    assert recipe.resources.memory_limit == 128 * 2**20
    assert recipe.resources.open_files == 4096
    assert recipe.dependencies[0].version == ">=1.0.0 <2.0.0"
    assert recipe.permissions.files[0].owner == "ks_user:ks_group"
    assert recipe.permissions.devices == ["/dev/ttyUSB0"]


def test_the_seed_toml_recipe_loads_as_written() -> None:
    path = EXAMPLES / "seed" / "com.wisewolf.hello.recipe.toml"
    loaded = load_recipe(path)
    recipe = loaded.recipe
    assert recipe.name == "com.wisewolf.hello"
    assert recipe.metadata.publisher == "Wisewolf Labs"
    # restart_policy is written in [lifecycle.run.health] in the seed: moved to its place.
    assert recipe.lifecycle.run is not None
    assert recipe.lifecycle.run.restart_policy == "always"
    # The schema reference is read and inlined.
    assert recipe.config.schema is not None
    assert set(recipe.config.schema["properties"]) == {"log_level", "interval_seconds", "message"}
    assert loaded.files == (
        path.absolute(),
        (EXAMPLES / "seed" / "schemas" / "com.wisewolf.hello.json").absolute(),
    )


def test_the_seed_container_recipe_loads_as_written() -> None:
    recipe = load_recipe(EXAMPLES / "seed" / "com.wisewolf.web.recipe.toml").recipe
    assert recipe.metadata.type == "container"
    assert recipe.container is not None
    assert recipe.container.image == "registry.example.com/wisewolf/web:1.0.0"
    assert recipe.container.env == {"LOG_LEVEL": "info"}
    assert recipe.lifecycle.run is not None
    assert recipe.lifecycle.run.restart_policy == "always"
    assert recipe.lifecycle.run.exec is None


def test_the_seed_hashes_are_the_only_change_and_are_real() -> None:
    yaml_text = (EXAMPLES / "seed" / "com.keylab.hello.recipe.yaml").read_text()
    toml_text = (EXAMPLES / "seed" / "com.wisewolf.hello.recipe.toml").read_text()
    assert f'sha256: "{EMPTY_SHA256}"' in yaml_text
    assert f'sha256 = "{EMPTY_SHA256}"' in toml_text
    assert hashlib.sha256(b"").hexdigest() == EMPTY_SHA256


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hello", "bin/hello"),
        ("./tools/../hello", "bin/hello"),
        ("file:hello", "bin/hello"),
        ("file://hello", "bin/hello"),
        ("file:my%20tool", "bin/my%20tool"),
        ("with space", "bin/with%20space"),
    ],
)
def test_local_artifact_paths_become_absolute_file_uris(
    write: Write, tmp_path: Path, uri: str, expected: str
) -> None:
    path = write("bin/app.recipe.toml", MINIMAL + f'[[artifacts]]\nuri = "{uri}"\n')
    recipe = load_recipe(path).recipe
    assert recipe.artifacts[0].uri == (tmp_path.resolve().as_uri() + "/" + expected)


def test_absolute_and_remote_artifact_uris_are_kept(write: Write) -> None:
    path = write(
        "app.recipe.toml",
        MINIMAL
        + '[[artifacts]]\nuri = "file:///opt/x"\n'
        + f'[[artifacts]]\nuri = "https://example.com/y"\nsha256 = "{EMPTY_SHA256}"\n'
        + '[[artifacts]]\nuri = "/srv/z"\n',
    )
    uris = [a.uri for a in load_recipe(path).recipe.artifacts]
    assert uris == ["file:///opt/x", "https://example.com/y", "file:///srv/z"]


def test_artifacts_from_an_import_resolve_against_the_imported_file(
    write: Write, tmp_path: Path
) -> None:
    write("shared/common.toml", '[[artifacts]]\nuri = "tool"\n')
    path = write("app/app.recipe.toml", 'imports = ["../shared/common.toml"]\n' + MINIMAL)
    recipe = load_recipe(path).recipe
    assert recipe.artifacts[0].uri == (tmp_path.resolve() / "shared" / "tool").as_uri()


def test_a_config_schema_reference_accepts_the_usual_spellings(write: Write) -> None:
    write(
        "schemas/s.json", json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}})
    )
    for ref in (
        "file://schemas/s.json",
        "file:schemas/s.json",
        "schemas/s.json",
        "./schemas/s.json",
    ):
        path = write("app.recipe.toml", MINIMAL + f'[config.schema]\nref = "{ref}"\n')
        schema = load_recipe(path).recipe.config.schema
        assert schema == {"type": "object", "properties": {"a": {"type": "integer"}}}


def test_a_bad_schema_file_is_named(write: Write) -> None:
    write("schemas/s.json", '{"type": "object",\n "properties": }')
    path = write("app.recipe.toml", MINIMAL + '[config.schema]\nref = "schemas/s.json"\n')
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    text = str(caught.value)
    assert text.endswith("schemas/s.json:2: invalid JSON: Expecting value (column 16)")


def test_recipes_round_trip_through_plain_data() -> None:
    for path in sorted((EXAMPLES / "seed").glob("*.recipe.*")):
        recipe = load_recipe(path).recipe
        data = recipe_to_builtins(recipe)
        assert json.loads(json.dumps(data)) == data  # plain JSON data
        again = recipe_from_builtins(data, source=path.name)
        assert again == recipe
        assert recipe_to_builtins(again) == data


def test_durations_and_sizes_travel_as_the_text_the_author_wrote(write: Write) -> None:
    path = write(
        "app.recipe.toml",
        MINIMAL
        + '[lifecycle.run]\nscript = "sleep 1"\nstop_timeout = "1m30s"\n'
        + '[resources]\nmemory_limit = "128Mi"\n',
    )
    data = recipe_to_builtins(load_recipe(path).recipe)
    assert data["lifecycle"]["run"]["stop_timeout"] == "1m30s"
    assert data["resources"]["memory_limit"] == "128Mi"


def test_plain_data_is_decoded_strictly() -> None:
    data = {
        "imports": ["x.toml"],
        "metadata": {"name": "com.example.app", "version": "1.0.0"},
        "artifacts": [{"uri": "relative/tool"}],
        "config": {"schema": {"ref": "schemas/s.json"}},
    }
    with pytest.raises(RecipeError) as caught:
        recipe_from_builtins(data, source="api")
    assert str(caught.value).splitlines() == [
        "api: config.schema.ref: relative schema reference 'schemas/s.json' needs a recipe "
        "file to resolve",
        "api: artifacts[0].uri: relative artifact path 'relative/tool' needs a recipe file",
        "api: unknown key `imports`",
    ]
    with pytest.raises(RecipeError, match="api: expected a table, got an array"):
        recipe_from_builtins([1], source="api")
    with pytest.raises(RecipeError, match="api: metadata: key 1 is not a string"):
        recipe_from_builtins({"metadata": {1: "x"}}, source="api")


def test_a_directory_loads_its_recipes_and_skips_fragments(write: Write) -> None:
    write("common.recipe.toml", '[lifecycle.run]\nscript = "sleep 1"\n')
    write("b.recipe.toml", 'imports = ["common.recipe.toml"]\n' + MINIMAL)
    write("a.recipe.yaml", "metadata: {name: com.example.a, version: 2.0.0}\n")
    write("deployment.toml", "this is not a recipe = \n")
    write("notes.txt", "ignored\n")
    loaded = load_recipe_dir(".")
    assert [(item.path.name, item.recipe.name) for item in loaded] == [
        ("a.recipe.yaml", "com.example.a"),
        ("b.recipe.toml", "com.example.app"),
    ]
    assert loaded[1].recipe.lifecycle.run is not None


def test_a_directory_reports_every_bad_file_and_duplicates(write: Write) -> None:
    write("a.recipe.toml", MINIMAL)
    write("b.recipe.toml", MINIMAL)
    write("c.recipe.toml", "[metadata]\nname = 5\n")
    write("d.recipe.toml", "[broken\n")
    write("e.recipe.toml", "[lifecycle.run]\nscript = 'x'\n")  # no metadata, imported by none
    with pytest.raises(RecipeError) as caught:
        load_recipe_dir(".")
    assert str(caught.value).splitlines() == [
        "d.recipe.toml:1: invalid TOML: expected ']' at the end of a table declaration (column 8)",
        "b.recipe.toml: metadata: com.example.app@1.0.0 is already defined in a.recipe.toml",
        "c.recipe.toml:1: metadata: missing required key `version`",
        "c.recipe.toml:2: metadata.name: expected a string, got integer 5",
        "e.recipe.toml: missing required key `metadata`",
    ]


def test_a_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not a directory"):
        load_recipe_dir(tmp_path / "nope")
