"""``evtctl run [--controllers/--no-controllers] [--projections/--no-projections]
[--relay/--no-relay] [--health-port N] [--health-host H]``: the workers of the configured
stack in one process.

Runs ``eventplane.runner.run_workers`` until SIGTERM/SIGINT, then shuts down within the
configured ``runtime.shutdown_grace`` (+5 s). The flags let a container run only some parts.
``--health-port`` (or ``EVENTPLANE_HEALTH_PORT``) serves ``/healthz``, ``/readyz`` and
``/metrics`` (``eventplane.observability``) for probes and Prometheus; it binds
127.0.0.1 unless ``--health-host`` (``EVENTPLANE_HEALTH_HOST``) says otherwise — containers
set ``0.0.0.0`` so the orchestrator's probes reach it.
"""

from __future__ import annotations

import asyncio

import click

from evtctl.commands._common import run_long
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
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    envvar="EVENTPLANE_HEALTH_PORT",
    help="Serve /healthz, /readyz and /metrics on this port (0: any free port; "
    "env EVENTPLANE_HEALTH_PORT). Default: no health server.",
)
@click.option(
    "--health-host",
    default="127.0.0.1",
    show_default=True,
    envvar="EVENTPLANE_HEALTH_HOST",
    help="Address the health server binds (0.0.0.0 in containers).",
)
@pass_cli
def run(
    cli: CliContext,
    controllers: bool,
    projections: bool,
    relay: bool,
    projection_names: tuple[str, ...],
    tenant_only: bool,
    health_port: int | None,
    health_host: str,
) -> None:
    """Run controllers, relay and projection workers until interrupted."""
    from eventplane.logging import configure_logging
    from eventplane.runner import install_signal_handlers, run_workers

    settings = cli.settings()
    # Warnings by default (the runtime logs every reconcile at INFO: -v shows them); JSON
    # lines when stderr is not a terminal. Idempotent if evtctl start-up configured it.
    configure_logging(cli.verbose)

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
                health_port=health_port,
                health_host=health_host,
                tune_gc=True,
            )
        finally:
            remove()

    run_long(main())
