"""The lifecycle table: every move it allows, every move it refuses, and its picture."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import pytest

from keystone_edge.errors import InvalidTransition
from keystone_edge.supervise.lifecycle import (
    ACTIVE_STATES,
    TRANSITIONS,
    State,
    Trigger,
    apply,
    render_markdown,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"
INVALID = [(s, t) for s in State for t in Trigger if (s, t) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "trigger"), list(TRANSITIONS))
def test_every_transition_in_the_table_applies(state: State, trigger: Trigger) -> None:
    assert apply("com.example.app", state, trigger) is TRANSITIONS[state, trigger]


@pytest.mark.parametrize(("state", "trigger"), INVALID)
def test_every_other_move_raises_naming_component_state_and_trigger(
    state: State, trigger: Trigger
) -> None:
    with pytest.raises(InvalidTransition) as info:
        apply("com.example.app", state, trigger)
    assert str(info.value) == (
        f"com.example.app: event {trigger.value} is not valid in state {state.value}"
    )
    assert (info.value.component, info.value.state, info.value.event) == (
        "com.example.app",
        state.value,
        trigger.value,
    )


def walk(path: list[Trigger], start: State = State.NONE) -> list[State]:
    states = [start]
    for trigger in path:
        states.append(apply("c", states[-1], trigger))
    return states


@pytest.mark.parametrize(
    ("story", "path", "end"),
    [
        ("happy path", ["INSTALLED_OK", "START", "READY", "STOP", "STOPPED"], State.STOPPED),
        ("install fails", ["INSTALL_FAILED"], State.FAILED),
        (
            "exit while starting, restarted",
            ["INSTALLED_OK", "START", "RESTART_SCHEDULED", "READY"],
            State.RUNNING,
        ),
        ("exit while starting, given up", ["INSTALLED_OK", "START", "GIVE_UP"], State.FAILED),
        ("stop while starting", ["INSTALLED_OK", "START", "STOP", "STOPPED"], State.STOPPED),
        ("spawn fails", ["INSTALLED_OK", "START", "SPAWN_FAILED"], State.FAILED),
        (
            "degraded and back",
            ["INSTALLED_OK", "START", "READY", "PROBE_FAILED", "PROBE_RECOVERED"],
            State.RUNNING,
        ),
        (
            "unhealthy restart",
            [
                "INSTALLED_OK",
                "START",
                "READY",
                "PROBE_FAILED",
                "STOP",
                "RESTART_SCHEDULED",
                "READY",
            ],
            State.RUNNING,
        ),
        (
            "unhealthy, retries exhausted",
            ["INSTALLED_OK", "START", "READY", "PROBE_FAILED", "STOP", "GIVE_UP"],
            State.FAILED,
        ),
        ("clean exit, not restarted", ["INSTALLED_OK", "START", "READY", "EXITED"], State.STOPPED),
        (
            "operator restart from FAILED",
            ["INSTALL_FAILED", "INSTALLED_OK", "START", "GIVE_UP", "START", "READY"],
            State.RUNNING,
        ),
        (
            "operator restart while running",
            ["INSTALLED_OK", "START", "READY", "STOP", "START"],
            State.STARTING,
        ),
        (
            "version update",
            ["INSTALLED_OK", "START", "READY", "STOP", "INSTALLED_OK", "START"],
            State.STARTING,
        ),
        (
            "update fails",
            ["INSTALLED_OK", "START", "READY", "STOP", "INSTALL_FAILED"],
            State.FAILED,
        ),
        ("removed", ["INSTALLED_OK", "START", "READY", "STOP", "STOPPED", "REMOVE"], State.NONE),
        ("supervisor bug", ["INSTALLED_OK", "START", "ERROR"], State.FAILED),
    ],
)
def test_real_paths(story: str, path: list[str], end: State) -> None:
    assert walk([Trigger(t) for t in path])[-1] is end, story


def test_the_update_path_goes_stopping_to_installed_directly() -> None:
    states = walk([Trigger(t) for t in ["INSTALLED_OK", "START", "READY", "STOP", "INSTALLED_OK"]])
    assert states[-3:] == [State.RUNNING, State.STOPPING, State.INSTALLED]


def test_every_state_is_reachable_and_none_is_a_dead_end() -> None:
    seen = {State.NONE}
    queue = deque([State.NONE])
    while queue:
        state = queue.popleft()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                queue.append(target)
    assert seen == set(State)
    for state in State:
        assert any(
            source is state and target is not state for (source, _), target in TRANSITIONS.items()
        )


def test_failed_is_left_only_by_an_operator_or_a_new_install() -> None:
    ways_out = {
        t
        for (s, t), target in TRANSITIONS.items()
        if s is State.FAILED and target is not State.FAILED
    }
    assert ways_out == {Trigger.START, Trigger.INSTALLED_OK, Trigger.REMOVE}


def test_active_states_are_those_that_can_be_stopped() -> None:
    stoppable = {s for (s, t) in TRANSITIONS if t in (Trigger.STOP, Trigger.STOPPED)}
    assert stoppable == ACTIVE_STATES


def test_docs_embed_the_diagram_generated_from_the_table() -> None:
    text = DOC.read_text()
    match = re.search(
        r"<!-- BEGIN GENERATED: lifecycle -->\n(.*)\n<!-- END GENERATED: lifecycle -->", text, re.S
    )
    assert match, "docs/lifecycle.md lost its generated block markers"
    assert match.group(1) == render_markdown(), (
        "docs/lifecycle.md is out of date: paste the output of `python -c 'from "
        "keystone_edge.supervise.lifecycle import render_markdown; print(render_markdown())'` "
        "between the markers"
    )
    for (state, trigger), target in TRANSITIONS.items():
        assert f"| {state} | {trigger} | {target} |" in text
