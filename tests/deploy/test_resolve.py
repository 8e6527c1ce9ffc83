"""Version resolution and the start plan (keystone_edge.deploy.resolve)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from semantic_version import NpmSpec, Version

from keystone_edge.deploy.document import DeploymentDocument
from keystone_edge.deploy.resolve import Plan, resolve
from keystone_edge.errors import ResolutionError
from keystone_edge.recipe.model import Recipe


def dep(name: str, version: str = "*", kind: str = "hard") -> dict[str, str]:
    return {"name": name, "version": version, "type": kind}


def soft(name: str, version: str = "*") -> dict[str, str]:
    return dep(name, version, "soft")


def recipe(name: str, version: str, *deps: dict[str, str]) -> Recipe:
    # Through msgspec, like the loader: names, versions and dependency keys are validated.
    return msgspec.convert(
        {"metadata": {"name": name, "version": version}, "dependencies": list(deps)}, Recipe
    )


def document(
    components: Mapping[str, str] | None = None, remove: Sequence[str] = ()
) -> DeploymentDocument:
    return msgspec.convert(
        {
            "components": {n: {"version": v} for n, v in (components or {}).items()},
            "remove": list(remove),
        },
        DeploymentDocument,
    )


def versions(name: str, *vs: str) -> list[Recipe]:
    return [recipe(name, v) for v in vs]


def failure(
    components: Mapping[str, str],
    available: Iterable[Recipe],
    *,
    remove: Sequence[str] = (),
    installed: Mapping[str, str] | None = None,
) -> ResolutionError:
    with pytest.raises(ResolutionError) as info:
        resolve(document(components, remove), available, installed=installed or {})
    return info.value


# ------------------------------------------------------------------ choosing versions


def test_highest_matching_version_is_chosen_by_semver_not_text() -> None:
    available = versions("com.a", "1.0.0", "1.2.0", "1.10.0", "1.11.0-rc.1", "2.0.0")
    plan = resolve(document({"com.a": "^1.0.0"}), available)
    assert plan.versions == {"com.a": "1.10.0"}
    assert plan.components["com.a"].version == "1.10.0"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (">=1.0.0 <2.0.0", "1.3.0"),
        ("^1.2", "1.3.0"),
        ("~1.2.3", "1.2.9"),
        ("1.x", "1.3.0"),
        ("*", "2.1.0"),
        ("1.2.3", "1.2.3"),
        ("<1.2.4 || >=2.0.0 <2.1.0", "2.0.0"),
    ],
)
def test_npm_range_forms(spec: str, expected: str) -> None:
    available = versions(
        "com.a", "0.9.0", "1.2.3", "1.2.9", "1.3.0", "2.0.0", "2.1.0", "3.0.0-beta.1"
    )
    assert resolve(document({"com.a": spec}), available).versions["com.a"] == expected


def test_prerelease_only_when_the_range_names_one() -> None:
    available = versions("com.a", "1.0.0", "2.0.0-rc.1", "2.0.0-rc.2")
    assert resolve(document({"com.a": "*"}), available).versions["com.a"] == "1.0.0"
    plan = resolve(document({"com.a": ">=2.0.0-rc.1"}), available)
    assert plan.versions["com.a"] == "2.0.0-rc.2"


def test_prerelease_needs_every_range_to_allow_it() -> None:
    available = [
        recipe("com.app", "1.0.0", dep("com.lib", ">=1.0.0")),
        *versions("com.lib", "1.0.0", "2.0.0-rc.1"),
    ]
    err = failure({"com.app": "*", "com.lib": "2.0.0-rc.1"}, available)
    assert str(err) == (
        "com.lib: no version satisfies >=1.0.0 (required by com.app@1.0.0) and "
        "2.0.0-rc.1 (deployment); available: 1.0.0, 2.0.0-rc.1"
    )
    assert err.hint is not None
    assert "prereleases (2.0.0-rc.1) match only ranges that name a prerelease" in err.hint


def test_ranges_from_deployment_and_dependents_intersect() -> None:
    available = [
        recipe("com.a", "1.0.0", dep("com.b", ">=1.2.0")),
        recipe("com.c", "1.0.0", soft("com.b", "<1.4.0 || >1.4.0")),
        *versions("com.b", "1.0.0", "1.2.0", "1.3.0", "1.4.0", "1.6.0"),
    ]
    plan = resolve(document({"com.a": "*", "com.b": "<1.5.0", "com.c": "*"}), available)
    assert plan.versions == {"com.a": "1.0.0", "com.b": "1.3.0", "com.c": "1.0.0"}
    assert [str(c) for c in plan.constraints["com.b"]] == [
        ">=1.2.0 (required by com.a@1.0.0)",
        "<1.4.0 || >1.4.0 (soft dependency of com.c@1.0.0)",
        "<1.5.0 (deployment)",
    ]
    assert plan.requested_by["com.b"] == ["deployment", "com.a"]


def test_hard_dependencies_are_pulled_in_transitively() -> None:
    available = [
        recipe("com.app", "1.0.0", dep("com.lib", "^2.0.0")),
        *versions("com.lib", "1.9.0", "2.0.0", "2.4.1", "3.0.0"),
        recipe("com.lib", "2.5.0", dep("com.base", "~1.1.0")),
        *versions("com.base", "1.0.0", "1.1.0", "1.1.7", "1.2.0"),
    ]
    plan = resolve(document({"com.app": "1.0.0"}), available)
    assert plan.versions == {"com.app": "1.0.0", "com.lib": "2.5.0", "com.base": "1.1.7"}
    assert plan.requested_by == {
        "com.app": ["deployment"],
        "com.base": ["com.lib"],
        "com.lib": ["com.app"],
    }
    assert plan.layers == [["com.base"], ["com.lib"], ["com.app"]]


def test_soft_dependency_is_not_pulled_in() -> None:
    available = [
        recipe("com.app", "1.0.0", soft("com.metrics", "^1.0.0")),
        *versions("com.metrics", "1.0.0", "2.0.0"),
    ]
    plan = resolve(document({"com.app": "*"}), available)
    assert plan.versions == {"com.app": "1.0.0"}
    assert plan.layers == [["com.app"]]


def test_soft_dependency_in_the_deployment_is_ordered_and_constrained() -> None:
    available = [
        recipe("com.app", "1.0.0", soft("com.metrics", "^1.0.0")),
        *versions("com.metrics", "1.0.0", "1.1.0", "2.0.0"),
    ]
    plan = resolve(document({"com.app": "*", "com.metrics": "*"}), available)
    assert plan.versions == {"com.app": "1.0.0", "com.metrics": "1.1.0"}
    assert plan.layers == [["com.metrics"], ["com.app"]]
    # A soft dependent is not a reason to be in the plan.
    assert plan.requested_by["com.metrics"] == ["deployment"]


def test_soft_dependency_in_the_deployment_conflicts() -> None:
    available = [
        recipe("com.app", "1.0.0", soft("com.metrics", "^1.0.0")),
        *versions("com.metrics", "1.0.0", "2.0.0"),
    ]
    err = failure({"com.app": "*", "com.metrics": "2.0.0"}, available)
    assert str(err) == (
        "com.metrics: no version satisfies ^1.0.0 (soft dependency of com.app@1.0.0) "
        "and 2.0.0 (deployment); available: 1.0.0, 2.0.0"
    )


def test_backtracks_to_an_older_version_when_the_newest_conflicts() -> None:
    available = [
        recipe("com.a", "2.0.0", dep("com.b", ">=2.0.0")),
        recipe("com.a", "1.5.0", dep("com.b", ">=1.0.0 <2.0.0")),
        recipe("com.a", "1.0.0"),
        *versions("com.b", "1.0.0", "1.5.0", "2.1.0"),
    ]
    plan = resolve(document({"com.a": "*", "com.b": "<2.0.0"}), available)
    assert plan.versions == {"com.a": "1.5.0", "com.b": "1.5.0"}


def test_backjumps_over_unrelated_decisions() -> None:
    # com.m sits between com.a and com.z in name order but has nothing to do with the
    # conflict: the search must revise com.a, not walk through com.m's versions.
    available = [
        recipe("com.a", "2.0.0", dep("com.z", "^2.0.0")),
        recipe("com.a", "1.0.0", dep("com.z", "^1.0.0")),
        *versions("com.m", "1.0.0", "2.0.0", "3.0.0"),
        recipe("com.z", "2.0.0", dep("com.missing")),
        recipe("com.z", "1.0.0"),
    ]
    plan = resolve(document({"com.a": "*", "com.m": "*"}), available)
    assert plan.versions == {"com.a": "1.0.0", "com.m": "3.0.0", "com.z": "1.0.0"}


def test_conflict_that_no_backtracking_resolves_reports_the_newest_conflict() -> None:
    available = [
        recipe("com.a", "1.0.0", dep("com.b", ">=2.0.0")),
        *versions("com.b", "1.0.0", "1.5.0", "2.1.0"),
    ]
    err = failure({"com.a": "*", "com.b": "<2.0.0"}, available)
    assert str(err) == (
        "com.b: no version satisfies >=2.0.0 (required by com.a@1.0.0) and <2.0.0 "
        "(deployment); available: 1.0.0, 1.5.0, 2.1.0"
    )
    assert err.code == "resolution_failed"
    assert err.chain == ("deployment", "com.b")


def test_exhausted_backtracking_names_the_versions_tried() -> None:
    available = [
        recipe("com.a", "2.0.0", dep("com.b", ">=2.0.0")),
        recipe("com.a", "1.0.0", dep("com.b", ">=3.0.0")),
        *versions("com.b", "1.0.0", "2.1.0"),
    ]
    err = failure({"com.a": "*", "com.b": "<2.0.0"}, available)
    assert str(err).startswith("com.b: no version satisfies >=2.0.0 (required by com.a@2.0.0)")
    assert err.hint == "older versions of com.a were tried too; none resolves"


def test_dependency_conflict_with_versions_already_chosen() -> None:
    available = [
        recipe("com.a", "1.0.0"),
        recipe("com.b", "2.0.0", dep("com.a", "^2.0.0")),
        recipe("com.b", "1.8.0", dep("com.a", ">=1.1.0")),
        recipe("com.b", "1.0.0"),
    ]
    err = failure({"com.a": "1.0.0", "com.b": ">=1.5.0"}, available)
    assert str(err) == (
        "com.b: no version can be used: "
        "2.0.0 requires com.a ^2.0.0, but com.a 1.0.0 was chosen; "
        "1.8.0 requires com.a >=1.1.0, but com.a 1.0.0 was chosen; "
        "1.0.0 does not satisfy >=1.5.0 (deployment)"
    )


def test_first_conflict_met_is_reported() -> None:
    # com.b@2.0.0 does not fit com.a; com.b@1.0.0 does, and fails further down: that later
    # failure is the one reported, as it is what the newest usable versions run into.
    available = [
        recipe("com.a", "1.0.0"),
        recipe("com.b", "2.0.0", dep("com.a", "^2.0.0")),
        recipe("com.b", "1.0.0", dep("com.a", ">=1.0.0"), dep("com.c")),
    ]
    err = failure({"com.a": "1.0.0", "com.b": "*"}, available)
    assert str(err) == "com.b@1.0.0 requires com.c *, but no recipe for com.c is available"


def test_missing_recipe_names_the_dependent() -> None:
    available = [recipe("com.a", "1.0.0", dep("com.b", ">=2.0.0 <3.0.0"))]
    err = failure({"com.a": "*"}, available)
    assert str(err) == (
        "com.a@1.0.0 requires com.b >=2.0.0 <3.0.0, but no recipe for com.b is available"
    )
    assert err.chain == ("deployment", "com.a@1.0.0", "com.b")


def test_missing_recipe_requested_by_the_deployment() -> None:
    err = failure({"com.nope": "^1.0.0"}, [])
    assert str(err) == (
        "the deployment requests com.nope ^1.0.0, but no recipe for com.nope is available"
    )


def test_deep_failure_shows_the_whole_chain() -> None:
    available = [
        recipe("com.app", "1.0.0", dep("com.lib", "^1.0.0")),
        recipe("com.lib", "1.2.0", dep("com.base", "^3.0.0")),
        *versions("com.base", "1.0.0", "2.0.0"),
    ]
    err = failure({"com.app": "*"}, available)
    assert str(err) == (
        "com.base: no version satisfies ^3.0.0 (required by com.lib@1.2.0); "
        "available: 1.0.0, 2.0.0\n"
        "  chain: deployment -> com.app@1.0.0 -> com.lib@1.2.0 -> com.base"
    )
    assert err.chain == ("deployment", "com.app@1.0.0", "com.lib@1.2.0", "com.base")


# ------------------------------------------------------------------ cycles and ranges


def test_cycle_is_reported_in_dependency_order() -> None:
    available = [
        recipe("com.b", "1.0.0", dep("com.c")),
        recipe("com.c", "1.0.0", dep("com.a")),
        recipe("com.a", "1.0.0", dep("com.b")),
    ]
    err = failure({"com.c": "*"}, available)
    assert str(err) == "cycle: com.a -> com.b -> com.c -> com.a"
    assert err.chain == ("com.a", "com.b", "com.c", "com.a")


def test_cycle_through_a_soft_dependency() -> None:
    available = [
        recipe("com.a", "1.0.0", dep("com.b")),
        recipe("com.b", "1.0.0", soft("com.a")),
    ]
    assert str(failure({"com.a": "*"}, available)) == "cycle: com.a -> com.b -> com.a"


def test_self_dependency_is_a_cycle() -> None:
    available = [recipe("com.a", "1.0.0", dep("com.a", "^1.0.0"))]
    assert str(failure({"com.a": "*"}, available)) == "cycle: com.a -> com.a"


def test_invalid_range_in_the_deployment() -> None:
    err = failure({"com.a": ">= 1.0.0"}, versions("com.a", "1.0.0"))
    assert str(err) == "deployment: components.\"com.a\".version: invalid version range '>= 1.0.0'"
    assert err.hint is not None
    assert "npm syntax" in err.hint


def test_invalid_range_in_a_recipe_names_the_recipe() -> None:
    available = [recipe("com.a", "1.0.0", dep("com.b", "1.0.0 - latest")), recipe("com.b", "1.0.0")]
    err = failure({"com.a": "*"}, available)
    assert str(err) == "com.a@1.0.0: dependency com.b: invalid version range '1.0.0 - latest'"
    assert err.chain == ("deployment", "com.a@1.0.0")


def test_invalid_range_in_a_version_never_considered_is_harmless() -> None:
    available = [
        recipe("com.a", "1.0.0", dep("com.b", "bogus")),
        recipe("com.a", "2.0.0"),
    ]
    assert resolve(document({"com.a": "*"}), available).versions == {"com.a": "2.0.0"}


def test_two_different_recipes_with_one_version() -> None:
    available = [recipe("com.a", "1.0.0"), recipe("com.a", "1.0.0", dep("com.b"))]
    err = failure({"com.a": "*"}, available)
    assert str(err) == "com.a@1.0.0: two different recipes with this version are available"


def test_identical_duplicate_recipes_are_one() -> None:
    available = [recipe("com.a", "1.0.0"), recipe("com.a", "1.0.0")]
    assert resolve(document({"com.a": "*"}), available).versions == {"com.a": "1.0.0"}


# ------------------------------------------------------------------ removal and installed


def test_removing_a_component_others_still_need_is_refused() -> None:
    available = [
        recipe("com.a", "1.0.0", dep("com.b")),
        recipe("com.b", "1.0.0"),
        recipe("com.c", "2.0.0", dep("com.b")),
    ]
    err = failure(
        {"com.a": "*"},
        available,
        remove=["com.b"],
        installed={"com.b": "1.0.0", "com.c": "2.0.0"},
    )
    assert str(err) == "cannot remove com.b: still required by com.a@1.0.0, com.c@2.0.0"
    assert err.hint == "remove its dependents too, or keep com.b"


def test_removals_are_in_start_order_so_stopping_walks_them_backwards() -> None:
    available = [
        recipe("com.a", "1.0.0", dep("com.b")),
        recipe("com.b", "1.0.0", soft("com.c")),
        recipe("com.c", "1.0.0"),
        recipe("com.keep", "1.0.0", soft("com.b")),
    ]
    installed = {"com.a": "1.0.0", "com.b": "1.0.0", "com.c": "1.0.0", "com.keep": "1.0.0"}
    plan = resolve(document(remove=["com.c", "com.b", "com.a"]), available, installed=installed)
    assert plan.removals == ["com.c", "com.b", "com.a"]
    assert plan.components == {}
    assert plan.kept == {"com.keep": "1.0.0"}


def test_requested_and_removed_is_refused() -> None:
    err = failure({"com.a": "*"}, versions("com.a", "1.0.0"), remove=["com.a"])
    assert str(err) == "com.a is both requested under [components] and listed in remove"


def test_installed_components_outside_the_deployment_are_kept() -> None:
    available = [*versions("com.a", "1.0.0", "1.1.0"), *versions("com.other", "1.0.0", "2.0.0")]
    plan = resolve(
        document({"com.a": "*"}), available, installed={"com.a": "1.0.0", "com.other": "1.0.0"}
    )
    assert plan.versions == {"com.a": "1.1.0"}
    assert plan.kept == {"com.other": "1.0.0"}


def test_kept_component_range_conflicting_with_a_new_version_names_both() -> None:
    available = [
        recipe("com.k", "1.0.0", dep("com.b", "<2.0.0")),
        *versions("com.b", "1.0.0", "2.0.0"),
    ]
    err = failure({"com.b": "^2.0.0"}, available, installed={"com.k": "1.0.0", "com.b": "1.0.0"})
    assert str(err) == (
        "com.b: no version satisfies <2.0.0 (required by com.k@1.0.0, installed) and "
        "^2.0.0 (deployment); available: 1.0.0, 2.0.0"
    )
    assert err.chain == ("deployment", "com.b")


def test_kept_component_range_steers_the_choice() -> None:
    available = [
        recipe("com.k", "1.0.0", soft("com.b", "<2.0.0")),
        *versions("com.b", "1.0.0", "1.5.0", "2.0.0"),
    ]
    plan = resolve(document({"com.b": "*"}), available, installed={"com.k": "1.0.0"})
    assert plan.versions == {"com.b": "1.5.0"}
    assert [str(c) for c in plan.constraints["com.b"]] == [
        "<2.0.0 (soft dependency of com.k@1.0.0, installed)",
        "* (deployment)",
    ]


def test_kept_component_is_not_upgraded_behind_the_operators_back() -> None:
    available = [
        recipe("com.a", "2.0.0", dep("com.b", ">=2.0.0")),
        *versions("com.b", "1.0.0", "2.0.0"),
    ]
    err = failure({"com.a": "2.0.0"}, available, installed={"com.b": "1.0.0"})
    assert str(err) == (
        "com.a: no version can be used: 2.0.0 requires com.b >=2.0.0, "
        "but com.b stays at 1.0.0 (installed, not in the deployment)"
    )
    assert err.hint == (
        "installed components the deployment does not list keep their version; "
        "list com.b under [components] to change it"
    )
    plan = resolve(
        document({"com.a": "2.0.0", "com.b": "*"}), available, installed={"com.b": "1.0.0"}
    )
    assert plan.versions == {"com.a": "2.0.0", "com.b": "2.0.0"}


def test_kept_component_without_a_recipe_constrains_through_its_version() -> None:
    available = [recipe("com.a", "1.0.0", soft("com.k", "^1.0.0"))]
    plan = resolve(document({"com.a": "*"}), available, installed={"com.k": "1.4.0"})
    assert plan.kept == {"com.k": "1.4.0"}
    err = failure({"com.a": "*"}, available, installed={"com.k": "2.0.0"})
    assert "but com.k stays at 2.0.0 (installed, not in the deployment)" in str(err)


def test_kept_component_missing_a_hard_dependency_pulls_it_in() -> None:
    available = [recipe("com.k", "1.0.0", dep("com.lib")), recipe("com.lib", "1.0.0")]
    plan = resolve(document(), available, installed={"com.k": "1.0.0"})
    assert plan.versions == {"com.lib": "1.0.0"}
    assert plan.requested_by == {"com.lib": ["com.k"]}


def test_invalid_installed_version() -> None:
    err = failure({}, [], installed={"com.a": "one"})
    assert str(err) == "installed: com.a: invalid version 'one'"


# ------------------------------------------------------------------ layers


def test_layers_for_a_diamond() -> None:
    available = [
        recipe("com.app", "1.0.0", dep("com.left"), dep("com.right")),
        recipe("com.left", "1.0.0", dep("com.base")),
        recipe("com.right", "1.0.0", soft("com.base")),
        recipe("com.base", "1.0.0"),
        recipe("com.alone", "1.0.0"),
    ]
    plan = resolve(document({"com.app": "*", "com.alone": "*"}), available)
    assert plan.layers == [["com.alone", "com.base"], ["com.left", "com.right"], ["com.app"]]
    assert plan.reverse_layers() == [
        ["com.app"],
        ["com.left", "com.right"],
        ["com.alone", "com.base"],
    ]
    assert plan.layer_of("com.right") == 1


def test_order_follows_paths_through_kept_components() -> None:
    # com.app needs the kept com.k, which needs com.lib: com.lib must be up first.
    available = [
        recipe("com.app", "1.0.0", dep("com.k")),
        recipe("com.k", "1.0.0", dep("com.lib")),
        recipe("com.lib", "1.0.0"),
    ]
    plan = resolve(
        document({"com.app": "*", "com.lib": "*"}), available, installed={"com.k": "1.0.0"}
    )
    assert plan.layers == [["com.lib"], ["com.app"]]


def test_resolution_is_deterministic() -> None:
    available = [
        recipe("com.app", "1.0.0", dep("com.x", ">=1.0.0"), dep("com.y", "^1.0.0")),
        recipe("com.app", "1.1.0", dep("com.x", "^2.0.0"), dep("com.y", "~1.0.0")),
        recipe("com.x", "2.0.0", dep("com.y", ">=1.1.0")),
        recipe("com.x", "1.0.0"),
        *versions("com.y", "1.0.0", "1.0.5", "1.1.0"),
    ]
    first = resolve(document({"com.app": "*"}), available)
    assert first.versions == {"com.app": "1.0.0", "com.x": "2.0.0", "com.y": "1.1.0"}
    rng = random.Random(7)
    for _ in range(20):
        shuffled = available[:]
        rng.shuffle(shuffled)
        assert resolve(document({"com.app": "*"}), shuffled) == first


# ------------------------------------------------------------------ scale


def chain_recipes(n: int, versions_each: int, last_range: str) -> list[Recipe]:
    out = []
    for i in range(n):
        for v in range(versions_each):
            deps = [dep(f"com.c{i + 1:03d}", ">=1.0.0")] if i + 1 < n else []
            if i + 2 < n:
                deps.append(soft(f"com.c{i + 2:03d}", "*"))
            out.append(recipe(f"com.c{i:03d}", f"1.{v}.0", *deps))
    out.append(recipe("com.last", "1.0.0", dep(f"com.c{n - 1:03d}", last_range)))
    return out


def test_two_hundred_components_in_chains_resolve() -> None:
    available = chain_recipes(200, 3, "*")
    components = {"com.c000": "*", "com.last": "*", "com.c100": "^1.0.0"}
    plan = resolve(document(components), available)
    assert len(plan.components) == 201
    assert all(r.version == "1.2.0" for n, r in plan.components.items() if n != "com.last")
    assert len(plan.layers) == 200


def test_two_hundred_component_conflict_fails_without_exploring_every_combination() -> None:
    # The conflict at the end of the chain holds whatever versions come before it: without
    # pruning this is 3**200 combinations (pytest-timeout would end the test).
    available = chain_recipes(200, 3, ">=5.0.0")
    err = failure({"com.c000": "*", "com.last": "*"}, available)
    assert str(err) == (
        "com.last: no version can be used: 1.0.0 requires com.c199 >=5.0.0, "
        "but com.c199 1.2.0 was chosen"
    )
    assert err.hint == "older versions of com.c199 were tried too; none resolves"


def test_independent_components_do_not_multiply_the_search() -> None:
    # 100 free components, each with 5 versions, sort before a conflict that only an older
    # com.a resolves: backjumping must go straight back to com.a.
    available = [
        recipe("com.a", "2.0.0", dep("com.zz", "^2.0.0")),
        recipe("com.a", "1.0.0", dep("com.zz", "^1.0.0")),
        *versions("com.zz", "1.0.0"),
    ]
    components = {"com.a": "*"}
    for i in range(100):
        name = f"com.m{i:03d}"
        available += [recipe(name, f"{v}.0.0", dep("com.zz")) for v in range(1, 6)]
        components[name] = "*"
    plan = resolve(document(components), available)
    assert plan.versions["com.a"] == "1.0.0"
    assert plan.versions["com.m042"] == "5.0.0"


# ------------------------------------------------------------------ property


NAMES = [f"com.n{i}" for i in range(5)]
VERSION_POOL = ["0.1.0", "1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0"]
RANGE_POOL = [
    "*",
    "^1.0.0",
    ">=1.1.0",
    "<1.1.0",
    "~1.0.0",
    "1.x",
    "2.0.0",
    ">=1.2.0-rc.1",
    "^0.1.0",
    ">=1.0.0 <2.0.0",
    "0.1.0 || 2.0.0",
]


def rarely(draw: st.DrawFn) -> bool:
    return draw(st.sampled_from([False] * 7 + [True]))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """A random recipe graph (a DAG unless ``rarely``), deployment and installed set."""
    allow_cycles = draw(st.sampled_from([False, False, True]))
    # "*" weighs more so that plans of several components come up as often as conflicts.
    ranges = [*RANGE_POOL, *["*"] * 6, *([">= 1.0"] if rarely(draw) else [])]
    no_recipes = draw(st.sets(st.sampled_from(NAMES), max_size=1)) if rarely(draw) else set()
    available: list[Recipe] = []
    for i, name in enumerate(NAMES):
        if name in no_recipes:
            continue
        chosen = draw(st.lists(st.sampled_from(VERSION_POOL), min_size=2, max_size=4, unique=True))
        targets = [n for j, n in enumerate(NAMES) if j > i or (allow_cycles and j != i)]
        for version in chosen:
            deps = draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(targets) if targets else st.nothing(),
                        st.sampled_from(ranges),
                        st.sampled_from(["hard", "hard", "soft"]),
                    ),
                    max_size=3 if targets else 0,
                    unique_by=lambda d: d[0],
                )
            )
            available.append(recipe(name, version, *(dep(*d) for d in deps)))
    wanted = draw(
        st.dictionaries(st.sampled_from(NAMES), st.sampled_from(ranges), min_size=1, max_size=3)
    )
    others = [n for n in NAMES if n not in wanted or rarely(draw)]
    removed = draw(st.lists(st.sampled_from(others), max_size=2, unique=True)) if others else []
    installed = draw(
        st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VERSION_POOL), max_size=3)
    )
    return {
        "available": available,
        "wanted": wanted,
        "removed": removed,
        "installed": installed,
    }


def _parses(text: str) -> bool:
    try:
        NpmSpec(text)
    except ValueError:
        return False
    return True


def _matches(text: str, version: str) -> bool:
    try:
        spec = NpmSpec(text)
    except ValueError:
        return False  # a recipe with a bad range is never part of a valid state
    return bool(spec.match(Version(version)))


def _valid_state(
    state: Mapping[str, str],
    scenario: Mapping[str, Any],
    recipes: Mapping[tuple[str, str], Recipe],
) -> bool:
    """The module's rules, checked on one complete desired state (name -> version)."""
    wanted: dict[str, str] = scenario["wanted"]
    for name, text in wanted.items():
        if name not in state or not _matches(text, state[name]):
            return False
    if any(name in state for name in scenario["removed"]):
        return False
    for name, version in state.items():
        r = recipes.get((name, version))
        for d in r.dependencies if r else ():
            if not _parses(d.version):
                return False  # the resolver refuses a recipe with a bad range outright
            if d.name == name:
                continue
            if d.name not in state:
                if d.type == "hard":
                    return False
            elif not _matches(d.version, state[d.name]):
                return False
    return True


def _kept(scenario: Mapping[str, Any]) -> dict[str, str]:
    return {
        n: v
        for n, v in scenario["installed"].items()
        if n not in scenario["wanted"] and n not in scenario["removed"]
    }


def _some_solution_exists(scenario: Mapping[str, Any]) -> bool:
    recipes = {(r.name, r.version): r for r in scenario["available"]}
    kept = _kept(scenario)
    domains: list[list[str | None]] = []
    for name in NAMES:
        if name in kept:
            domains.append([kept[name]])
        else:
            domains.append([None, *(v for (n, v) in recipes if n == name)])
    for combo in itertools.product(*domains):
        state = {n: v for n, v in zip(NAMES, combo, strict=True) if v is not None}
        if _valid_state(state, scenario, recipes):
            return True
    return False


def _check_plan(plan: Plan, scenario: Mapping[str, Any]) -> None:
    recipes = {(r.name, r.version): r for r in scenario["available"]}
    kept = _kept(scenario)
    assert plan.kept == kept
    assert not set(plan.components) & set(kept)
    state = {**plan.versions, **kept}
    assert _valid_state(state, scenario, recipes)
    # Nothing beyond the deployment and what it (or a kept component) hard-requires.
    for name, why in plan.requested_by.items():
        assert (name in scenario["wanted"]) == ("deployment" in why)
        for dependent in (w for w in why if w != "deployment"):
            r = recipes.get((dependent, state[dependent]))
            assert r is not None
            assert any(d.name == name and d.type == "hard" for d in r.dependencies)
        assert why
    assert set(plan.requested_by) == set(plan.components)
    # Every planned component starts after what it depends on, hard or soft.
    flat = [n for layer in plan.layers for n in layer]
    assert sorted(flat) == sorted(plan.components)
    for name, r in plan.components.items():
        for d in r.dependencies:
            if d.name in plan.components:
                assert plan.layer_of(d.name) < plan.layer_of(name)
    assert sorted(plan.removals) == sorted(scenario["removed"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_graphs_resolve_to_a_valid_plan_or_a_resolution_error(
    scenario: dict[str, Any],
) -> None:
    doc = document(scenario["wanted"], scenario["removed"])
    try:
        plan = resolve(doc, scenario["available"], installed=scenario["installed"])
    except ResolutionError as err:
        text = str(err)
        if text.startswith("cycle: ") or "invalid version range" in text:
            return
        if "both requested under [components] and listed in remove" in text:
            assert set(scenario["wanted"]) & set(scenario["removed"])
            return
        # The search gave up: then no desired state at all satisfies the rules.
        assert not _some_solution_exists(scenario), text
    else:
        _check_plan(plan, scenario)
        again = resolve(doc, reversed(scenario["available"]), installed=scenario["installed"])
        assert again == plan
