"""``keystonectl deploy apply|list|status|cancel|rollback``: deployments on a running agent.

Rules:

- ``apply`` loads the document and the recipes here first: a mistake in them is reported
  with file, key and line (exit 1 for recipes, 5 for the document) before the agent is
  contacted. The artifacts directory is sent as an absolute path (the agent has its own
  working directory).
- ``apply --wait`` subscribes to the agent's events *before* submitting, so no step of
  this deployment can be missed; each of its ``deployment.*`` events (and each keep-alive,
  one a second) refreshes the record with ``GET /v1/deployments/{id}``, which is what is
  shown. If the event stream breaks, it falls back to polling. Exit 0 when the deployment
  succeeded, 1 when it failed, was rolled back or cancelled (the failed step's error is
  printed), or when ``--timeout`` passed first (the deployment goes on; the message says
  how to follow it).
- ``status`` exits 1 for a deployment that failed, was rolled back or cancelled, 0
  otherwise, so scripts can test it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from keystone_edge.cli._context import (
    EXIT_FAILED,
    CliContext,
    document_option,
    fail,
    output_option,
    print_json,
    recipe_dirs_option,
)
from keystone_edge.cli.component import agent, console, duration, local_time, print_table
from keystone_edge.errors import KeyStoneError, TransportError
from keystone_edge.units import parse_duration

if TYPE_CHECKING:
    from rich.console import RenderableType

    from keystone_edge.api.client import AgentClient, EventSubscription
    from keystone_edge.api.control import DeploymentRequest
    from keystone_edge.store.records import DeploymentRecord

__all__ = ["COMMANDS"]

FINISHED: Final = frozenset({"succeeded", "failed", "rolled_back", "cancelled"})
UNSUCCESSFUL: Final = frozenset({"failed", "rolled_back", "cancelled"})
_POLL_SECONDS: Final = 1.0


def _timeout(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(parse_duration(value))
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("apply")
@document_option
@recipe_dirs_option(required=False, help="Directory of recipes to send (repeat for several).")
@click.option(
    "--artifacts",
    "artifacts_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Local directory the agent searches for artifacts by file name.",
)
@click.option("--wait", is_flag=True, help="Show progress; exit when the deployment ends.")
@click.option(
    "--timeout",
    callback=_timeout,
    metavar="DURATION",
    help="With --wait: give up waiting after this long (e.g. 10m); the deployment goes on.",
)
@output_option
@click.pass_obj
def apply(
    ctx: CliContext,
    *,
    document_path: Path,
    recipe_dirs: tuple[Path, ...],
    artifacts_dir: Path | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Send a deployment to the agent; print its id (and, with --wait, its progress)."""
    request = _request(document_path, recipe_dirs, artifacts_dir)
    _submit(ctx, lambda client: client.submit_deployment(request), wait=wait, timeout=timeout)


def _submit(
    ctx: CliContext,
    submit: Callable[[AgentClient], DeploymentRecord],
    *,
    wait: bool,
    timeout: float | None,
) -> None:
    """Submit (apply or rollback), then print the id or follow the deployment to its end."""
    with agent(ctx) as client:
        # Subscribed before submitting: not one event of the new deployment is missed.
        subscription = client.stream_events(keepalive=1) if wait else None
        try:
            record = submit(client)
            if not wait:
                if ctx.json:
                    print_json(record)
                else:
                    click.echo(record.id)
                return
            if not ctx.json:
                click.echo(f"deployment {record.id} {record.status}")
            assert subscription is not None
            deadline = None if timeout is None else time.monotonic() + timeout
            record = _Waiter(client, subscription, record, live=not ctx.json).run(deadline)
        finally:
            if subscription is not None:
                subscription.close()
    if ctx.json:
        print_json(record)
    else:
        _summary(record)
    if record.status not in FINISHED:
        click.secho(
            f"error: gave up waiting for deployment {record.id} after {duration(timeout)}; "
            f"it is still {record.status}",
            fg="red",
            err=True,
        )
        click.echo(f"hint: follow it with `keystonectl deploy status {record.id}`", err=True)
        sys.exit(EXIT_FAILED)
    if record.status in UNSUCCESSFUL:
        sys.exit(EXIT_FAILED)


def _request(
    document_path: Path, recipe_dirs: tuple[Path, ...], artifacts_dir: Path | None
) -> DeploymentRequest:
    # Imported here: the other keystonectl commands should not pay for the loaders.
    from keystone_edge.api.control import DeploymentRequest
    from keystone_edge.deploy.document import load_deployment
    from keystone_edge.documents import to_builtins
    from keystone_edge.recipe import load_recipe_dir, recipe_to_builtins

    try:
        document = load_deployment(document_path)
        recipes = [
            recipe_to_builtins(loaded.recipe)
            for directory in recipe_dirs
            for loaded in load_recipe_dir(directory)
        ]
    except KeyStoneError as exc:
        fail(exc)
    return DeploymentRequest(
        document=to_builtins(document),
        recipes=recipes,
        artifacts_dir=str(artifacts_dir.resolve()) if artifacts_dir is not None else None,
    )


class _Waiter:
    """Follows one deployment to its end, drawing its steps as they change."""

    def __init__(
        self,
        client: AgentClient,
        subscription: EventSubscription,
        record: DeploymentRecord,
        *,
        live: bool,
    ) -> None:
        self.client = client
        self.subscription = subscription
        self.record = record
        self.live = live
        self._printed: set[tuple[int, str]] = set()
        self.downloads: dict[tuple[str, str], _Download] = {}

    def run(self, deadline: float | None) -> DeploymentRecord:
        out = console()
        if self.live and out.is_terminal:
            from rich.live import Live

            with Live(self._render(), console=out, auto_refresh=False) as display:
                self._follow(deadline, lambda: display.update(self._render(), refresh=True))
        else:
            self._follow(deadline, self._print_steps if self.live else lambda: None)
        return self.record

    def _follow(self, deadline: float | None, show: Callable[[], None]) -> None:
        try:
            for item in self.subscription.items():
                if item is not None and item.type == "artifact.progress":
                    if self._download(item.payload):
                        show()
                    continue
                # A keep-alive (once a second) or news of this deployment: look again.
                due = item is None or (
                    item.type.startswith("deployment.")
                    and item.payload.get("deployment_id") == self.record.id
                )
                if due and self._refresh(show):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
        except TransportError:
            pass  # the stream broke (agent restarting?): polling tells us which
        while not self._refresh(show):
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(_POLL_SECONDS)

    def _refresh(self, show: Callable[[], None]) -> bool:
        self.record = self.client.get_deployment(self.record.id)
        show()
        return self.record.status in FINISHED

    def _download(self, payload: dict[str, Any]) -> bool:
        """Track an ``artifact.progress`` event of one of this deployment's components."""
        component = str(payload.get("component"))
        if self.record.components.get(component) != payload.get("version"):
            return False
        key = (component, str(payload.get("uri")))
        now = time.monotonic()
        download = self.downloads.setdefault(key, _Download(started=now))
        download.done = int(payload.get("bytes_done") or 0)
        total = payload.get("bytes_total")
        download.total = int(total) if total is not None else None
        download.updated = now
        return True

    def _print_steps(self) -> None:
        for (component, uri), download in self.downloads.items():
            # Piped output: a line per second per download, and one when it completes.
            if download.updated - download.printed >= 1.0 or (
                download.complete and not download.reported_complete
            ):
                download.printed = download.updated
                download.reported_complete = download.complete
                click.echo(f"  {component}  download  {download.describe()}  {uri}")
        for step in self.record.steps:
            key = (step.seq, step.status)
            if key in self._printed:
                continue
            self._printed.add(key)
            took = step.finished_at - step.started_at if step.finished_at is not None else None
            line = f"  {step.component or '-'}  {step.name}  {step.status}"
            if took is not None:
                line += f"  {duration(took)}"
            if step.error:
                line += f"  {step.error}"
            click.echo(line)

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        record = self.record
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("COMPONENT", "STEP", "STATUS", "TIME", "ERROR"):
            table.add_column(column, overflow="fold")
        now = time.time()
        for step in record.steps:
            end = step.finished_at if step.finished_at is not None else now
            style = {"failed": "red", "done": "green", "running": "yellow"}.get(step.status, "")
            table.add_row(
                Text(step.component or "-"),
                Text(step.name),
                Text(step.status, style=style),
                Text(duration(end - step.started_at)),
                Text(step.error or ""),
            )
        lines: list[RenderableType] = [Text(f"deployment {record.id}: {record.status}"), table]
        for (component, uri), download in self.downloads.items():
            if not download.complete or record.status == "running":
                lines.append(Text(f"  {component}  download  {download.describe()}  {uri}"))
        return Group(*lines)


@dataclass
class _Download:
    """One artifact download as the progress events tell it."""

    started: float
    done: int = 0
    total: int | None = None
    updated: float = 0.0
    printed: float = 0.0
    reported_complete: bool = False

    @property
    def complete(self) -> bool:
        return self.total is not None and self.done >= self.total

    def describe(self) -> str:
        elapsed = max(self.updated - self.started, 1e-3)
        size = _bytes(self.done) + (f"/{_bytes(self.total)}" if self.total is not None else "")
        return f"{size}  {_bytes(int(self.done / elapsed))}/s"


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def _summary(record: DeploymentRecord) -> None:
    if record.status == "succeeded":
        click.echo(f"deployment {record.id} succeeded in {duration(record.duration)}")
        return
    if record.status not in FINISHED:
        return
    click.secho(f"deployment {record.id} {record.status}", fg="red", err=True)
    for step in record.steps:
        if step.status == "failed":
            where = f" of {step.component}" if step.component else ""
            click.echo(f"  step {step.name}{where} failed: {step.error}", err=True)
    if record.error:
        click.echo(f"  error: {record.error}", err=True)


@click.command("list")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="How many of the newest deployments to show.",
)
@output_option
@click.pass_obj
def list_(ctx: CliContext, limit: int) -> None:
    """Recent deployments, newest first."""
    with agent(ctx) as client:
        records = client.list_deployments(limit)
    if ctx.json:
        print_json(records)
        return
    if not records:
        click.echo("no deployments")
        return
    print_table(
        ("ID", "STATUS", "CREATED", "DURATION", "COMPONENTS"),
        [
            (
                r.id,
                r.status,
                local_time(r.created_at),
                duration(r.duration),
                _components(r),
            )
            for r in records
        ],
    )


def _components(record: DeploymentRecord) -> str:
    parts = [f"{name}@{version}" for name, version in sorted(record.components.items())]
    parts += [f"-{name}" for name in record.removals]
    return ", ".join(parts) or "-"


@click.command("status")
@click.argument("deployment_id", metavar="ID")
@output_option
@click.pass_obj
def status(ctx: CliContext, deployment_id: str) -> None:
    """One deployment: its plan, and every step with timing and error.

    Exits 1 when the deployment failed, was rolled back or was cancelled.
    """
    with agent(ctx) as client:
        record = client.get_deployment(deployment_id)
    if ctx.json:
        print_json(record)
    else:
        fields = [
            ("id", record.id),
            ("status", record.status),
            ("description", record.description or "-"),
            ("source", record.source),
            ("created", local_time(record.created_at)),
            ("started", local_time(record.started_at)),
            ("finished", local_time(record.finished_at)),
            ("duration", duration(record.duration)),
            ("components", _components(record)),
            ("error", record.error or "-"),
        ]
        for key, value in fields:
            click.echo(f"{key + ':':<13}{value}")
        if record.steps:
            click.echo()
            print_table(
                ("#", "COMPONENT", "STEP", "STATUS", "STARTED", "DURATION", "ERROR"),
                [
                    (
                        str(s.seq),
                        s.component or "-",
                        s.name,
                        s.status,
                        local_time(s.started_at),
                        duration(
                            s.finished_at - s.started_at if s.finished_at is not None else None
                        ),
                        s.error or "",
                    )
                    for s in record.steps
                ],
            )
    if record.status in UNSUCCESSFUL:
        sys.exit(EXIT_FAILED)


@click.command("cancel")
@click.argument("deployment_id", metavar="ID")
@output_option
@click.pass_obj
def cancel(ctx: CliContext, deployment_id: str) -> None:
    """Cancel a queued or running deployment."""
    with agent(ctx) as client:
        record = client.cancel_deployment(deployment_id)
    if ctx.json:
        print_json(record)
    else:
        click.echo(f"deployment {record.id}: {record.status}")


@click.command("rollback")
@click.option("--wait", is_flag=True, help="Show progress; exit when the rollback ends.")
@click.option(
    "--timeout",
    callback=_timeout,
    metavar="DURATION",
    help="With --wait: give up waiting after this long (e.g. 10m); the rollback goes on.",
)
@output_option
@click.pass_obj
def rollback(ctx: CliContext, wait: bool, timeout: float | None) -> None:
    """Redeploy the successful deployment before the last successful one.

    An explicit rollback: the anti-rollback guard (a lower sequence number than the last
    applied deployment is refused) does not apply to it.
    """
    _submit(ctx, lambda client: client.rollback_deployment(), wait=wait, timeout=timeout)


COMMANDS: list[click.Command] = [apply, list_, status, cancel, rollback]
