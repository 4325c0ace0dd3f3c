"""``evtctl events [--kind K] [--name N] [--category C] [--actor A] [--since POSITION] [--follow]``.

The current tenant's events in position order (``eventplane.runner.follow_events``):
a table by default, one CloudEvents JSON document per line with ``-o json``. ``--follow``
keeps streaming new events until interrupted (Ctrl-C / SIGTERM) and never skips one — it
follows the store's gap-safe ``read_all(after=…)``. ``--actor`` is the incident-response
view: every event recorded for that actor, its admitted intents and the ``IntentRejected``
facts of its refused ones alike.
"""

from __future__ import annotations

import asyncio

import click

from eventplane.event.cloudevents import encode
from eventplane.event.model import Category
from eventplane.runner import follow_events, install_signal_handlers
from eventplane.store import EventFilter
from eventplane.utils import format_time
from evtctl.commands._common import run
from evtctl.commands.apply import _resolve_kind
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli

__all__ = ["events"]


@click.command("events")
@click.option("--kind", help="Only events of this kind.")
@click.option("--name", help="Only events of resources with this name.")
@click.option(
    "--category", type=click.Choice([c.value for c in Category]), help="Only this category."
)
@click.option(
    "--actor",
    "actors",
    multiple=True,
    help="Only events recorded for this actor (repeatable): what an actor did, accepted or "
    "rejected.",
)
@click.option("--since", type=click.IntRange(min=0), default=0, help="Start after this position.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new events.")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def events(
    cli: CliContext,
    kind: str | None,
    name: str | None,
    category: str | None,
    actors: tuple[str, ...],
    since: int,
    follow: bool,
    output: str | None,
) -> None:
    """List the event log of the current tenant in position order."""
    settings = cli.settings()
    flt = EventFilter(
        kinds=(_resolve_kind(cli, kind),) if kind else (),
        names=(name,) if name else (),
        categories=(Category(category),) if category else (),
        actors=actors,
    )
    fmt = cli.output_format(output, "table")

    async def stream() -> None:
        stop = asyncio.Event()
        remove = install_signal_handlers(stop)
        try:
            if fmt == "table":
                click.echo(
                    f"{'POSITION':>8}  {'TIME':<27}  {'CATEGORY':<8}  {'TYPE':<32}  "
                    f"{'NAME':<20}  ACTOR"
                )
            async for event in follow_events(
                settings, filter=flt, since=since, follow=follow, stop_event=stop
            ):
                if fmt == "table":
                    meta = event.metadata
                    line = (
                        f"{meta.position:>8}  {format_time(meta.occurred_at):<27}  "
                        f"{event.category.value:<8}  {event.type:<32}  {event.name:<20}  "
                        f"{meta.actor}"
                    )
                else:
                    line = encode(event).decode()
                click.echo(line)
        finally:
            remove()

    run(stream())
