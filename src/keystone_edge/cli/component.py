"""`keystonectl component ...` commands."""

from __future__ import annotations

import click

__all__ = ["component"]


@click.group()
def component() -> None:
    """component commands."""
