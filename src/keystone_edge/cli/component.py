"""``keystonectl component list|status|logs|restart|stop|start``: what runs, and why.

Every command talks to the agent through :class:`~keystone_edge.api.client.AgentClient`
and fails through :func:`~keystone_edge.cli._context.fail`, so the exit codes are the
ones in :mod:`keystone_edge.cli` (3: agent unreachable, 4: no such component, ...).
Tables are for people (rich, local time, human durations); ``-o json`` prints the API's
records unchanged, for scripts.

This module also holds the few helpers the other agent commands (``deploy
apply|list|status|cancel``, ``events``) share: opening the client, time formatting and
tables. Rich is imported only when a table is drawn.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
import msgspec

from keystone_edge.cli._context import CliContext, fail, output_option, print_json
from keystone_edge.errors import KeyStoneError

if TYPE_CHECKING:
    from rich.console import Console

    from keystone_edge.api.client import AgentClient
    from keystone_edge.api.control import ComponentAction
    from keystone_edge.store.records import ComponentRecord

__all__ = ["component"]


# -- shared by the commands that talk to the agent ---------------------------------------


@contextmanager
def agent(ctx: CliContext) -> Iterator[AgentClient]:
    """A client for the agent at ``--socket``; any KeyStoneError becomes exit code + message."""
    from keystone_edge.api.client import AgentClient

    try:
        with AgentClient(ctx.socket_path) as client:
            yield client
    except KeyStoneError as exc:
        fail(exc)
    except KeyboardInterrupt:
        # Ctrl-C ends a follow (logs -f, events -f, deploy apply --wait); not an error.
        sys.exit(130)


def console() -> Console:
    from rich.console import Console

    # Piped output (scripts, `| grep`) gets wide lines rather than names folded at 80.
    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=False, width=width)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, show_edge=False)
    for index, column in enumerate(columns):
        # The first column is the key (a name or an id): never fold it.
        table.add_column(column, overflow="fold", no_wrap=index == 0)
    for row in rows:
        # Text cells: names and messages are data, never rich markup.
        table.add_row(*(Text(cell) for cell in row))
    console().print(table)


def local_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h07m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def since(ts: float | None) -> str:
    if not ts:
        return "-"
    return duration(max(0.0, time.time() - ts))


def compact(value: Any) -> str:
    """A payload or config value on one line: strings bare unless they need quotes."""
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in '"=' for c in value) else _json(value)
    return _json(value)


def _json(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=str).decode()


# -- the commands -------------------------------------------------------------------------


@click.group()
def component() -> None:
    """Inspect and control the components the agent runs."""


@component.command("list")
@output_option
@click.pass_obj
def list_(ctx: CliContext) -> None:
    """Every component: version, state, pid, restarts, time in state, reason."""
    with agent(ctx) as client:
        records = client.list_components()
    if ctx.json:
        print_json(records)
        return
    if not records:
        click.echo("no components")
        return
    print_table(
        ("NAME", "VERSION", "STATE", "PID", "RESTARTS", "SINCE", "REASON"),
        [
            (
                r.name,
                _version(r),
                r.state,
                str(r.pid) if r.pid is not None else "-",
                str(r.restarts),
                since(r.updated_at),
                r.reason,
            )
            for r in records
        ],
    )


def _version(record: ComponentRecord) -> str:
    installed = record.version or "-"
    if record.desired_version is None:
        return f"{installed} (removing)"
    if record.desired_version != record.version:
        return f"{installed} -> {record.desired_version}"
    return installed


def _exit(record: ComponentRecord) -> str:
    if record.last_signal is not None:
        try:
            name = signal.Signals(record.last_signal).name
        except ValueError:
            name = "unknown"
        return f"signal {record.last_signal} ({name})"
    if record.last_exit_code is not None:
        return f"code {record.last_exit_code}"
    return "-"


def _health(health: dict[str, Any] | None) -> str:
    if not health:
        return "-"
    if "ok" not in health:
        return " ".join(f"{key}={compact(value)}" for key, value in health.items())
    text = ("ok" if health["ok"] else "failing") + f": {health.get('detail', '')}"
    latency = health.get("latency")
    if isinstance(latency, int | float):
        text += f" ({duration(latency)})"
    if health.get("failures"):
        text += f", {health['failures']} consecutive failures"
    return text


@component.command("status")
@click.argument("name")
@output_option
@click.pass_obj
def status(ctx: CliContext, name: str) -> None:
    """One component in detail: state, health, last exit and recent transitions."""
    with agent(ctx) as client:
        detail = client.get_component(name)
    if ctx.json:
        print_json(detail)
        return
    r = detail.component
    state = r.state + (" (ready)" if detail.ready else "")
    if not r.run:
        state += " (stopped by the operator)"
    fields = [
        ("name", r.name),
        ("version", _version(r)),
        ("state", state),
        ("pid", str(r.pid) if r.pid is not None else "-"),
        ("uptime", duration(detail.uptime)),
        ("restarts", str(r.restarts)),
        ("last exit", _exit(r)),
        ("reason", r.reason or "-"),
        ("deployment", r.deployment_id or "-"),
        ("health", _health(detail.health)),
        ("config", compact(r.config)),
    ]
    for key, value in fields:
        click.echo(f"{key + ':':<12}{value}")
    click.echo()
    if not detail.transitions:
        click.echo("no transitions recorded")
        return
    click.echo("recent transitions (oldest first):")
    print_table(
        ("TIME", "FROM", "TO", "REASON"),
        [(local_time(t.at), t.from_state, t.to_state, t.reason) for t in detail.transitions],
    )


@component.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "--tail",
    "lines",
    type=click.IntRange(0, 10_000),
    default=100,
    show_default=True,
    help="Lines from the end of the log to start with.",
)
@output_option
@click.pass_obj
def logs(ctx: CliContext, name: str, follow: bool, lines: int) -> None:
    """The component's output (stdout, stderr and its lifecycle scripts), with timestamps."""
    with agent(ctx) as client, client.stream_logs(name, tail=lines, follow=follow) as stream:
        for line in stream:
            if ctx.json:
                click.echo(_json({"component": name, "line": line}))
            else:
                click.echo(line)


def _action(verb: ComponentAction, done: str, summary: str) -> click.Command:
    @click.command(verb, help=summary)
    @click.argument("name")
    @output_option
    @click.pass_obj
    def command(ctx: CliContext, name: str) -> None:
        with agent(ctx) as client:
            record = client.component_action(name, verb)
        if ctx.json:
            print_json(record)
            return
        pid = f", pid {record.pid}" if record.pid is not None else ""
        click.echo(f"{done} {record.name}: {record.state}{pid}")

    return command


component.add_command(
    _action("restart", "restarted", "Restart a component: stop it, then start it again.")
)
component.add_command(
    _action(
        "stop",
        "stopped",
        "Stop a component. It stays stopped, across agent restarts too, until `start`.",
    )
)
component.add_command(_action("start", "started", "Start a component stopped with `stop`."))
