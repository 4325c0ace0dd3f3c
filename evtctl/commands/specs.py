"""``evtctl specs list`` and ``evtctl specs show KIND``: what can be applied.

Reads the registry (``eventplane.registry``); ``show`` prints the kind's JSON Schema,
generated from its ``ResourceSpec`` (field descriptions included).
"""

from __future__ import annotations

from typing import Any

import click

from evtctl.commands._common import resolve_kind
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

__all__ = ["specs"]


@click.group("specs")
def specs() -> None:
    """Inspect the registered resource kinds."""


@specs.command("list")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def list_specs(cli: CliContext, output: str | None) -> None:
    """List registered kinds with their apiVersion."""
    rows: list[dict[str, Any]] = [
        {
            "kind": spec.KIND,
            "api_version": spec.API_VERSION,
            "description": (spec.__doc__ or "").strip().splitlines()[0] if spec.__doc__ else "",
        }
        for spec in cli.registry().specs()
    ]
    render(rows, cli.output_format(output, "table"), columns=("kind", "api_version", "description"))


@specs.command("show")
@click.argument("kind")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def show_spec(cli: CliContext, kind: str, output: str | None) -> None:
    """Print KIND's spec as JSON Schema."""
    spec_cls = cli.registry().spec_for(resolve_kind(cli, kind))
    schema = spec_cls.model_json_schema()
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:eventplane:spec:{spec_cls.API_VERSION}:{spec_cls.KIND}",
        "x-eventplane-kind": spec_cls.KIND,
        "x-eventplane-api-version": spec_cls.API_VERSION,
        **schema,
    }
    fmt = cli.output_format(output, "json")
    render(schema, "json" if fmt == "table" else fmt)
