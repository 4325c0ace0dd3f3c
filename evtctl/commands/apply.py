"""``evtctl apply KIND -f FILE|- [--dry-run] [-o json|yaml|table]``.

Loads and validates every manifest (``eventplane.spec``), builds one intent per document
(``EventFactory.from_manifests``) and prints them as CloudEvents. Missing required spec
fields are prompted for on a terminal; elsewhere they are errors listing every field.
Publishing is wired by the runtime issue; until then only ``--dry-run`` succeeds.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from eventplane.errors import BusError
from eventplane.event.cloudevents import to_cloudevent
from eventplane.event.factory import EventFactory
from eventplane.spec import Manifest, PromptFn, load_manifest_file, load_manifest_stream
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

__all__ = ["apply"]

_COLUMNS = ("id", "type", "tenant", "name", "correlationid")


def _is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _prompt(path: str, description: str, default: Any) -> Any:
    return click.prompt(f"{path} ({description})", default=default, err=True)


def _resolve_kind(cli: CliContext, kind: str) -> str:
    # kubectl accepts "organization" for "Organization"; so do we.
    for known in cli.registry().kinds():
        if known.lower() == kind.lower():
            return known
    return cli.registry().spec_for(kind).KIND  # raises UnknownKindError listing kinds


@click.command("apply")
@click.argument("kind")
@click.option(
    "-f", "--filename", required=True, help="Manifest file (YAML, multi-document), or - for stdin."
)
@click.option("--dry-run", is_flag=True, help="Validate and print the intents; publish nothing.")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def apply(cli: CliContext, kind: str, filename: str, dry_run: bool, output: str | None) -> None:
    """Apply the KIND manifests in FILE (Kubernetes-style apiVersion/kind/metadata/spec)."""
    settings = cli.settings()
    kind = _resolve_kind(cli, kind)
    registry = cli.registry()
    prompt: PromptFn | None = _prompt if filename != "-" and _is_interactive() else None
    manifests: list[Manifest]
    if filename == "-":
        manifests = load_manifest_stream(sys.stdin.buffer, kind=kind, registry=registry)
    else:
        manifests = load_manifest_file(filename, kind=kind, registry=registry, prompt=prompt)
    intents = EventFactory.from_manifests(
        manifests,
        actor=cli.actor(),
        tenant=settings.tenant,
        tenant_pinned=cli.tenant is not None,
        source="urn:eventplane:evtctl",
        registry=registry,
    )
    if not dry_run:
        raise BusError(
            "publishing needs the bus (not built yet); use --dry-run to validate and print "
            "the intents"
        )
    documents = [to_cloudevent(intent) for intent in intents]
    fmt = cli.output_format(output, "json")
    render(
        documents[0] if len(documents) == 1 and fmt != "table" else documents, fmt, columns=_COLUMNS
    )
