"""evtctl — the command line. Thin: each command parses, calls one library function, renders.

Entry point of the ``evtctl`` console script (``main``). Commands live in
``evtctl/commands``, one module each, and are listed in ``COMMANDS`` below — one line each,
with the short help ``evtctl --help`` shows. The group imports a command's module only when
that command runs (or completion asks for it): the store, bus and runtime bring SQLAlchemy,
asyncpg and nats with them, and ``evtctl --help`` or ``evtctl specs list`` must not pay for
them. ``tests/unit/test_evtctl_cli.py`` pins both the laziness and that each short help
below matches the command's own docstring.

Every ``EventplaneError`` ends the command with one clear line on stderr (``-v`` adds the
field-by-field detail and the cause, ``-vv`` the traceback) and the exit code of its family,
``EXIT_CODES`` (documented in ``evtctl --help`` and README.md).
"""

from __future__ import annotations

import importlib
import traceback
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from click.shell_completion import get_completion_class

from eventplane import errors
from evtctl.context import OUTPUT_FORMATS, CliContext

__all__ = ["COMMANDS", "EXIT_CODES", "USAGE_EXIT_CODE", "cli", "exit_code_for", "main"]

USAGE_EXIT_CODE = 2  # click's own code for a bad flag, argument or option value

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

_EPILOG = """\b
Environment (a flag wins over its variable, the variable over .eventplane.toml):
  EVENTPLANE_CONFIG      --config       EVENTPLANE_STORE_URL   --store-url
  EVENTPLANE_TENANT      --tenant       EVENTPLANE_BUS_URL     --bus-url
  EVENTPLANE_VERBOSE     -v (a count)   EVENTPLANE_OUTPUT      -o

\b
Exit codes:
   0 success                            7 conflict (concurrent change, duplicate)
   1 other error                        8 backend unavailable (PostgreSQL, NATS)
   2 usage (bad flag or argument)       9 bad configuration
   3 invalid input (manifest, spec)    10 --wait timed out
   4 unknown kind                      11 store or bus error
   5 not found                         12 resource failed (Ready=False)
   6 not authorized

\b
Shell completion: eval "$(evtctl completion bash)"   (or zsh, fish)"""

# name -> (module under evtctl.commands, attribute, short help shown by `evtctl --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "apply": (
        "apply",
        "apply",
        "Apply the KIND manifests in FILE (Kubernetes-style apiVersion/kind/metadata/spec).",
    ),
    "db": ("db", "db", "Create and inspect the event store's schema."),
    "delete": ("delete", "delete", "Delete the KIND resource NAME in the current tenant."),
    "describe": (
        "describe",
        "describe",
        "Show the state of KIND NAME and every event of its stream.",
    ),
    "events": ("events", "events", "List the event log of the current tenant in position order."),
    "get": ("get", "get", "Show KIND resources (or the one named NAME) from the read model."),
    "projections": ("projections", "projections", "Inspect and rebuild read models."),
    "run": ("run", "run", "Run controllers, relay and projection workers until interrupted."),
    "specs": ("specs", "specs", "Inspect the registered resource kinds."),
}


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
    """Loads commands on demand and turns EventplaneError into one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, _ = entry
        module = importlib.import_module(f"evtctl.commands.{module_name}")
        command: click.Command = getattr(module, attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The short help comes from COMMANDS so that --help imports no command module.
        rows = [(name, COMMANDS[name][2]) for name in COMMANDS]
        rows += [(n, c.get_short_help_str(60)) for n, c in self.commands.items() if not c.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.EventplaneError as exc:
            obj = ctx.find_object(CliContext)
            _report(exc, obj.verbose if obj is not None else 0)
            ctx.exit(exit_code_for(exc))


@click.group(
    "evtctl",
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
@click.option(
    "--config",
    "config_path",
    envvar="EVENTPLANE_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: the first .eventplane.toml from here upward).",
)
@click.option(
    "--tenant",
    envvar="EVENTPLANE_TENANT",
    show_envvar=True,
    help="Tenant to act in (default: from the config, else 'default'). Given as a flag it "
    "also pins manifests: one naming another tenant is an error.",
)
@click.option(
    "--store-url",
    envvar="EVENTPLANE_STORE_URL",
    show_envvar=True,
    help="Event store: sqlite:///PATH (default .eventplane/eventplane.db) or postgresql://…",
)
@click.option(
    "--bus-url",
    envvar="EVENTPLANE_BUS_URL",
    show_envvar=True,
    help="Bus: the store's sqlite:///… or postgresql://… URL (embedded bus) or nats://…",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    envvar="EVENTPLANE_VERBOSE",
    show_envvar=True,
    help="More detail: errors with their cause and fields, worker logs (-vv: tracebacks).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_FORMATS),
    envvar="EVENTPLANE_OUTPUT",
    show_envvar=True,
    help="Output format (default per command: a table, JSON for documents).",
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
    """Eventplane: express intent for resources; controllers reconcile it into facts.

    With no configuration everything is embedded under ./.eventplane (SQLite store and
    bus, no servers); postgresql:// and nats:// URLs select the production backends.
    """
    # EVENTPLANE_TENANT is the default tenant, exactly as in the config (load_settings reads
    # it); only the flag pins manifests that name their own tenant (CliContext.tenant).
    if ctx.get_parameter_source("tenant") is ParameterSource.ENVIRONMENT:
        tenant = None
    from eventplane.logging import configure_logging  # light: stdlib + orjson

    configure_logging(verbose)
    ctx.obj = CliContext(
        config_path=config_path,
        tenant=tenant,
        store_url=store_url,
        bus_url=bus_url,
        verbose=verbose,
        output=output,
    )


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (eval it in your shell's rc file)."""
    completion_class = get_completion_class(shell)
    if completion_class is None:  # pragma: no cover - click ships all three
        raise click.UsageError(f"no completion support for {shell}")
    click.echo(completion_class(cli, {}, "evtctl", "_EVTCTL_COMPLETE").source())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="evtctl")
