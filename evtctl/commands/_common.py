"""What several commands share: kind resolution, the edge checks on intents (``apply``,
``delete``) and rendering of ``--wait`` outcomes. Kept here so each command module stays
one parse → one library call → one render.

Heavy modules (the runner, and through it the store and bus drivers) are imported inside
the functions that need them: importing a command module must stay cheap
(``tests/unit/test_evtctl_cli.py`` pins it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from eventplane.errors import AuthorizationError
from evtctl.context import CliContext, render

if TYPE_CHECKING:
    from eventplane.event.model import Event
    from eventplane.runner import WaitResult

__all__ = [
    "RESULT_COLUMNS",
    "prepare_intents",
    "raise_first_failure",
    "render_results",
    "resolve_kind",
    "run",
]

RESULT_COLUMNS = ("kind", "name", "tenant", "result", "reason", "message")
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one library coroutine to completion (each command is one event loop)."""
    return asyncio.run(coro)


def run_long(coro: Coroutine[Any, Any, T]) -> T:
    """``run`` for a long-running worker: on uvloop (libuv's event loop) where it is
    installed — every socket read and write of the store and bus clients goes through the
    loop, and libuv's costs less CPU per operation than asyncio's selector loop."""
    try:
        import uvloop
    except ImportError:  # Windows, or a trimmed install: asyncio's own loop works too
        return asyncio.run(coro)
    return uvloop.run(coro)


def resolve_kind(cli: CliContext, kind: str) -> str:
    """The registered spelling of KIND: kubectl accepts "organization" for
    "Organization", and so do we. An unknown kind raises UnknownKindError listing them."""
    registry = cli.registry()
    for known in registry.kinds():
        if known.lower() == kind.lower():
            return known
    return registry.spec_for(kind).KIND


def prepare_intents(cli: CliContext, intents: Sequence[Event], verb: str) -> list[Event]:
    """The edge checks, before anything is published: secret guard, authorization, signing.

    Raises ``SecretMaterialError`` naming the field (exit 3) or ``PolicyDeniedError``
    naming the rule that would allow it (exit 6); nothing is published then. With no
    policy configured it warns once that the development actor may do everything.
    """
    from eventplane.security import (
        ensure_event_has_no_secret_material,
        policy_from_settings,
        sign_intent,
    )

    security = cli.settings().security
    for intent in intents:
        ensure_event_has_no_secret_material(intent)
    policy = policy_from_settings(security)
    if policy.is_development:
        cli.warn_development_policy()
    for intent in intents:
        policy.ensure_allowed(intent.metadata.actor, verb, intent.kind, intent.tenant)
    actor, keypair = cli.identity()
    signed = []
    for intent in intents:
        if intent.metadata.actor != actor:
            # Built for another actor than the key speaks for: the runtime would reject it.
            raise AuthorizationError(
                f"{intent.kind} {intent.name!r} is sent as actor {intent.metadata.actor!r} "
                f"but the signing key is {actor!r}'s; set security.actor to match the key"
            )
        signed.append(sign_intent(intent, keypair))
    return signed


def render_results(results: Sequence[WaitResult], fmt: str) -> None:
    rows = [r.summary() for r in results]
    render(rows, fmt, columns=RESULT_COLUMNS)


def raise_first_failure(results: Sequence[WaitResult]) -> None:
    for result in results:
        error = result.error
        if error is not None:
            raise error
