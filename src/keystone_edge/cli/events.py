"""``keystonectl events [-f] [--since ID]``: what happened on the agent, one line per event.

Without ``-f`` it prints the retained events after ``--since`` (all of them by default)
and exits; with ``-f`` it prints those after ``--since`` (none from the past when it is
not given) and then live events until Ctrl-C, with no gap between the two. ``-o json``
prints one JSON object per line (JSON Lines), the :class:`Event` as the API sends it.
If the agent goes away while following, the last line printed tells the ``--since`` to
resume from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import msgspec

from keystone_edge.cli._context import CliContext, output_option
from keystone_edge.cli.component import agent, compact, local_time

if TYPE_CHECKING:
    from keystone_edge.observe.events import Event

__all__ = ["events", "format_event"]


def format_event(event: Event) -> str:
    """``2026-11-26 12:00:01  #42  component.state  component=com.a to_state=RUNNING``."""
    fields = " ".join(f"{key}={compact(value)}" for key, value in event.payload.items())
    return f"{local_time(event.ts)}  #{event.id}  {event.type}  {fields}".rstrip()


@click.command("events")
@click.option("-f", "--follow", is_flag=True, help="Keep printing live events until Ctrl-C.")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=None,
    metavar="ID",
    help="Start after this event id (replayed from the agent's store).",
)
@output_option
@click.pass_obj
def events(ctx: CliContext, follow: bool, since: int | None) -> None:
    """Agent events: component state changes, health, deployment steps."""
    encode = msgspec.json.Encoder(enc_hook=str).encode
    if not follow and since is None:
        since = 0
    with agent(ctx) as client, client.stream_events(since, follow=follow) as subscription:
        for event in subscription:
            click.echo(encode(event).decode() if ctx.json else format_event(event))
