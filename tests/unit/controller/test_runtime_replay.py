"""Determinism: replaying a recorded store through the controllers reproduces every
decision the runtime recorded, event for event (ids and times included).

The replay below is written independently of the runtime: it rebuilds each decision's
context from the recorded trigger alone (its ``occurred_at``, or a timer's ``due_at``),
so a runtime that leaked the wall clock, a random id or hidden state into a decision
would fail here.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from eventplane.bus import InMemoryBus
from eventplane.controller import Controller, ControllerDecision, RetryPolicy
from eventplane.event import (
    Category,
    Event,
    ReconcileContext,
    ResourceState,
    apply_decision,
    evolve,
)
from eventplane.utils import parse_time
from tests.unit.controller.conftest import Harness
from tests.unit.controller.controllers import ByName, FailingFor
from tests.unit.controller.test_runtime_failures import FAST
from tests.unit.controller.test_runtime_lifecycle import raw_intent
from tests.unit.simulate import org_delete, org_intent


def replay_stream(
    events: list[Event],
    everything: dict[object, Event],
    controllers: list[Controller],
    retry: RetryPolicy,
) -> list[tuple[list[Event], list[Event]]]:
    """(recorded, replayed) for every decision recorded in one stream."""
    first = events[0]
    state = ResourceState.empty(first.tenant, first.kind, first.name)
    pairs: list[tuple[list[Event], list[Event]]] = []
    i = 0
    while i < len(events):
        event = events[i]
        if event.category is Category.INTENT or event.reason == "IntentRejected":
            state = evolve(state, event)  # admission, not a decision
            i += 1
            continue
        cause = event.metadata.causation_id
        j = i
        while (
            j < len(events)
            and events[j].metadata.causation_id == cause
            and events[j].category is not Category.INTENT
            and events[j].reason != "IntentRejected"
        ):
            j += 1
        recorded = events[i:j]
        trigger = everything[cause].unrecorded()
        now: datetime | None = None
        if trigger.reason == "RequeueScheduled":
            now = parse_time(str(trigger.data["due_at"]))
        ctx = ReconcileContext.for_trigger(
            trigger, now=now, attempt=state.status.attempts + 1, retry=retry
        )
        replayed: list[Event] = []
        replay_state = state
        mine = [c for c in controllers if state.kind == c.KIND]
        for controller in mine or [None]:
            if controller is None:
                decision = ControllerDecision.nothing()
            else:
                try:
                    decision = controller.reconcile(trigger, replay_state, ctx)
                except Exception as exc:
                    decision = ControllerDecision.from_exception(exc)
            new = apply_decision(replay_state, trigger, decision, ctx)
            for e in new:
                replay_state = evolve(replay_state, e)
            replayed.extend(new)
        pairs.append((recorded, replayed))
        for e in recorded:
            state = evolve(state, e)
        i = j
    return pairs


async def test_replaying_the_recorded_store_reproduces_every_decision(
    harness: Harness,
) -> None:
    controllers: list[Controller] = [
        ByName(
            bad=FailingFor("bad"),  # retries until exhausted
            flaky=FailingFor("flaky", until_attempts=2),  # recovers after two failures
            doomed=FailingFor("doomed", permanent=True),
        )
    ]
    owners = [f"o{i}@x.example" for i in range(4)]
    rounds = [
        [
            org_intent(1),
            org_intent(2, name="bad"),
            org_intent(3, name="flaky"),
            org_intent(4, name="doomed"),
            org_intent(5, name="small", plan="free", owners=owners),
            raw_intent("Widget", {"size": 1}, name="w"),
        ],
        [org_intent(6, plan="enterprise"), org_intent(7, name="small", plan="pro", owners=owners)],
        [org_delete(8), org_intent(9, name="doomed", plan="enterprise")],
        [org_intent(1)],  # a duplicate delivery (new bus below)
    ]
    for batch in rounds:
        harness.bus = InMemoryBus()
        await harness.drive(*batch, controllers=controllers, retry=FAST, timer_horizon=5.0)
        await harness.bus.close()

    everything = await harness.store.read_all(limit=100_000)
    by_id = {e.id: e for e in everything}
    streams: dict[tuple[str, str, str], list[Event]] = defaultdict(list)
    for event in everything:
        streams[event.stream].append(event)

    compared = 0
    for events in streams.values():
        for recorded, replayed in replay_stream(events, by_id, controllers, FAST):
            assert [e.unrecorded() for e in recorded] == replayed
            compared += 1
    # Enough decisions of every kind were checked: provision, update, seat limit,
    # retries and exhaustion, recovery, permanent failure, deletion.
    types = {e.type for e in everything}
    assert {
        "Organization.Provisioned",
        "Organization.PlanChanged",
        "Organization.Deleted",
        "Organization.ReconcileFailed",
        "Organization.RequeueScheduled",
        "Widget.IntentRejected",
    } <= types
    assert compared >= 12
