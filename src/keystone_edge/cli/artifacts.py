"""``keystonectl artifacts list|gc``: the agent's artifact cache.

``list`` shows every cached artifact (short digest, file name, size, last use, the
component versions that reference it, whether garbage collection must keep it); ``gc``
collects now (``--dry-run``: only say what would go; ``--quota SIZE``: collect down to
another size than the configured quota, ``0`` for everything unprotected). ``-o json``
prints the API's records unchanged. Exit codes are those of :mod:`keystone_edge.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from keystone_edge.cli._context import CliContext, output_option, print_json
from keystone_edge.cli.component import agent, console, local_time, print_table

if TYPE_CHECKING:
    from keystone_edge.api.artifacts import GcOutcome

__all__ = ["artifacts", "human_size"]

_UNITS = ("KiB", "MiB", "GiB", "TiB")


def human_size(nbytes: int) -> str:
    """``1536`` -> ``1.5 KiB``; bytes below 1 KiB as ``512 B``."""
    if nbytes < 1024:
        return f"{nbytes} B"
    value = float(nbytes)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _quota(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    from keystone_edge.units import parse_size

    if value is None:
        return None
    try:
        return int(parse_size(value))
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group()
def artifacts() -> None:
    """The agent's artifact cache: what it holds, and garbage collection."""


@artifacts.command("list")
@output_option
@click.pass_obj
def list_(ctx: CliContext) -> None:
    """Cached artifacts, most recently used first."""
    from keystone_edge.api.artifacts import list_artifacts

    with agent(ctx) as client:
        items = list_artifacts(client)
    if ctx.json:
        print_json(items)
        return
    if not items:
        console().print("the artifact cache is empty")
        return
    items.sort(key=lambda i: (-i.last_used, i.sha256))
    print_table(
        ("SHA256", "NAME", "SIZE", "LAST USED", "REFERENCED BY", "KEPT"),
        [
            (
                i.sha256[:12],
                i.file,
                human_size(i.size),
                local_time(i.last_used),
                ", ".join(i.referenced_by) or "-",
                "yes" if i.protected else "-",
            )
            for i in items
        ],
    )
    total = sum(i.size for i in items)
    kept = sum(1 for i in items if i.protected)
    console().print(
        f"{len(items)} artifact{'s' if len(items) != 1 else ''}, {human_size(total)}; "
        f"{kept} kept for components in use, rollback or deployments"
    )


@artifacts.command("gc")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option(
    "--quota",
    metavar="SIZE",
    callback=_quota,
    help="Collect down to SIZE (e.g. 500Mi, 0) instead of the configured quota.",
)
@output_option
@click.pass_obj
def gc(ctx: CliContext, dry_run: bool, quota: int | None) -> None:
    """Remove least-recently-used artifacts while the cache exceeds its quota.

    Artifacts of component versions in use, of the previous versions kept for rollback
    and of running or queued deployments are never removed.
    """
    from keystone_edge.api.artifacts import gc_artifacts

    with agent(ctx) as client:
        outcome = gc_artifacts(client, dry_run=dry_run, quota_bytes=quota)
    if ctx.json:
        print_json(outcome)
        return
    _report(outcome)


def _report(outcome: GcOutcome) -> None:
    out = console()
    count = len(outcome.removed)
    sizes = (
        f"cache {human_size(outcome.total_bytes)} -> {human_size(outcome.remaining_bytes)}, "
        f"quota {human_size(outcome.quota_bytes)}"
    )
    if not count:
        out.print(f"nothing to remove ({sizes})")
    else:
        verb = "would remove" if outcome.dry_run else "removed"
        plural = "s" if count != 1 else ""
        out.print(
            f"{verb} {count} artifact{plural}, freeing {human_size(outcome.freed_bytes)} ({sizes})"
        )
        print_table(
            ("SHA256", "NAME", "SIZE", "LAST USED"),
            [
                (r.sha256[:12], r.file, human_size(r.size), local_time(r.last_used))
                for r in outcome.removed
            ],
        )
    if outcome.skipped:
        out.print(
            f"kept {len(outcome.skipped)} artifact(s) used while collecting: "
            + ", ".join(r.sha256[:12] for r in outcome.skipped)
        )
    if outcome.over_quota_bytes:
        out.print(
            f"the cache stays {human_size(outcome.over_quota_bytes)} over its quota: "
            "the rest is in use, kept for rollback or needed by a deployment"
        )
