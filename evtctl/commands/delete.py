"""``evtctl delete KIND NAME [--wait] [--timeout S]``: ask for a resource to be deleted.

Publishes a ``<Kind>.DeletionRequested`` intent (``EventFactory.delete_intent``). The
resource is gone once its controllers removed their finalizers and ``<Kind>.Deleted`` was
recorded; ``--wait`` waits for that (and for the read models) like ``apply --wait``.
"""

from __future__ import annotations

import click

from eventplane.event.factory import EventFactory
from eventplane.runner import apply_and_wait
from evtctl.commands._common import prepare_intents, raise_first_failure, render_results, run
from evtctl.commands.apply import _resolve_kind
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

__all__ = ["delete"]


@click.command("delete")
@click.argument("kind")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the resource is deleted.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds --wait waits before giving up (exit 10).",
)
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def delete(
    cli: CliContext, kind: str, name: str, wait: bool, timeout: float, output: str | None
) -> None:
    """Delete the KIND resource NAME in the current tenant."""
    settings = cli.settings()
    kind = _resolve_kind(cli, kind)
    intent = EventFactory.delete_intent(
        kind,
        tenant=settings.tenant,
        name=name,
        actor=cli.actor(),
        source="urn:eventplane:evtctl",
        registry=cli.registry(),
    )
    [intent] = prepare_intents(cli, [intent], "delete")
    results = run(apply_and_wait(settings, [intent], wait=wait, timeout=timeout))
    fmt = cli.output_format(output, "table")
    if not wait:
        row = {"kind": kind, "name": name, "tenant": intent.tenant, "intent": str(intent.id)}
        render([row], fmt, columns=("kind", "name", "tenant", "intent"))
        return
    render_results(results, fmt)
    raise_first_failure(results)
