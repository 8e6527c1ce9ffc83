"""Recipes: the descriptor of a component, loaded, checked, layered and rendered.

The format is documented in ``docs/recipes.md``; each module states the rules it enforces:

- :mod:`.model` -- the typed, canonical shape of a recipe;
- :mod:`._forms` -- the seed's manifest (YAML) form and moved keys, mapped onto it;
- :mod:`._imports` and :mod:`._merge` -- ``imports`` and the deep merge;
- :mod:`._references` -- config schema references and local artifact paths;
- :mod:`._checks` -- the rules beyond types;
- :mod:`._interpolate` -- ``${config.x}`` references and rendering;
- :mod:`._config` -- config layering and JSON Schema validation;
- :mod:`._schema` -- the JSON Schema of the recipe format itself;
- :mod:`._load` -- the loading pipeline, directories and plain-data transport.
"""

from __future__ import annotations

from keystone_edge.recipe._config import effective_config
from keystone_edge.recipe._interpolate import RenderContext, render
from keystone_edge.recipe._load import (
    RECIPE_SUFFIXES,
    LoadedRecipe,
    load_recipe,
    load_recipe_dir,
    recipe_from_builtins,
    recipe_to_builtins,
)
from keystone_edge.recipe._merge import deep_merge
from keystone_edge.recipe._schema import recipe_schema
from keystone_edge.recipe.model import INTERPOLATED_FIELDS, Recipe

__all__ = [
    "INTERPOLATED_FIELDS",
    "RECIPE_SUFFIXES",
    "LoadedRecipe",
    "Recipe",
    "RenderContext",
    "deep_merge",
    "effective_config",
    "load_recipe",
    "load_recipe_dir",
    "recipe_from_builtins",
    "recipe_schema",
    "recipe_to_builtins",
    "render",
]
