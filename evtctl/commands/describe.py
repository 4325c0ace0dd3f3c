"""``evtctl describe KIND NAME``: a resource's current state and its whole event history.

Folds the resource's stream (``eventplane.runner.describe``) in the current tenant; the
history lists each event's time, type, category, actor, generation and reason (the
condition, failure or rejection reason the event carries).
"""

from __future__ import annotations

from typing import Any

import click
import yaml

from eventplane.event.model import Event
from eventplane.event.state import state_summary
from eventplane.runner import describe as describe_resource
from eventplane.utils import format_time
from evtctl.commands._common import run
from evtctl.commands.apply import _resolve_kind
from evtctl.context import OUTPUT_FORMATS, CliContext, _table, pass_cli, render

__all__ = ["describe"]

_EVENT_COLUMNS = ("position", "time", "type", "category", "actor", "generation", "reason")


def _reason(event: Event) -> str:
    reason = event.data.get("reason")
    if isinstance(reason, str):
        return reason
    if event.status is not None:
        ready = event.status.condition("Ready")
        if ready is not None:
            return f"Ready={ready.status.value} {ready.reason}"
    return ""


def _row(event: Event) -> dict[str, Any]:
    return {
        "position": event.metadata.position,
        "time": format_time(event.metadata.occurred_at),
        "type": event.type,
        "category": event.category.value,
        "actor": event.metadata.actor,
        "generation": event.metadata.generation,
        "reason": _reason(event),
    }


@click.command("describe")
@click.argument("kind")
@click.argument("name")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def describe(cli: CliContext, kind: str, name: str, output: str | None) -> None:
    """Show the state of KIND NAME and every event of its stream."""
    kind = _resolve_kind(cli, kind)
    state, events = run(describe_resource(cli.settings(), kind, name))
    summary = dict(state_summary(state))
    rows = [_row(e) for e in events]
    fmt = cli.output_format(output, "table")
    if fmt != "table":
        render({"state": summary, "events": rows}, fmt)
        return
    status = summary.pop("status")
    click.echo(yaml.safe_dump(summary, sort_keys=False, allow_unicode=True).rstrip())
    click.echo("status:")
    conditions = status.pop("conditions", [])
    for key, value in status.items():
        click.echo(f"  {key}: {'-' if value in (None, '') else value}")
    if conditions:
        click.echo("  conditions:")
        click.echo(
            "\n".join(
                "    " + line
                for line in _table(
                    conditions, ("type", "status", "reason", "message", "last_transition_time")
                ).splitlines()
            )
        )
    click.echo(f"events ({len(rows)}):")
    click.echo("\n".join("  " + line for line in _table(rows, _EVENT_COLUMNS).splitlines()))
