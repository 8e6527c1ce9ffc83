"""docs/recipes.md documents every key of the model."""

from __future__ import annotations

import msgspec
import pytest

from keystone_edge.recipe import model
from tests.recipe.helpers import REPO

SECTIONS = [
    model.Recipe,
    model.Metadata,
    model.ConfigSection,
    model.Artifact,
    model.Lifecycle,
    model.Install,
    model.Shutdown,
    model.Run,
    model.Exec,
    model.Backoff,
    model.Health,
    model.Security,
    model.Resources,
    model.Dependency,
    model.Permissions,
    model.FilePermission,
    model.Container,
]


@pytest.mark.parametrize("struct", SECTIONS, ids=lambda s: s.__name__)
def test_every_key_is_documented(struct: type[msgspec.Struct]) -> None:
    text = (REPO / "docs" / "recipes.md").read_text()
    missing = [f.name for f in msgspec.structs.fields(struct) if f"`{f.name}`" not in text]
    assert not missing, f"docs/recipes.md does not mention {missing}"


def test_every_model_section_is_covered_here() -> None:
    structs = {
        obj
        for obj in vars(model).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == model.__name__
    }
    assert structs - {model._Section} == set(SECTIONS)
