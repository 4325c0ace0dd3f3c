"""``evtctl get KIND [NAME] [-o json|yaml|table]``: read the kind's read model.

Reads the projection that serves KIND (``eventplane.runner.get_objects``) in the current
tenant. ``-o json`` prints the Kubernetes-like object (``apiVersion``, ``kind``,
``metadata``, ``spec``, ``status`` with ``conditions``), a list as ``{"items": [...]}``;
``-o yaml`` the same as YAML; the default table one row per resource.
"""

from __future__ import annotations

import click

from eventplane.runner import get_objects
from evtctl.commands._common import run
from evtctl.commands.apply import _resolve_kind
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

__all__ = ["get"]


@click.command("get")
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def get(cli: CliContext, kind: str, name: str | None, output: str | None) -> None:
    """Show KIND resources (or the one named NAME) from the read model."""
    kind = _resolve_kind(cli, kind)
    objects, projection = run(get_objects(cli.settings(), kind, name, registry=cli.registry()))
    fmt = cli.output_format(output, "table")
    if fmt == "table":
        rows = [projection.table_row(obj) for obj in objects]
        if not rows:
            click.echo(f"No {kind} resources in tenant {cli.settings().tenant!r}.", err=True)
            return
        render(rows, "table", columns=projection.TABLE_COLUMNS)
    elif name is not None:
        render(objects[0], fmt)
    else:
        render({"items": objects}, fmt)
