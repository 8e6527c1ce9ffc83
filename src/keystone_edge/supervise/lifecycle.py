"""The component lifecycle: one table of states and triggers, one ``apply`` function.

Rules (h11's approach: a state machine is data, and any other move is an error):

- :data:`TRANSITIONS` is the only place that says which trigger moves a component from
  which state to which. The supervisor changes a component's state only through
  :func:`apply`, which raises :class:`~keystone_edge.errors.InvalidTransition` naming the
  component, the state and the trigger for anything not in the table.
- Triggers are facts or decisions made elsewhere (the process exited, the restart tracker
  chose to restart, the operator asked to stop); this module makes no decision of its own
  and does no I/O.
- ``docs/lifecycle.md`` embeds :func:`render_markdown`'s output; a test keeps the two equal.

The main path is ``NONE -> INSTALLED -> STARTING -> RUNNING <-> DEGRADED -> STOPPING ->
STOPPED``. ``STARTING`` also covers "waiting out a restart backoff" (there is no process
then). ``FAILED`` means the supervisor stopped trying: install failed, the process could not
be spawned, retries are exhausted, or policy ``never`` saw a failure; only an operator
(``START``) or a new install leaves it.
"""

from __future__ import annotations

import enum
from collections import defaultdict

from keystone_edge.errors import InvalidTransition

__all__ = [
    "ACTIVE_STATES",
    "TRANSITIONS",
    "State",
    "Trigger",
    "apply",
    "render_markdown",
    "render_mermaid",
]


class State(enum.StrEnum):
    NONE = "NONE"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class Trigger(enum.StrEnum):
    INSTALLED_OK = "INSTALLED_OK"  # the install script succeeded (or there is none)
    INSTALL_FAILED = "INSTALL_FAILED"  # the install script failed or timed out
    START = "START"  # start requested (deployment, operator restart, resume)
    SPAWN_FAILED = "SPAWN_FAILED"  # the process could not be created at all
    READY = "READY"  # first probe passed, or (no probe) it stayed up start_period
    PROBE_FAILED = "PROBE_FAILED"  # consecutive probe failures reached the threshold
    PROBE_RECOVERED = "PROBE_RECOVERED"  # a probe passed again
    RESTART_SCHEDULED = "RESTART_SCHEDULED"  # the process ended; the policy restarts it
    EXITED = "EXITED"  # the process ended and the policy does not restart it
    GIVE_UP = "GIVE_UP"  # the process failed and will not be restarted (retries, never)
    STOP = "STOP"  # stop requested (operator, update, or an unhealthy restart)
    STOPPED = "STOPPED"  # the process and its group are gone after a stop
    REMOVE = "REMOVE"  # the component is forgotten
    ERROR = "ERROR"  # the supervisor itself failed for this component (a bug)


_S, _T = State, Trigger

TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (_S.NONE, _T.INSTALLED_OK): _S.INSTALLED,
    (_S.NONE, _T.INSTALL_FAILED): _S.FAILED,
    (_S.INSTALLED, _T.INSTALLED_OK): _S.INSTALLED,
    (_S.INSTALLED, _T.INSTALL_FAILED): _S.FAILED,
    (_S.INSTALLED, _T.START): _S.STARTING,
    (_S.INSTALLED, _T.REMOVE): _S.NONE,
    (_S.STARTING, _T.READY): _S.RUNNING,
    (_S.STARTING, _T.PROBE_FAILED): _S.DEGRADED,  # never passed, failing past start_period
    (_S.STARTING, _T.SPAWN_FAILED): _S.FAILED,
    (_S.STARTING, _T.RESTART_SCHEDULED): _S.STARTING,  # exited while starting
    (_S.STARTING, _T.EXITED): _S.STOPPED,
    (_S.STARTING, _T.GIVE_UP): _S.FAILED,
    (_S.STARTING, _T.STOP): _S.STOPPING,
    (_S.RUNNING, _T.PROBE_FAILED): _S.DEGRADED,
    (_S.RUNNING, _T.RESTART_SCHEDULED): _S.STARTING,
    (_S.RUNNING, _T.EXITED): _S.STOPPED,
    (_S.RUNNING, _T.GIVE_UP): _S.FAILED,
    (_S.RUNNING, _T.STOP): _S.STOPPING,
    (_S.DEGRADED, _T.PROBE_RECOVERED): _S.RUNNING,
    (_S.DEGRADED, _T.RESTART_SCHEDULED): _S.STARTING,
    (_S.DEGRADED, _T.EXITED): _S.STOPPED,
    (_S.DEGRADED, _T.GIVE_UP): _S.FAILED,
    (_S.DEGRADED, _T.STOP): _S.STOPPING,
    (_S.STOPPING, _T.STOPPED): _S.STOPPED,
    (_S.STOPPING, _T.START): _S.STARTING,  # operator restart
    (_S.STOPPING, _T.RESTART_SCHEDULED): _S.STARTING,  # unhealthy restart
    (_S.STOPPING, _T.GIVE_UP): _S.FAILED,  # unhealthy restart, retries exhausted
    (_S.STOPPING, _T.INSTALLED_OK): _S.INSTALLED,  # version update: old stopped, new installed
    (_S.STOPPING, _T.INSTALL_FAILED): _S.FAILED,
    (_S.STOPPED, _T.START): _S.STARTING,
    (_S.STOPPED, _T.INSTALLED_OK): _S.INSTALLED,
    (_S.STOPPED, _T.INSTALL_FAILED): _S.FAILED,
    (_S.STOPPED, _T.REMOVE): _S.NONE,
    (_S.FAILED, _T.START): _S.STARTING,  # operator restart / resume
    (_S.FAILED, _T.INSTALLED_OK): _S.INSTALLED,  # a fixed version (or a rollback) installed
    (_S.FAILED, _T.INSTALL_FAILED): _S.FAILED,
    (_S.FAILED, _T.REMOVE): _S.NONE,
}
# A supervisor bug must not leave a component in a state that lies; from anywhere it fails.
TRANSITIONS.update({(state, _T.ERROR): _S.FAILED for state in State})

ACTIVE_STATES = frozenset({State.STARTING, State.RUNNING, State.DEGRADED, State.STOPPING})
"""States in which a process may exist or a restart may be pending."""


def apply(component: str, state: State, trigger: Trigger) -> State:
    """The state ``trigger`` moves ``component`` to from ``state``, or raise InvalidTransition."""
    try:
        return TRANSITIONS[state, trigger]
    except KeyError:
        raise InvalidTransition(component, state.value, trigger.value) from None


def render_mermaid() -> str:
    """A Mermaid ``stateDiagram-v2`` of :data:`TRANSITIONS` (edges grouped, table order)."""
    edges: dict[tuple[State, State], list[Trigger]] = defaultdict(list)
    for (source, trigger), target in TRANSITIONS.items():
        edges[source, target].append(trigger)
    lines = ["stateDiagram-v2", "    [*] --> NONE"]
    for (source, target), triggers in edges.items():
        lines.append(f"    {source} --> {target}: {', '.join(triggers)}")
    return "\n".join(lines)


def render_markdown() -> str:
    """The generated part of ``docs/lifecycle.md``: the diagram and the full table."""
    rows = ["| from | trigger | to |", "|---|---|---|"]
    rows += [f"| {s} | {t} | {to} |" for (s, t), to in TRANSITIONS.items()]
    return "\n".join(["```mermaid", render_mermaid(), "```", "", *rows])
