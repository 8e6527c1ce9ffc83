"""Shared CLI plumbing: the context object, output helpers and error-to-exit-code mapping."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
import msgspec

from keystone_edge.errors import KeyStoneError, NotFound, TransportError

__all__ = [
    "EXIT_FAILED",
    "CliContext",
    "exit_code_for",
    "fail",
    "document_option",
    "output_option",
    "recipe_dirs_option",
    "print_json",
]

F = TypeVar("F")

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5


@dataclass
class CliContext:
    socket_path: str | None
    output: str  # "table" | "json"

    @property
    def json(self) -> bool:
        return self.output == "json"


def print_json(value: Any) -> None:
    """Print any msgspec-encodable value as indented JSON on stdout."""
    click.echo(msgspec.json.format(msgspec.json.encode(value, enc_hook=str), indent=2))


# The agent understood the request and refused it in its current state.
_REFUSED = frozenset(
    {
        "bad_request",
        "conflict",
        "invalid_transition",
        "method_not_allowed",
        "payload_too_large",
        "stale_deployment",
    }
)


def exit_code_for(exc: KeyStoneError) -> int:
    """The documented exit code for an error (see the ``keystonectl`` docstring)."""
    if isinstance(exc, TransportError):
        return EXIT_UNREACHABLE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if exc.code in _REFUSED:
        return EXIT_REFUSED
    # Invalid recipes, documents and configs, unresolvable deployments, failed ones.
    return EXIT_FAILED


def fail(exc: KeyStoneError) -> NoReturn:
    """Print the error (and its hint) the way a user should read it, then exit."""
    click.secho(f"error: {exc}", fg="red", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(exit_code_for(exc))


def output_option(func: F) -> F:
    """``-o/--output table|json`` on a subcommand; overrides the global option when given."""

    def store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(CliContext).output = value

    return click.option(  # type: ignore[type-var]
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        default=None,
        expose_value=False,
        callback=store,
        help="Output format (default: table).",
    )(func)


def document_option(func: F) -> F:
    """``-f/--file``: a deployment document."""
    from pathlib import Path

    return click.option(  # type: ignore[type-var]
        "-f",
        "--file",
        "document_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Deployment document (deployment.toml; YAML and JSON work too).",
    )(func)


def recipe_dirs_option(*, required: bool, help: str) -> Callable[[F], F]:
    """``--recipes DIR`` (repeatable): directories of recipes."""
    from pathlib import Path

    return click.option(  # type: ignore[return-value]
        "--recipes",
        "recipe_dirs",
        required=required,
        multiple=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help=help,
    )
