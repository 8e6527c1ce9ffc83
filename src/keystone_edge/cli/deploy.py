"""`keystonectl deploy ...` commands."""

from __future__ import annotations

import click

__all__ = ["deploy"]


@click.group()
def deploy() -> None:
    """deploy commands."""
