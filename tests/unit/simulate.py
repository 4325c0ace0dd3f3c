"""A pure, in-memory stand-in for the runtime's per-delivery pipeline, for unit tests.

admit the intent → fold → reconcile → mutate → "append" (assign stream versions) —
exactly the steps DESIGN §6 gives the real runtime, minus I/O, so controller behaviour
and replay can be tested with real Event instances and no store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventplane.controller import Controller, ControllerDecision, ReconcileContext
from eventplane.event import (
    Event,
    EventFactory,
    ResourceState,
    admit_intent,
    apply_decision,
    evolve,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def event_id(n: int) -> UUID:
    """A valid UUIDv7-shaped id numbered ``n`` (deterministic test ids)."""
    return UUID(f"01900000-0000-7000-8000-{n:012x}")


def org_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "display_name": "Acme Corp",
        "plan": "pro",
        "owners": ["ada@acme.example"],
    }
    spec.update(changes)
    return spec


def org_intent(
    n: int = 1,
    *,
    name: str = "acme",
    tenant: str = "default",
    at: datetime | None = None,
    **spec_changes: Any,
) -> Event:
    return EventFactory.from_intent(
        org_spec(**spec_changes),
        kind="Organization",
        tenant=tenant,
        name=name,
        actor="user:test",
        now=at or T0 + timedelta(minutes=n),
        event_id=event_id(n),
    )


def org_delete(n: int, *, name: str = "acme", at: datetime | None = None) -> Event:
    return EventFactory.delete_intent(
        "Organization",
        tenant="default",
        name=name,
        actor="user:test",
        now=at or T0 + timedelta(minutes=n),
        event_id=event_id(n),
    )


@dataclass
class Step:
    """One recorded delivery: what woke the controller, what it decided, what was written."""

    trigger: Event
    state: ResourceState
    ctx: ReconcileContext
    decision: ControllerDecision
    events: list[Event]


@dataclass
class Stream:
    """One resource stream held in memory, with store-like version/position assignment."""

    tenant: str
    kind: str
    name: str
    events: list[Event] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = ResourceState.empty(self.tenant, self.kind, self.name)

    def append(self, events: list[Event]) -> list[Event]:
        recorded = []
        for event in events:
            version = len(self.events) + 1
            stored = event.recorded(
                stream_version=version, position=version, recorded_at=event.metadata.occurred_at
            )
            self.events.append(stored)
            self.state = evolve(self.state, stored)
            recorded.append(stored)
        return recorded

    def reconcile(
        self, controller: Controller, trigger: Event, *, now: datetime | None = None
    ) -> Step:
        ctx = ReconcileContext.for_trigger(trigger, now=now)
        state = self.state
        decision = controller.reconcile(trigger, state, ctx)
        events = self.append(apply_decision(state, trigger, decision, ctx))
        step = Step(trigger, state, ctx, decision, events)
        self.steps.append(step)
        return step

    def deliver(self, controller: Controller, intent: Event) -> Step:
        """Admit ``intent`` (stored or rejected) and reconcile because of it."""
        ctx = ReconcileContext.for_trigger(intent)
        admitted = self.append(admit_intent(self.state, intent, ctx))
        return self.reconcile(controller, admitted[0])

    def types(self, start: int = 0) -> list[str]:
        return [e.type for e in self.events[start:]]
