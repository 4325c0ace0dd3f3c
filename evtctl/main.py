"""evtctl — the command line. Thin: each command parses, calls one library function, renders.

Entry point of the ``evtctl`` console script (``main``). Commands live in
``evtctl/commands`` and are registered in ``COMMANDS`` below — one line each.

Every ``EventplaneError`` ends the command with one clear line on stderr (``-v`` adds the
field-by-field detail and the cause) and a distinct exit code:

    0 ok              3 invalid input (manifest, spec)   6 not authorized   9 bad configuration
    1 other error     4 unknown kind                     7 conflict         10 wait timed out
    2 usage (click)   5 not found                        8 unavailable      11 store / bus error
                                                                            12 resource failed
                                                                               (Ready=False)
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import click

from eventplane import errors
from evtctl.commands import apply as apply_cmd
from evtctl.commands import db as db_cmd
from evtctl.commands import delete as delete_cmd
from evtctl.commands import describe as describe_cmd
from evtctl.commands import events as events_cmd
from evtctl.commands import get as get_cmd
from evtctl.commands import projections as projections_cmd
from evtctl.commands import run as run_cmd
from evtctl.commands import specs as specs_cmd
from evtctl.context import OUTPUT_FORMATS, CliContext

__all__ = ["COMMANDS", "EXIT_CODES", "cli", "exit_code_for", "main"]

# Most specific first: the first matching class decides.
EXIT_CODES: tuple[tuple[type[errors.EventplaneError], int], ...] = (
    (errors.ValidationError, 3),
    (errors.UnknownKindError, 4),
    (errors.NotFoundError, 5),
    (errors.AuthorizationError, 6),
    (errors.ConflictError, 7),
    (errors.UnavailableError, 8),
    (errors.ConfigError, 9),
    (errors.WaitTimeoutError, 10),
    (errors.StoreError, 11),
    (errors.BusError, 11),
    (errors.ResourceFailedError, 12),
)


def exit_code_for(exc: errors.EventplaneError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def _report(exc: errors.EventplaneError, verbose: int) -> None:
    if verbose and isinstance(exc, errors.ValidationError) and exc.errors:
        click.echo(f"error: {exc.message}", err=True)
        for field_error in exc.errors:
            click.echo(f"  - {field_error}", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    if verbose:
        cause = exc.__cause__
        if cause is not None:
            click.echo(f"  caused by {type(cause).__name__}: {cause}", err=True)
        if verbose > 1:
            click.echo("".join(traceback.format_exception(exc)), err=True)


class _Group(click.Group):
    """Turns EventplaneError into one line and an exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.EventplaneError as exc:
            obj = ctx.find_object(CliContext)
            _report(exc, obj.verbose if obj is not None else 0)
            ctx.exit(exit_code_for(exc))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: .eventplane.toml found upward, or EVENTPLANE_CONFIG).",
)
@click.option("--tenant", help="Tenant to act in (default: from config, else 'default').")
@click.option("--store-url", help="Event store URL: sqlite:///… or postgresql://…")
@click.option("--bus-url", help="Bus URL: sqlite:///… (embedded) or nats://…")
@click.option("-v", "--verbose", count=True, help="More detail on errors (-vv: traceback).")
@click.option(
    "-o", "--output", type=click.Choice(OUTPUT_FORMATS), help="Output format (per command default)."
)
@click.version_option(package_name="eventplane", prog_name="evtctl")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: Path | None,
    tenant: str | None,
    store_url: str | None,
    bus_url: str | None,
    verbose: int,
    output: str | None,
) -> None:
    """Eventplane: express intent for resources; controllers reconcile it into facts."""
    ctx.obj = CliContext(
        config_path=config_path,
        tenant=tenant,
        store_url=store_url,
        bus_url=bus_url,
        verbose=verbose,
        output=output,
    )


COMMANDS: list[click.Command] = [
    apply_cmd.apply,
    db_cmd.db,
    delete_cmd.delete,
    describe_cmd.describe,
    events_cmd.events,
    get_cmd.get,
    projections_cmd.projections,
    run_cmd.run,
    specs_cmd.specs,
]
for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(auto_envvar_prefix="EVTCTL")
