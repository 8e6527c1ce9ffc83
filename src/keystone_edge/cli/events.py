"""`keystonectl events ...` commands."""

from __future__ import annotations

import click

__all__ = ["events"]


@click.group()
def events() -> None:
    """events commands."""
