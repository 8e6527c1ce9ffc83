"""``keystonectl``: the operator's command line.

Exit codes a script can rely on:

====  ==========================================================
0     success
1     the thing asked about is bad or failed (invalid recipe, failed deployment)
2     usage error (click's own)
3     the agent could not be reached
4     not found (component, deployment)
5     the agent refused the request (bad request, conflict)
====  ==========================================================
"""

from __future__ import annotations

import sys

import click

from keystone_edge.cli._context import CliContext, fail
from keystone_edge.errors import KeyStoneError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    "socket_path",
    envvar="KEYSTONE_SOCKET",
    metavar="PATH",
    help="Agent API socket (default: $KEYSTONE_SOCKET, else the default agent's socket).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.version_option(package_name="keystone-edge")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, output: str) -> None:
    """Inspect and control a KeyStone agent, and work with recipes and deployments."""
    ctx.obj = CliContext(socket_path=socket_path, output=output)


def _register() -> None:
    from keystone_edge.cli import (
        artifacts,
        component,
        deploy,
        deployments,
        doctor,
        events,
        recipe,
    )

    cli.add_command(recipe.recipe)
    cli.add_command(deploy.deploy)
    for command in deployments.COMMANDS:
        deploy.deploy.add_command(command)
    cli.add_command(component.component)
    cli.add_command(events.events)
    cli.add_command(artifacts.artifacts)
    cli.add_command(doctor.doctor)


_register()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyStoneError as exc:
        fail(exc)
