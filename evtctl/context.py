"""What every evtctl command shares: the CLI context object and output rendering.

Imported by ``evtctl.main`` (which builds the context) and by each module in
``evtctl/commands`` (which receive it through ``pass_cli``). Holds no logic beyond
resolving settings lazily and printing. Settings, the registry and YAML are imported on
first use, so that ``evtctl --help`` loads none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

if TYPE_CHECKING:
    from eventplane.config import Settings
    from eventplane.registry import Registry
    from eventplane.security import Keypair

__all__ = ["OUTPUT_FORMATS", "CliContext", "pass_cli", "render"]

OUTPUT_FORMATS = ("json", "yaml", "table")


@dataclass
class CliContext:
    """Global options, and settings loaded on first use (so ``--help`` never reads files)."""

    config_path: Path | None = None
    tenant: str | None = None  # only the --tenant flag (EVENTPLANE_TENANT reaches settings())
    store_url: str | None = None
    bus_url: str | None = None
    verbose: int = 0
    output: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _identity: tuple[str, Keypair] | None = field(default=None, repr=False)
    _warned_development: bool = field(default=False, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            from eventplane.config import load_settings

            loaded = load_settings(config_path=self.config_path)
            self._settings = loaded.with_overrides(
                tenant=self.tenant, store_url=self.store_url, bus_url=self.bus_url
            )
        return self._settings

    def registry(self) -> Registry:
        from eventplane.registry import get_default_registry

        return get_default_registry()

    def actor(self) -> str:
        """Who is asking: ``security.actor``, else the local development actor.

        The name must be the one the signing key is trusted for (``identity``), never the
        OS user: the runtime rejects an intent whose actor its key may not speak for.
        """
        from eventplane.security import DEV_ACTOR

        return self.settings().security.actor or DEV_ACTOR

    def identity(self) -> tuple[str, Keypair]:
        """The actor and the key that signs its intents (``actor_identity``): the key from
        ``security.key_file`` / ``EVENTPLANE_ACTOR_SEED``, else the development keyring
        under ``home`` (created on first use)."""
        if self._identity is None:
            from eventplane.security import actor_identity

            settings = self.settings()
            self._identity = actor_identity(settings.security, settings.home)
        return self._identity

    def warn_development_policy(self) -> None:
        """Say once per command that no policy is configured (development mode)."""
        if self._warned_development:
            return
        self._warned_development = True
        click.echo(
            "warning: no security.policy is configured (development mode): the local "
            "development actor may do everything; configure security.policy before sharing "
            "this store",
            err=True,
        )

    def output_format(self, local: str | None, default: str) -> str:
        return local or self.output or default


pass_cli = click.make_pass_decorator(CliContext)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [
        [str(row.get(c, "") if row.get(c) is not None else "") for c in columns] for row in rows
    ]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def render(data: Any, fmt: str, *, columns: Sequence[str] | None = None) -> None:
    """Print ``data`` as JSON, YAML or (for a list of dicts with ``columns``) a table."""
    if fmt == "json":
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    elif fmt == "yaml":
        import yaml

        if isinstance(data, list):
            click.echo(yaml.safe_dump_all(data, sort_keys=False, allow_unicode=True), nl=False)
        else:
            click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    elif columns is not None:
        rows = data if isinstance(data, list) else [data]
        click.echo(_table(rows, columns))
    else:  # no tabular form: JSON is the most readable fallback
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
