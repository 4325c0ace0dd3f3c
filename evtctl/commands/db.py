"""``evtctl db migrate`` and ``evtctl db status``: the event store's schema.

Thin: one call to ``eventplane.store.migrate`` / ``status`` each (imported inside the
commands: the store package brings its drivers), then render. PostgreSQL
applies the numbered ``sqls/`` migrations (idempotent, recorded, under an advisory lock);
SQLite reports its embedded schema, created on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from eventplane.utils import format_time
from evtctl.commands._common import run
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

if TYPE_CHECKING:
    from eventplane.store import MigrationStatus

__all__ = ["db"]

_COLUMNS = ("version", "name", "state", "applied_at")


def _rows(items: list[MigrationStatus]) -> list[dict[str, Any]]:
    return [
        {
            "version": f"{item.version:04d}",
            "name": item.name,
            "state": item.state,
            "applied_at": format_time(item.applied_at) if item.applied_at else "",
        }
        for item in items
    ]


@click.group("db")
def db() -> None:
    """Create and inspect the event store's schema."""


@db.command("migrate")
@pass_cli
def migrate_command(cli: CliContext) -> None:
    """Apply pending migrations to the configured store (safe to run repeatedly)."""
    from eventplane.store import migrate
    from eventplane.store.url import parse_store_url

    settings = cli.settings()
    applied = run(migrate(settings.store_dsn()))
    where = parse_store_url(settings.store_url).redacted
    if not applied:
        click.echo(f"{where}: schema is up to date")
        return
    for item in applied:
        click.echo(f"{where}: applied {item.version:04d}_{item.name}")


@db.command("status")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def status_command(cli: CliContext, output: str | None) -> None:
    """List every migration and whether it is applied, pending or modified since."""
    from eventplane.store import status

    items = run(status(cli.settings().store_dsn()))
    render(_rows(items), cli.output_format(output, "table"), columns=_COLUMNS)
