"""``keystonectl doctor [--root DIR] [-o json]``: a checklist of what this host can enforce.

Each line is a check with its status (ok, warn, fail, skip), what was found and how to fix
it; see :mod:`keystone_edge.isolation.doctor`. Exit code 0 when nothing failed, 1 otherwise.
Registered with ``cli.add_command(doctor.doctor)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from keystone_edge.cli._context import CliContext, output_option, print_json

__all__ = ["doctor"]

_MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
_STYLES = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


@click.command("doctor")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Agent root directory (default: the default agent's); socket: <root>/run/agent.sock.",
)
@output_option
@click.pass_context
def doctor(ctx: click.Context, root: Path | None) -> None:
    """Check that this host can run components the way their recipes ask."""
    from keystone_edge.isolation.doctor import default_socket, exit_code, run_checks
    from keystone_edge.layout import default_root

    obj = ctx.find_object(CliContext) or ctx.ensure_object(CliContext)
    socket_path = Path(obj.socket_path) if obj.socket_path and root is None else None
    checks = run_checks(
        root or default_root(),
        socket_path=socket_path or default_socket(root),
    )
    if obj.json:
        print_json(checks)
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("", "check", "finding", "fix"):
            table.add_column(column, overflow="fold")
        for check in checks:
            table.add_row(
                Text(_MARKS[check.status], style=_STYLES[check.status]),
                Text(check.name),
                Text(check.detail),
                Text(check.fix, style="dim"),
            )
        Console(highlight=False).print(table)
    sys.exit(exit_code(checks))
