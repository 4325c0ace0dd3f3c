"""``evtctl run [--controllers/--no-controllers] [--projections/--no-projections]
[--relay/--no-relay]``: the workers of the configured stack in one process.

Runs ``eventplane.runner.run_workers`` until SIGTERM/SIGINT, then shuts down within the
configured ``runtime.shutdown_grace`` (+5 s). The flags let a container run only some parts.
"""

from __future__ import annotations

import asyncio
import logging

import click

from eventplane.runner import install_signal_handlers, run_workers
from evtctl.commands._common import run as run_coroutine
from evtctl.context import CliContext, pass_cli

__all__ = ["run"]


@click.command("run")
@click.option("--controllers/--no-controllers", default=True, help="Run the controller runtime.")
@click.option("--projections/--no-projections", default=True, help="Run the projection workers.")
@click.option("--relay/--no-relay", default=True, help="Run the relay (store → bus).")
@click.option(
    "--projection",
    "projection_names",
    multiple=True,
    help="Run only this projection (repeatable; default: all registered).",
)
@click.option(
    "--tenant-only",
    is_flag=True,
    help="Reconcile only the current tenant's intents (--tenant); default: every tenant.",
)
@pass_cli
def run(
    cli: CliContext,
    controllers: bool,
    projections: bool,
    relay: bool,
    projection_names: tuple[str, ...],
    tenant_only: bool,
) -> None:
    """Run controllers, relay and projection workers until interrupted."""
    settings = cli.settings()
    # Warnings by default (the runtime logs every reconcile at INFO: -v shows them).
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(cli.verbose, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def main() -> None:
        stop = asyncio.Event()
        remove = install_signal_handlers(stop)
        try:
            await run_workers(
                settings,
                stop_event=stop,
                controllers=controllers,
                projections=projections,
                relay=relay,
                projection_names=projection_names or None,
                tenant=settings.tenant if tenant_only else None,
                registry=cli.registry(),
                started=lambda: click.echo("evtctl run: workers started", err=True),
            )
        finally:
            remove()

    run_coroutine(main())
