"""The TOML writer: what it writes reads back the same."""

from __future__ import annotations

import datetime
import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.recipe import load_recipe, recipe_to_builtins
from keystone_edge.recipe._toml import TomlEncodeError, dumps
from tests.recipe.helpers import EXAMPLES

keys = st.text(min_size=1, max_size=8)
scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.times(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(keys, values, max_size=6))
def test_everything_written_reads_back_the_same(data: dict[str, Any]) -> None:
    assert tomllib.loads(dumps(data)) == data


@pytest.mark.parametrize(
    "text",
    [
        'say "hi"',
        'ends with a quote"',
        'three """ quotes',
        "back\\slash",
        "tab\there",
        "line\nbreak",
        'multi\nline ending with quote"',
        'multi\nline with """ inside and "" two',
        "carriage\r\nreturn",
        "control \x01 \x7f",
        "unicode ✓ 漢字",
    ],
)
def test_awkward_strings(text: str) -> None:
    assert tomllib.loads(dumps({"s": text}))["s"] == text


def test_layout_puts_plain_keys_before_tables() -> None:
    data = {
        "a": {"t": {"x": 1}, "y": 2},
        "list": [{"n": 1}, {"n": 2, "sub": {"k": "v"}}],
        "empty": {},
        "z": 1,
    }
    text = dumps(data)
    assert text == (
        "z = 1\n"
        "\n[a]\ny = 2\n"
        "\n[a.t]\nx = 1\n"
        "\n[empty]\n"
        "\n[[list]]\nn = 1\n"
        "\n[[list]]\nn = 2\n"
        '\n[list.sub]\nk = "v"\n'
    )
    assert tomllib.loads(text) == data


def test_nan_and_infinities() -> None:
    text = dumps({"a": float("inf"), "b": float("-inf"), "c": float("nan")})
    assert text == "a = inf\nb = -inf\nc = nan\n"


@pytest.mark.parametrize("bad", [{"a": None}, {"a": [1, None]}, {"a": {1, 2}}, {"a": {1: 2}}])
def test_what_toml_cannot_hold_is_an_error(bad: dict[str, Any]) -> None:
    with pytest.raises(TomlEncodeError):
        dumps(bad)


def test_rendered_examples_read_back() -> None:
    for path in [*EXAMPLES.glob("seed/*.recipe.*"), *EXAMPLES.glob("hello/*.recipe.*")]:
        data = recipe_to_builtins(load_recipe(path).recipe)
        assert tomllib.loads(dumps(data)) == data


def test_dates_are_written_as_toml_dates() -> None:
    text = dumps({"d": datetime.date(2026, 1, 2), "t": datetime.time(3, 4, 5)})
    assert text == "d = 2026-01-02\nt = 03:04:05\n"
