"""Shared by the publishing commands (``apply``, ``delete``): edge checks on intents and
rendering of ``--wait`` outcomes. Kept here so each command module stays one parse → one
library call → one render.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from eventplane.event.model import Event
from eventplane.runner import WaitResult
from eventplane.security import load_keypair, policy_from_settings, sign_intent
from evtctl.context import CliContext, render

__all__ = ["RESULT_COLUMNS", "prepare_intents", "raise_first_failure", "render_results", "run"]

RESULT_COLUMNS = ("kind", "name", "tenant", "result", "reason", "message")
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one library coroutine to completion (each command is one event loop)."""
    return asyncio.run(coro)


def prepare_intents(cli: CliContext, intents: Sequence[Event], verb: str) -> list[Event]:
    """Authorize at the edge when a policy is configured, and sign when a key is."""
    settings = cli.settings()
    security = settings.security
    if security.policy is not None:
        policy = policy_from_settings(security)
        for intent in intents:
            policy.ensure_allowed(intent.metadata.actor, verb, intent.kind, intent.tenant)
    keypair = load_keypair(security.key_file)
    if keypair is None:
        return list(intents)
    return [sign_intent(intent, keypair) for intent in intents]


def render_results(results: Sequence[WaitResult], fmt: str) -> None:
    rows = [r.summary() for r in results]
    render(rows, fmt, columns=RESULT_COLUMNS)


def raise_first_failure(results: Sequence[WaitResult]) -> None:
    for result in results:
        error = result.error
        if error is not None:
            raise error
