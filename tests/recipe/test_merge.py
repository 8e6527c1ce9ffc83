"""deep_merge: tables merge, everything else replaces, inputs stay untouched."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from keystone_edge.recipe import deep_merge

keys = st.sampled_from(["a", "b", "c", "d"])
leaves = st.one_of(
    st.integers(), st.text(max_size=3), st.booleans(), st.lists(st.integers(), max_size=3)
)
tables = st.recursive(
    st.dictionaries(keys, leaves, max_size=3),
    lambda children: st.dictionaries(keys, st.one_of(leaves, children), max_size=3),
    max_leaves=8,
)


def test_tables_merge_and_other_values_replace() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": {"deep": {"k": 1}}}
    override = {"a": {"y": [3]}, "b": {"now": "table"}, "c": {"deep": {"j": 2}}, "d": None}
    assert deep_merge(base, override) == {
        "a": {"x": 1, "y": [3]},
        "b": {"now": "table"},
        "c": {"deep": {"k": 1, "j": 2}},
        "d": None,
    }


@given(tables, tables)
def test_inputs_are_never_changed_and_never_shared(a: dict[str, Any], b: dict[str, Any]) -> None:
    before_a, before_b = copy.deepcopy(a), copy.deepcopy(b)
    merged = deep_merge(a, b)
    assert (a, b) == (before_a, before_b)

    def containers(value: Any) -> list[int]:
        if isinstance(value, dict):
            return [id(value), *(i for v in value.values() for i in containers(v))]
        if isinstance(value, list):
            return [id(value), *(i for v in value for i in containers(v))]
        return []

    assert not set(containers(merged)) & set(containers(a) + containers(b))


@given(tables)
def test_merging_with_nothing_or_itself_changes_nothing(a: dict[str, Any]) -> None:
    assert deep_merge(a, {}) == a
    assert deep_merge({}, a) == a
    assert deep_merge(a, a) == a


def test_order_matters_when_a_value_replaces_a_table() -> None:
    # Not associative: layers and imports are always folded from the lowest up.
    a, b, c = {"k": {"x": 1}}, {"k": 0}, {"k": {"y": 2}}
    assert deep_merge(deep_merge(a, b), c) == {"k": {"y": 2}}
    assert deep_merge(a, deep_merge(b, c)) == {"k": {"x": 1, "y": 2}}


@given(tables, tables)
def test_the_later_document_wins_on_every_leaf(a: dict[str, Any], b: dict[str, Any]) -> None:
    merged = deep_merge(a, b)
    for key, value in b.items():
        if not (isinstance(value, dict) and isinstance(a.get(key), dict)):
            assert merged[key] == value
    assert set(merged) == set(a) | set(b)
