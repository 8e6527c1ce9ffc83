"""The agent's SQLite state store and the records it keeps."""

from keystone_edge.store.records import (
    ComponentRecord,
    DeploymentRecord,
    DeploymentStatus,
    StepRecord,
    StepStatus,
    TransitionRecord,
)
from keystone_edge.store.sqlite import MIGRATIONS, StateStore

__all__ = [
    "MIGRATIONS",
    "ComponentRecord",
    "DeploymentRecord",
    "DeploymentStatus",
    "StateStore",
    "StepRecord",
    "StepStatus",
    "TransitionRecord",
]
