"""Deployments: the document, version resolution and the start plan."""

from __future__ import annotations

from keystone_edge.deploy.resolve import Constraint, ConstraintKind, Plan, resolve

__all__ = ["Constraint", "ConstraintKind", "Plan", "resolve"]
