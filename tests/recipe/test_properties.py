"""Property tests: whatever a recipe document holds, loading it either works or raises a
KeyStoneError -- never anything else -- and what loads survives the trip to the agent."""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tomli_w
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keystone_edge.errors import KeyStoneError
from keystone_edge.recipe import (
    RenderContext,
    effective_config,
    load_recipe,
    recipe_from_builtins,
    recipe_to_builtins,
    render,
)
from keystone_edge.recipe.model import Metadata, Recipe
from keystone_edge.units import Duration, Size
from tests.recipe.helpers import EMPTY_SHA256, EXAMPLES

# Strings that mean something to some rule, so that generated documents reach past the
# first type check often.
MEANINGFUL = [
    "",
    "0",
    "10s",
    "1h30m",
    "10 s",
    "128Mi",
    "1.0.0",
    "1.0",
    "com.example.app",
    "Com.Bad",
    "tcp://127.0.0.1:80",
    "tcp://h",
    "http://127.0.0.1:${config.a}/x",
    "cmd:true",
    "${config.a}",
    "{{ config.a }}",
    "${HOME}",
    "$${",
    "${",
    ">=1.0.0 <2.0.0",
    ">=2.0.0 <1.0.0",
    "^1",
    "CAP_NET_ADMIN",
    "cap_x",
    "default",
    "path:/x",
    "always",
    "never",
    "container",
    "generic",
    "hard",
    "soft",
    "file:x",
    "file:///x",
    "https://e.com/x",
    "s3://b/k",
    EMPTY_SHA256,
    "0750",
    "/dev/x",
    "a:b",
    "8080:80",
    "/a:/b",
    "schemas/none.json",
]

scalars = st.one_of(
    st.sampled_from(MEANINGFUL),
    st.text(max_size=12),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.dates(),
)
anything = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def _mostly(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``shaped`` three times in four, anything at all otherwise."""
    return st.one_of(shaped, shaped, shaped, anything)


def _leaf(type_: Any) -> st.SearchStrategy[Any]:
    if type_ is Duration:
        return st.sampled_from(["0", "10s", "1h30m", "500ms", "10 s", "1"])
    if type_ is Size:
        return st.one_of(st.sampled_from(["128Mi", "1G", "1 G"]), st.integers(0, 10**6))
    if typing.get_origin(type_) is typing.Literal:
        return st.sampled_from(typing.get_args(type_))
    if type_ is str:
        return st.one_of(st.sampled_from(MEANINGFUL), st.text(max_size=8))
    if type_ is bool:
        return st.booleans()
    if type_ is int:
        return st.integers(-5, 5000)
    if type_ is float:
        return st.floats(allow_nan=False)
    return anything


def _strategy(type_: Any, depth: int) -> st.SearchStrategy[Any]:
    """Values shaped like ``type_`` most of the time, anything some of the time."""
    while typing.get_origin(type_) is typing.Annotated:
        type_ = typing.get_args(type_)[0]
    args = [a for a in typing.get_args(type_) if a is not type(None)]
    if typing.get_origin(type_) in (typing.Union, types.UnionType) and args:
        return _strategy(args[0], depth)
    if depth > 5:
        return anything
    if type_ is Metadata:  # mostly valid, or nothing past it would ever be checked
        return _mostly(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["com.example.app", "com.example.db"]),
                    "version": st.sampled_from(["1.0.0", "2.1.0-rc.1"]),
                },
                optional={"type": st.sampled_from(["generic", "container"])},
            )
        )
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        optional = {
            f.encode_name: _deferred(f.type, depth + 1) for f in msgspec.structs.fields(type_)
        }
        required = {k: optional.pop(k) for k in _required(type_)}
        shaped = st.fixed_dictionaries(required, optional=optional)
        return _mostly(st.one_of(shaped, shaped, shaped, shaped, shaped, _with_unknown(shaped)))
    origin = typing.get_origin(type_)
    if origin is list:
        return _mostly(st.lists(_strategy(args[0], depth + 1), max_size=3))
    if origin is dict:
        return _mostly(
            st.dictionaries(
                st.sampled_from(["a", "b", "PORT", "x.y"]),
                _strategy(args[1], depth + 1),
                max_size=3,
            )
        )
    return _mostly(_leaf(type_))


def _deferred(type_: Any, depth: int) -> st.SearchStrategy[Any]:
    # Deferred: the model refers to itself through nesting only a few levels deep, but
    # building every strategy eagerly would still walk the whole tree up front.
    return st.deferred(lambda: _strategy(type_, depth))


def _required(struct: type[msgspec.Struct]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(struct) if f.required]


def _with_unknown(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(lambda d, v: {**d, "unknown_key": v}, shaped, anything)


documents = _strategy(Recipe, 0)
CONTEXT = RenderContext(artifacts_path="/a", work_path="/w", device_id="d")


def _check_loaded(recipe: Recipe) -> None:
    """What loads must survive the trip to the agent, and render or fail cleanly."""
    data = recipe_to_builtins(recipe)
    # Plain JSON data (TOML dates have become ISO strings), stable from here on.
    again = recipe_from_builtins(json.loads(json.dumps(data)))
    assert recipe_to_builtins(again) == data
    with contextlib.suppress(KeyStoneError):
        render(recipe, effective_config(recipe), CONTEXT)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_plain_data_loads_or_raises_a_keystone_error(document: Any) -> None:
    try:
        recipe = recipe_from_builtins(document, source="generated")
    except KeyStoneError:
        return
    _check_loaded(recipe)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*path, index)))
    return out


EXAMPLE_DATA = [
    recipe_to_builtins(load_recipe(path).recipe)
    for folder in ("seed", "hello")
    for path in sorted((EXAMPLES / folder).glob("*.recipe.*"))
]


@st.composite
def mutated_examples(draw: st.DrawFn) -> Any:
    """A valid recipe with one value replaced by something else, or removed."""
    data = copy.deepcopy(draw(st.sampled_from(EXAMPLE_DATA)))
    path = draw(st.sampled_from(_paths(data)[1:]))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(st.one_of(scalars, anything, _strategy(Recipe, 3)))
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_examples())
def test_damaged_plain_data_loads_or_raises_a_keystone_error(document: Any) -> None:
    try:
        recipe = recipe_from_builtins(document, source="mutated")
    except KeyStoneError:
        return
    _check_loaded(recipe)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents, mutated_examples()), st.sampled_from(["toml", "yaml", "json"]))
def test_files_load_or_raise_a_keystone_error(document: Any, fmt: str) -> None:
    if fmt == "toml":
        if not isinstance(document, dict):
            return
        try:
            text = tomli_w.dumps(document)
        except (TypeError, ValueError):
            return
    elif fmt == "yaml":
        text = yaml.safe_dump(document)
    else:
        text = json.dumps(document, default=str)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"generated.recipe.{fmt}"
        path.write_text(text, encoding="utf-8")
        try:
            recipe = load_recipe(path).recipe
        except KeyStoneError:
            return
    _check_loaded(recipe)


EXAMPLE_TEXTS = [
    (path.suffix, path.read_text())
    for path in sorted(EXAMPLES.glob("*/*.recipe.*"))
    if path.parent.name == "seed"
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(EXAMPLE_TEXTS),
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 20), st.text(max_size=8)), max_size=4),
)
def test_damaged_examples_load_or_raise_a_keystone_error(
    example: tuple[str, str], edits: list[tuple[int, int, str]]
) -> None:
    suffix, text = example
    for offset, length, insert in edits:
        start = offset % (len(text) + 1)
        text = text[:start] + insert + text[start + length :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"damaged.recipe{suffix}"
        path.write_text(text, encoding="utf-8")
        (Path(tmp) / "schemas").mkdir()
        (Path(tmp) / "schemas" / "com.wisewolf.hello.json").write_text('{"type": "object"}')
        try:
            recipe = load_recipe(path).recipe
        except KeyStoneError:
            return
    _check_loaded(recipe)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_loads_or_raises_a_keystone_error(suffix: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"random.recipe{suffix}"
        path.write_text(text, encoding="utf-8")
        with contextlib.suppress(KeyStoneError):
            load_recipe(path)
