"""Small deterministic controllers for the runtime tests (pure, like any controller)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from apps.organization.controllers.organization import OrganizationController
from eventplane.controller import (
    Controller,
    ControllerDecision,
    PermanentError,
    ReconcileContext,
    TransientError,
    fact,
)
from eventplane.event import Event, ResourceState
from eventplane.utils import format_time


class FailingFor(OrganizationController):
    """The Organization controller, except that it raises for the named resources while
    they have fewer than ``until_attempts`` recorded failures (None: forever)."""

    def __init__(
        self,
        *names: str,
        permanent: bool = False,
        until_attempts: int | None = None,
        as_decision: bool = False,
    ) -> None:
        self.names = frozenset(names)
        self.permanent = permanent
        self.until_attempts = until_attempts
        self.as_decision = as_decision

    def reconcile(
        self, event: Event, state: ResourceState, ctx: ReconcileContext
    ) -> ControllerDecision:
        failing = state.name in self.names and (
            self.until_attempts is None or state.status.attempts < self.until_attempts
        )
        if not failing or not state.exists or state.deletion_requested:
            return super().reconcile(event, state, ctx)
        if self.permanent:
            raise PermanentError("billing refused the account", reason="BillingRejected")
        if self.as_decision:
            return ControllerDecision.retry("DependencyNotReady", "billing is not ready yet")
        raise TransientError("billing backend is down", reason="BackendDown")


class Poller(Controller):
    """Announces ``Waiting`` and asks to be woken after ``delay``; when the timer fires
    it announces ``Polled`` with the time it was woken at."""

    KIND: ClassVar[str] = "Organization"

    def __init__(self, delay: timedelta = timedelta(milliseconds=300)) -> None:
        self.delay = delay

    def reconcile(
        self, event: Event, state: ResourceState, ctx: ReconcileContext
    ) -> ControllerDecision:
        if not state.exists or "Polled" in state.facts:
            return ControllerDecision.nothing()
        if "Waiting" not in state.facts:
            return ControllerDecision.requeue(
                fact("Waiting", since=format_time(ctx.now)), after=self.delay
            )
        if event.reason == "RequeueScheduled":
            return ControllerDecision.done(fact("Polled", at=format_time(ctx.now)))
        return ControllerDecision.requeue(after=self.delay)


class ByName(OrganizationController):
    """Delegates each resource to the controller named for it, else the Organization one."""

    def __init__(self, **by_name: Controller) -> None:
        self.by_name = by_name

    def reconcile(
        self, event: Event, state: ResourceState, ctx: ReconcileContext
    ) -> ControllerDecision:
        special = self.by_name.get(state.name)
        if special is not None:
            return special.reconcile(event, state, ctx)
        return super().reconcile(event, state, ctx)
