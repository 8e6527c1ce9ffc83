"""Config layering and validation against the recipe's JSON Schema."""

from __future__ import annotations

from typing import Any

import pytest

from keystone_edge.errors import RecipeError
from keystone_edge.recipe import effective_config, load_recipe, recipe_from_builtins
from keystone_edge.recipe._config import SchemaInvalid, compile_schema
from keystone_edge.recipe.model import Recipe
from tests.recipe.helpers import EXAMPLES, MINIMAL, Write

SCHEMA = {
    "type": "object",
    "properties": {
        "interval": {"type": "integer", "minimum": 1, "default": 30},
        "message": {"type": "string"},
        "db": {
            "type": "object",
            "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
            "required": ["host"],
        },
    },
    "required": ["message"],
    "additionalProperties": False,
}


def recipe(defaults: dict[str, Any], schema: dict[str, Any] | None = SCHEMA) -> Recipe:
    config: dict[str, Any] = {"defaults": defaults}
    if schema is not None:
        config["schema"] = schema
    return recipe_from_builtins(
        {"metadata": {"name": "com.example.app", "version": "1.0.0"}, "config": config}
    )


def test_layers_merge_defaults_then_device_then_deployment() -> None:
    base = recipe({"message": "defaults", "db": {"host": "h", "port": 1}}, schema=None)
    config = effective_config(
        base, device={"db": {"port": 2}, "x": 1}, deployment={"message": "deploy", "x": 2}
    )
    assert config == {"message": "deploy", "db": {"host": "h", "port": 2}, "x": 2}
    assert base.config.defaults == {"message": "defaults", "db": {"host": "h", "port": 1}}


def test_schema_defaults_fill_what_no_layer_set() -> None:
    config = effective_config(recipe({"message": "hi"}))
    assert config == {"message": "hi", "interval": 30}


def test_violations_name_the_key_and_the_layer() -> None:
    base = recipe({"message": "hi"})
    with pytest.raises(RecipeError) as caught:
        effective_config(
            base,
            device={"interval": 0},
            deployment={"message": 5, "db": {"port": "x"}, "extra": True},
            source="deploy-42",
        )
    assert sorted(str(caught.value).splitlines()) == [
        "deploy-42: config.db.host: missing (the config schema requires it)",
        "deploy-42: config.db.port: must be integer, got string 'x' (from the deployment "
        "overrides)",
        "deploy-42: config.extra: unknown key (the config schema allows no other keys here) "
        "(from the deployment overrides)",
        "deploy-42: config.interval: must be bigger than or equal to 1, got integer 0 "
        "(from the device overrides)",
        "deploy-42: config.message: must be string, got integer 5 (from the deployment overrides)",
    ]


def test_a_missing_required_key_is_reported() -> None:
    with pytest.raises(RecipeError) as caught:
        effective_config(recipe({}))
    assert str(caught.value) == (
        "com.example.app@1.0.0: config.message: missing (the config schema requires it)"
    )


def test_recipe_defaults_are_checked_at_load_time(write: Write) -> None:
    path = write(
        "app.recipe.toml",
        MINIMAL
        + """
[config.defaults]
interval = 0
message = "hi"

[config.schema]
type = "object"
required = ["message", "other"]
properties.interval = { type = "integer", minimum = 1 }
""",
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    # A required key the defaults leave out is fine: a deployment may supply it.
    assert str(caught.value) == (
        "app.recipe.toml:6: config.defaults.interval: must be bigger than or equal to 1, "
        "got integer 0"
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "nope"}, "invalid JSON Schema: Unknown type"),
        (
            {"$ref": "http://127.0.0.1:9/x.json"},
            "invalid JSON Schema: $ref 'http://127.0.0.1:9/x.json' points outside the schema; "
            "only #/... references work",
        ),
        (
            {"$ref": "other.json"},
            "invalid JSON Schema: $ref 'other.json' points outside the schema; "
            "only #/... references work",
        ),
        ({"properties": {"a": {"pattern": "("}}}, "invalid JSON Schema: "),
    ],
)
def test_a_schema_must_compile_and_stay_local(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        recipe({}, schema=schema)
    assert str(caught.value).startswith(f"<recipe>: config.schema: {message}")


def test_local_refs_work() -> None:
    schema = {
        "definitions": {"port": {"type": "integer", "maximum": 65535}},
        "properties": {"port": {"$ref": "#/definitions/port"}},
    }
    assert effective_config(recipe({"port": 80}, schema=schema)) == {"port": 80}
    with pytest.raises(RecipeError, match=r"config.port: must be smaller than or equal to 65535"):
        effective_config(recipe({"port": 80}, schema=schema), deployment={"port": 70000})


def test_schemas_compile_once() -> None:
    first = compile_schema({"type": "object", "properties": {"a": {"type": "integer"}}})
    again = compile_schema({"properties": {"a": {"type": "integer"}}, "type": "object"})
    assert first is again
    with pytest.raises(SchemaInvalid):
        compile_schema({"type": 5})


def test_the_seed_schema_validates_overrides() -> None:
    hello = load_recipe(EXAMPLES / "seed" / "com.wisewolf.hello.recipe.toml").recipe
    assert effective_config(hello, deployment={"log_level": "DEBUG"})["log_level"] == "DEBUG"
    with pytest.raises(RecipeError) as caught:
        effective_config(hello, deployment={"log_level": "LOUD", "colour": "red"})
    assert sorted(str(caught.value).splitlines()) == [
        "com.wisewolf.hello@1.0.0: config.colour: unknown key (the config schema allows no "
        "other keys here) (from the deployment overrides)",
        "com.wisewolf.hello@1.0.0: config.log_level: must be one of ['DEBUG', 'INFO', 'WARNING', "
        "'ERROR'], got string 'LOUD' (from the deployment overrides)",
    ]
