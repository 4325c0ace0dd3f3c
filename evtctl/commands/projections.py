"""``evtctl projections list`` (name, checkpoint, lag) and ``evtctl projections rebuild
NAME`` (clear the read model and replay the log, with progress).

Calls ``eventplane.runner.projection_status`` / ``rebuild_projection``.
"""

from __future__ import annotations

import click

from eventplane.runner import projection_status, rebuild_projection
from evtctl.commands._common import run
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

__all__ = ["projections"]


@click.group("projections")
def projections() -> None:
    """Inspect and rebuild read models."""


@projections.command("list")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def list_projections(cli: CliContext, output: str | None) -> None:
    """Every registered projection with its checkpoint and lag (positions behind)."""
    status = run(projection_status(cli.settings(), registry=cli.registry()))
    rows = [
        {"name": s.name, "checkpoint": s.checkpoint, "lag": s.lag, "tables": ", ".join(s.tables)}
        for s in status
    ]
    render(
        rows, cli.output_format(output, "table"), columns=("name", "checkpoint", "lag", "tables")
    )


@projections.command("rebuild")
@click.argument("name")
@pass_cli
def rebuild(cli: CliContext, name: str) -> None:
    """Clear projection NAME's tables and replay every event into them (one transaction)."""
    settings = cli.settings()
    registry = cli.registry()
    registry.projection(name)  # NotFoundError (exit 5) before anything is touched

    def progress(done: int, target: int) -> None:
        percent = 100 if target == 0 else min(100, done * 100 // target)
        click.echo(
            f"\rrebuilding {name}: position {done}/{target} ({percent}%)", nl=False, err=True
        )

    count = run(rebuild_projection(settings, name, progress=progress, registry=registry))
    click.echo("", err=True)
    click.echo(f"projection {name} rebuilt from {count} events")
