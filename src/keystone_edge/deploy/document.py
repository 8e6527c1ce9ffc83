"""The deployment document (``deployment.toml``; YAML and JSON carry the same keys).

```toml
[deployment]
id = "2026-11-26-hello"          # generated when absent
description = "roll out hello 1.1"
failure_policy = "rollback"       # rollback | do_nothing
timeout = "10m"
sequence = 42                     # optional; anti-rollback ordering per source

remove = ["com.example.old"]      # components to remove (also accepted at top level)

[components."com.example.hello"]
version = "^1.1.0"                # exact version or npm-style semver range
config = { message = "hi" }       # deployment-level config overrides
```
"""

from __future__ import annotations

import os
from typing import Any, Literal

import msgspec

from keystone_edge.recipe.model import ComponentName
from keystone_edge.units import Duration

__all__ = ["ComponentRequest", "DeploymentDocument", "DeploymentSettings", "load_deployment"]


class _Section(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class DeploymentSettings(_Section):
    id: str | None = None
    description: str = ""
    failure_policy: Literal["rollback", "do_nothing"] = "rollback"
    timeout: Duration = msgspec.field(default_factory=lambda: Duration.parse("10m"))
    sequence: int | None = None
    remove: list[ComponentName] = msgspec.field(default_factory=list)


class ComponentRequest(_Section):
    version: str = "*"
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class DeploymentDocument(_Section):
    deployment: DeploymentSettings = msgspec.field(default_factory=DeploymentSettings)
    components: dict[ComponentName, ComponentRequest] = msgspec.field(default_factory=dict)
    remove: list[ComponentName] = msgspec.field(default_factory=list)

    @property
    def removals(self) -> list[str]:
        """Every component to remove, from ``remove`` and ``deployment.remove``."""
        return sorted({*self.remove, *self.deployment.remove})


def load_deployment(path: str | os.PathLike[str]) -> DeploymentDocument:
    """Read a deployment document (TOML, YAML or JSON by extension) and validate it.

    Every problem (unknown keys with a "did you mean", wrong types, bad durations, bad
    component names) is reported at once in one :class:`DeploymentError`, each with the
    file, key path and line.
    """
    from pathlib import Path

    from keystone_edge.documents import decode, read_document
    from keystone_edge.errors import DeploymentError

    source = read_document(Path(path), DeploymentError)
    return decode(source.data, DeploymentDocument, source, DeploymentError)
