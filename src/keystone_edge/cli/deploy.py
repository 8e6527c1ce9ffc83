"""`keystonectl deploy ...` commands.

``plan`` works offline, on files: it resolves a deployment document against a directory of
recipes and shows what would start, in which order, and why. Resolution failures exit 1
(:data:`keystone_edge.cli._context.EXIT_FAILED`), with the resolver's message and hint.
"""

from __future__ import annotations

from pathlib import Path

import click

from keystone_edge.cli._context import (
    CliContext,
    document_option,
    fail,
    output_option,
    print_json,
    recipe_dirs_option,
)
from keystone_edge.errors import KeyStoneError

__all__ = ["deploy"]


@click.group()
def deploy() -> None:
    """Plan and apply deployments."""


# --------------------------------------------------------------------------- plan


@deploy.command("plan")
@document_option
@recipe_dirs_option(required=True, help="Directory of recipes to choose from (repeat for several).")
@output_option
@click.pass_obj
def plan(ctx: CliContext, document_path: Path, recipe_dirs: tuple[Path, ...]) -> None:
    """Resolve a deployment against local recipes: versions, start order, and why.

    Nothing is installed or started; the agent is not contacted.
    """
    # Imported here: other keystonectl commands should not pay for the loaders.
    from keystone_edge.deploy.document import load_deployment
    from keystone_edge.deploy.resolve import resolve
    from keystone_edge.recipe import load_recipe_dir

    try:
        document = load_deployment(document_path)
        recipes = [loaded.recipe for d in recipe_dirs for loaded in load_recipe_dir(d)]
        result = resolve(document, recipes)
    except KeyStoneError as exc:
        fail(exc)

    if ctx.json:
        print_json(
            {
                "components": result.versions,
                "layers": result.layers,
                "removals": result.removals,
            }
        )
        return

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not result.components and not result.removals:
        console.print("nothing to deploy")
        return
    if result.components:
        table = Table(box=None, pad_edge=False)
        for column in ("COMPONENT", "VERSION", "RANGES", "WHY", "LAYER"):
            table.add_column(column, overflow="fold")
        layer_of = {name: i for i, layer in enumerate(result.layers) for name in layer}
        for name in sorted(result.components, key=lambda n: (layer_of[n], n)):
            # Text cells: ranges and names are data, never rich markup.
            table.add_row(
                Text(name),
                Text(result.components[name].version),
                Text("\n".join(str(c) for c in result.constraints.get(name, ()))),
                Text(", ".join(result.requested_by.get(name, ()))),
                Text(str(layer_of[name])),
            )
        console.print(table)
        console.print()
        for i, layer in enumerate(result.layers):
            console.print(f"layer {i}: {', '.join(layer)}", highlight=False)
    if result.removals:
        console.print(f"remove: {', '.join(result.removals)}", highlight=False)
