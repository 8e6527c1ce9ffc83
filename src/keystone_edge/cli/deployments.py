"""``keystonectl deploy apply|list|status|cancel``: deployments on a running agent."""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]

COMMANDS: list[click.Command] = []
