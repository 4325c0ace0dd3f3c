"""``evtctl projections list`` (name, checkpoint, lag) and ``evtctl projections rebuild
NAME`` (clear the read model and replay the log, with progress).

Calls ``eventplane.runner.projection_status`` / ``rebuild_projection``, imported inside the
commands (the runner brings the store and bus drivers; ``--help`` must not).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import Any

import click

from evtctl.commands._common import run
from evtctl.context import OUTPUT_FORMATS, CliContext, pass_cli, render

__all__ = ["projections"]


@click.group("projections")
def projections() -> None:
    """Inspect and rebuild read models."""


@projections.command("list")
@click.option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS), help="Output format.")
@pass_cli
def list_projections(cli: CliContext, output: str | None) -> None:
    """Every registered projection with its checkpoint and lag (positions behind)."""
    from eventplane.runner import projection_status

    status = run(projection_status(cli.settings(), registry=cli.registry()))
    rows = [
        {"name": s.name, "checkpoint": s.checkpoint, "lag": s.lag, "tables": ", ".join(s.tables)}
        for s in status
    ]
    render(
        rows, cli.output_format(output, "table"), columns=("name", "checkpoint", "lag", "tables")
    )


class _Progress:
    """``progress(position, target)`` for the rebuild: a bar on a terminal, otherwise one
    plain line per tenth of the way (a log file or CI output wants lines, not redraws)."""

    def __init__(self, name: str, stack: ExitStack, *, terminal: bool) -> None:
        self._name = name
        self._stack = stack
        self._terminal = terminal
        self._bar: Any = None
        self._shown = 0
        self._last_tenth = -1

    def __call__(self, done: int, target: int) -> None:
        if self._terminal:
            if self._bar is None:
                self._bar = self._stack.enter_context(
                    click.progressbar(
                        length=max(target, 1),
                        label=f"rebuilding {self._name}",
                        show_pos=True,
                        file=sys.stderr,
                    )
                )
            self._bar.update(max(0, done - self._shown))
            self._shown = max(self._shown, done)
            return
        tenth = 10 if target == 0 else min(10, done * 10 // target)
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            click.echo(
                f"rebuilding {self._name}: position {done}/{target} ({tenth * 10}%)", err=True
            )


@projections.command("rebuild")
@click.argument("name")
@pass_cli
def rebuild(cli: CliContext, name: str) -> None:
    """Clear projection NAME's tables and replay every event into them (one transaction)."""
    from eventplane.runner import rebuild_projection

    settings = cli.settings()
    registry = cli.registry()
    registry.projection(name)  # NotFoundError (exit 5) before anything is touched
    with ExitStack() as stack:
        progress = _Progress(name, stack, terminal=sys.stderr.isatty())
        count = run(rebuild_projection(settings, name, progress=progress, registry=registry))
    click.echo(f"projection {name} rebuilt from {count} events")
