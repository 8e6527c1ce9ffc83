"""The JSON Schema of the recipe format: shipped up to date, and it agrees with the loader."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from typing import Any

import fastjsonschema
import pytest

from keystone_edge.recipe import recipe_schema
from keystone_edge.recipe._schema import recipe_schema_text
from tests.recipe.helpers import EXAMPLES


def test_the_shipped_schema_is_up_to_date() -> None:
    shipped = resources.files("keystone_edge.recipe").joinpath("recipe.schema.json").read_text()
    assert shipped == recipe_schema_text(), (
        "recipe.schema.json is stale: run "
        "`keystonectl recipe schema > src/keystone_edge/recipe/recipe.schema.json`"
    )


def test_the_schema_says_what_it_is() -> None:
    schema = recipe_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/recipe/v1.json")
    assert schema["required"] == ["metadata"]
    assert schema["additionalProperties"] is False
    assert "imports" in schema["properties"]
    assert "null" not in json.dumps(schema)  # recipes have no null
    interval = schema["$defs"]["Health"]["properties"]["interval"]
    assert interval["type"] == "string"


@pytest.fixture(scope="module")
def validator() -> Any:
    return fastjsonschema.compile(recipe_schema())


@pytest.mark.parametrize(
    "path",
    [
        "seed/com.wisewolf.hello.recipe.toml",
        "seed/com.wisewolf.web.recipe.toml",
        "hello/com.wisewolf.hello.recipe.toml",
    ],
)
def test_the_canonical_examples_validate(validator: Any, path: str) -> None:
    validator(tomllib.loads((EXAMPLES / path).read_text()))


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"metadata": {"name": "Bad", "version": "1.0.0"}},
        {"metadata": {"name": "a", "version": "1.0"}},
        {"metadata": {"name": "a", "version": "1.0.0"}, "extra": 1},
        {
            "metadata": {"name": "a", "version": "1.0.0"},
            "lifecycle": {"install": {"script": "x", "timeout": "5 m"}},
        },
        {"metadata": {"name": "a", "version": "1.0.0"}, "resources": {"memory_limit": "1 G"}},
        {"metadata": {"name": "a", "version": "1.0.0"}, "lifecycle": {"run": {"stop_timeout": ""}}},
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(validator: Any, document: Any) -> None:
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validator(document)


@pytest.mark.parametrize("text", ["0", "500ms", "10s", "1h30m", "1.5s", "2d3h", "1m1ms"])
def test_the_duration_pattern_accepts_what_the_loader_accepts(text: str) -> None:
    document = {
        "metadata": {"name": "a", "version": "1.0.0"},
        "lifecycle": {"run": {"stop_timeout": text}},
    }
    fastjsonschema.compile(recipe_schema())(document)
