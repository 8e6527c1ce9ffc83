"""What a deployment changes: the sans-IO diff."""

from __future__ import annotations

from keystone_edge.deploy.diff import Current, Desired, diff


def _current(version: str | None, config: dict[str, object], state: str = "RUNNING") -> Current:
    return Current(version, config, "r1", run=True, state=state)


def test_each_kind_of_change() -> None:
    desired = {
        "new": Desired("1.0.0", {}, "r1"),
        "up": Desired("2.0.0", {}, "r1"),
        "conf": Desired("1.0.0", {"a": 2, "b": 1}, "r1"),
        "same": Desired("1.0.0", {"a": 1}, "r1"),
        "dead": Desired("1.0.0", {}, "r1"),
        "edited": Desired("1.0.0", {}, "r2"),
    }
    current = {
        "up": _current("1.0.0", {}),
        "conf": _current("1.0.0", {"a": 1, "b": 1}),
        "same": _current("1.0.0", {"a": 1}),
        "dead": _current("1.0.0", {}, state="FAILED"),
        "edited": _current("1.0.0", {}),
        "gone": _current("1.0.0", {}),
        "other": _current("1.0.0", {}),
    }
    changes = diff(desired, current, ["gone"])
    kinds = {name: change.kind for name, change in changes.items()}
    assert kinds == {
        "new": "add",
        "up": "update",
        "conf": "reconfigure",
        "same": "unchanged",
        "dead": "restart",
        "edited": "reconfigure",
        "gone": "remove",
    }
    assert "other" not in changes
    assert changes["conf"].reasons == ("config changed: a",)
    assert changes["up"].reasons == ("1.0.0 -> 2.0.0",)
    assert changes["edited"].reasons == ("recipe changed",)
    assert changes["new"].installs
    assert changes["up"].installs
    assert not changes["conf"].installs
    assert not changes["same"].touches


def test_a_component_stopped_by_the_operator_is_started_again() -> None:
    current = {"a": Current("1.0.0", {}, "r1", run=False, state="STOPPED")}
    assert diff({"a": Desired("1.0.0", {}, "r1")}, current)["a"].kind == "restart"
