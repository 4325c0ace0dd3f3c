"""``evtctl apply KIND -f FILE|- [--dry-run] [-o json|yaml|table]``.

Loads and validates every manifest (``eventplane.spec``), builds one intent per document
(``EventFactory.from_manifests``) — every document is validated before any is published —
then publishes them on the bus (``eventplane.runner.apply_and_wait``). ``--dry-run`` prints
the intents as CloudEvents instead. ``--wait`` waits until each resource is Ready (exit 0),
failed (Ready=False / Failed: exit 12; rejected: the rejection's code) or ``--timeout``
passed (exit 10); on the embedded default with no ``evtctl run`` it does the work itself.
Missing required spec fields are prompted for on a terminal; elsewhere they are errors
listing every field.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from eventplane.event.cloudevents import to_cloudevent
from eventplane.event.factory import EventFactory
from eventplane.spec import Manifest, PromptFn, load_manifest_file, load_manifest_stream
from evtctl.commands._common import (
    prepare_intents,
    raise_first_failure,
    render_results,
    resolve_kind,
    run,
)
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

__all__ = ["apply"]

_COLUMNS = ("id", "type", "tenant", "name", "correlationid")
_PUBLISHED_COLUMNS = ("kind", "name", "tenant", "intent")


def _is_interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _prompt(path: str, description: str, default: Any) -> Any:
    return click.prompt(f"{path} ({description})", default=default, err=True)


_resolve_kind = resolve_kind  # the other command modules import it from here


@click.command("apply")
@click.argument("kind")
@click.option(
    "-f", "--filename", required=True, help="Manifest file (YAML, multi-document), or - for stdin."
)
@click.option("--dry-run", is_flag=True, help="Validate and print the intents; publish nothing.")
@click.option("--wait", is_flag=True, help="Wait until every resource is Ready (or failed).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds --wait waits before giving up (exit 10).",
)
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def apply(
    cli: CliContext,
    kind: str,
    filename: str,
    dry_run: bool,
    wait: bool,
    timeout: float,
    output: str | None,
) -> None:
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
    if dry_run:
        documents = [to_cloudevent(intent) for intent in intents]
        fmt = cli.output_format(output, "json")
        render(
            documents[0] if len(documents) == 1 and fmt != "table" else documents,
            fmt,
            columns=_COLUMNS,
        )
        return
    intents = prepare_intents(cli, intents, "apply")
    # Imported here: the runner brings the store and bus drivers, which --dry-run never needs.
    from eventplane.runner import apply_and_wait

    results = run(apply_and_wait(settings, intents, wait=wait, timeout=timeout))
    fmt = cli.output_format(output, "table")
    if not wait:
        rows = [
            {"kind": i.kind, "name": i.name, "tenant": i.tenant, "intent": str(i.id)}
            for i in intents
        ]
        render(rows, fmt, columns=_PUBLISHED_COLUMNS)
        return
    render_results(results, fmt)
    raise_first_failure(results)
