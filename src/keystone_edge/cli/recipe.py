"""`keystonectl recipe ...` commands."""

from __future__ import annotations

import click

__all__ = ["recipe"]


@click.group()
def recipe() -> None:
    """recipe commands."""
