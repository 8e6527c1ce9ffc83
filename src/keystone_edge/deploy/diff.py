"""What a deployment changes on the device: the desired state compared with the current one.

Sans-IO: given the resolved plan (name -> version and effective config, per layer) and the
current component records, decide per component:

- ``add``: not installed yet -> fetch, install, start, wait ready;
- ``update``: another version is installed -> fetch, install, stop old, start new, ready;
- ``reconfigure``: same version, different effective config or recipe -> stop, start, ready
  (no install: install scripts run only when the version changes);
- ``restart``: same version and config, but it should run and is not (stopped by an
  operator, or FAILED) -> start, ready;
- ``unchanged``: left running, untouched;
- ``remove``: listed for removal -> stop, forget.

Components outside the plan and not removed are not touched at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Change", "ChangeKind", "Current", "Desired", "diff"]

ChangeKind = Literal["add", "update", "reconfigure", "restart", "unchanged", "remove"]

# States in which a component that should run is in fact running (or on its way).
_LIVE_STATES = frozenset({"STARTING", "RUNNING", "DEGRADED"})


@dataclass(frozen=True)
class Current:
    """What the device has for one component now."""

    version: str | None
    config: Mapping[str, Any]
    recipe_digest: str | None
    run: bool
    state: str


@dataclass(frozen=True)
class Desired:
    version: str
    config: Mapping[str, Any]
    recipe_digest: str


@dataclass(frozen=True)
class Change:
    name: str
    kind: ChangeKind
    from_version: str | None = None
    to_version: str | None = None
    reasons: tuple[str, ...] = field(default=())

    @property
    def touches(self) -> bool:
        return self.kind != "unchanged"

    @property
    def installs(self) -> bool:
        return self.kind in ("add", "update")


def diff(
    desired: Mapping[str, Desired],
    current: Mapping[str, Current],
    removals: Sequence[str] = (),
) -> dict[str, Change]:
    """One :class:`Change` per planned or removed component."""
    changes: dict[str, Change] = {}
    for name, want in desired.items():
        have = current.get(name)
        if have is None or have.version is None:
            changes[name] = Change(name, "add", None, want.version, ("new component",))
        elif have.version != want.version:
            changes[name] = Change(
                name, "update", have.version, want.version, (f"{have.version} -> {want.version}",)
            )
        else:
            reasons: list[str] = []
            if dict(have.config) != dict(want.config):
                keys = sorted(
                    k
                    for k in {*have.config, *want.config}
                    if have.config.get(k) != want.config.get(k)
                )
                reasons.append("config changed: " + ", ".join(keys))
            if have.recipe_digest is not None and have.recipe_digest != want.recipe_digest:
                reasons.append("recipe changed")
            if reasons:
                changes[name] = Change(
                    name, "reconfigure", have.version, want.version, tuple(reasons)
                )
            elif not have.run or have.state not in _LIVE_STATES:
                changes[name] = Change(
                    name, "restart", have.version, want.version, (f"was {have.state}",)
                )
            else:
                changes[name] = Change(name, "unchanged", have.version, want.version)
    for name in removals:
        have = current.get(name)
        changes[name] = Change(name, "remove", have.version if have else None, None, ("removed",))
    return changes
