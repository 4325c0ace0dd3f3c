"""ResourceState and fold: pure, total and deterministic over any event sequence."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventplane.event import (
    Category,
    Condition,
    ConditionStatus,
    Event,
    EventMetadata,
    ResourceState,
    ResourceStatus,
    evolve,
    fold,
    state_summary,
)
from tests.unit.simulate import T0, event_id, org_delete, org_intent

REASONS = {
    Category.INTENT: ["Requested", "DeletionRequested", "Weird"],
    Category.INTERNAL: [
        "StatusUpdated",
        "FinalizersUpdated",
        "RequeueScheduled",
        "RequeueCleared",
        "Other",
    ],
    Category.FACT: ["Provisioned", "Updated", "Deleted", "IntentRejected", "ReconcileFailed"],
}


# Small pools keep generation cheap; the orderings are what the properties are about.
TIMES = [T0 + timedelta(minutes=m) for m in (0, 1, 5, 60)]
times = st.sampled_from(TIMES)
json_objects = st.sampled_from([{}, {"a": 1}, {"plan": "pro", "generation": 2}, {"x": [1, "y"]}])
statuses = st.sampled_from(
    [
        ResourceStatus(),
        ResourceStatus(phase="Active", observed_generation=1, attempts=0),
        ResourceStatus(
            phase="Failed",
            attempts=3,
            last_error="boom",
            conditions=(
                Condition(
                    type="Ready",
                    status=ConditionStatus.FALSE,
                    reason="Broken",
                    last_transition_time=T0,
                ),
            ),
        ),
    ]
)


@st.composite
def stream_events(draw: st.DrawFn) -> list[Event]:
    """Random but valid events of one stream, in a random (not necessarily sensible) order."""
    count = draw(st.integers(0, 12))
    out: list[Event] = []
    for i in range(count):
        category = draw(st.sampled_from(list(Category)))
        reason = draw(st.sampled_from(REASONS[category]))
        data: dict[str, Any] = draw(json_objects)
        if reason == "RequeueScheduled" and draw(st.booleans()):
            data = {"due_at": "2026-01-01T12:00:00.000000Z"}
        recorded = draw(st.booleans())
        out.append(
            Event(
                id=event_id(i + 1),
                tenant="default",
                kind="Organization",
                name="acme",
                type=f"Organization.{reason}",
                category=category,
                api_version="organization/v1",
                spec=draw(st.none() | json_objects),
                data=data,
                metadata=EventMetadata(
                    generation=draw(st.integers(0, 20)),
                    correlation_id=event_id(1),
                    actor="user:test",
                    source="urn:test",
                    occurred_at=draw(times),
                    stream_version=i + 1 if recorded else None,
                ),
                status=draw(st.none() | statuses),
                finalizers=draw(
                    st.none()
                    | st.lists(st.sampled_from(["a.io/x", "b.io/y"]), max_size=2).map(tuple)
                ),
                deletion_requested_at=draw(st.none() | times),
            )
        )
    return out


def empty() -> ResourceState:
    return ResourceState.empty("default", "Organization", "acme")


@given(stream_events())
@settings(max_examples=100, deadline=None)
def test_folding_the_same_events_twice_gives_the_same_state(events: list[Event]) -> None:
    assert fold(events, initial=empty()) == fold(events, initial=empty())
    assert fold(copy.deepcopy(events), initial=empty()) == fold(events, initial=empty())


@given(stream_events(), st.integers(0, 12))
@settings(max_examples=100, deadline=None)
def test_fold_is_incremental(events: list[Event], cut: int) -> None:
    whole = fold(events, initial=empty())
    head = fold(events[:cut], initial=empty())
    assert fold(events[cut:], initial=head) == whole
    state = empty()
    for event in events:
        state = evolve(state, event)
    assert state == whole


@given(stream_events())
@settings(max_examples=100, deadline=None)
def test_fold_is_total_and_version_counts_the_events(events: list[Event]) -> None:
    state = fold(events, initial=empty())
    assert state.version == len(events)
    assert not (state.exists and state.deleted)
    state_summary(state)  # renders without raising


@given(stream_events())
@settings(max_examples=100, deadline=None)
def test_deletion_requested_at_is_never_unset_within_an_incarnation(events: list[Event]) -> None:
    state = empty()
    for event in events:
        before = state.deletion_requested_at
        recreated = (
            event.reason == "Requested" and event.category is Category.INTENT and not state.exists
        )
        state = evolve(state, event)
        if before is not None and not recreated:
            assert state.deletion_requested_at == before


def test_empty_fold_without_initial_gives_a_nameless_empty_state() -> None:
    state = fold([])
    assert state.version == 0
    assert not state.exists


def test_requested_intent_creates_the_resource_with_its_spec_labels_and_generation() -> None:
    intent = org_intent(1, plan="free").model_copy(
        update={
            "metadata": org_intent(1).metadata.model_copy(
                update={"generation": 1, "labels": {"a": "b"}}
            )
        }
    )
    state = fold([intent])
    assert state.exists
    assert state.spec is not None
    assert state.spec["plan"] == "free"
    assert state.generation == 1
    assert state.labels == {"a": "b"}
    assert state.created_at == intent.metadata.occurred_at
    assert state.correlation_id == intent.metadata.correlation_id


def test_deleted_fact_ends_the_incarnation_and_a_new_intent_starts_a_clean_one() -> None:
    intent = org_intent(1)
    deleted = Event(
        id=event_id(9),
        tenant="default",
        kind="Organization",
        name="acme",
        type="Organization.Deleted",
        category=Category.FACT,
        api_version="organization/v1",
        metadata=EventMetadata(
            correlation_id=intent.id, actor="rt", source="urn:rt", occurred_at=T0
        ),
        finalizers=(),
    )
    delete = org_delete(2)
    gone = fold([intent, delete.model_copy(update={"deletion_requested_at": T0}), deleted])
    assert gone.deleted
    assert not gone.exists
    assert gone.deletion_requested_at == T0
    back = evolve(gone, org_intent(3))
    assert back.exists
    assert not back.deleted
    assert back.deletion_requested_at is None
    assert back.facts == {}


def test_latest_fact_returns_the_most_recent_of_the_given_reasons() -> None:
    state = ResourceState(
        tenant="t",
        kind="Organization",
        name="n",
        facts={"Provisioned": {"g": 1}, "Other": {}, "Updated": {"g": 2}},
    )
    assert state.latest_fact("Provisioned", "Updated") == ("Updated", {"g": 2})
    assert state.latest_fact("Provisioned") == ("Provisioned", {"g": 1})
    assert state.latest_fact() == ("Updated", {"g": 2})
    assert state.latest_fact("Missing") is None


def test_evolve_refuses_an_event_of_another_stream() -> None:
    import pytest

    with pytest.raises(ValueError, match="belongs to stream"):
        evolve(empty(), org_intent(1, name="globex"))


def test_requeue_scheduled_sets_the_timer_and_cleared_removes_it() -> None:
    base = fold([org_intent(1)])

    def internal(reason: str, data: dict[str, Any]) -> Event:
        return Event(
            id=event_id(50),
            tenant="default",
            kind="Organization",
            name="acme",
            type=f"Organization.{reason}",
            category=Category.INTERNAL,
            api_version="organization/v1",
            data=data,
            metadata=EventMetadata(
                correlation_id=event_id(1), actor="rt", source="urn:rt", occurred_at=T0
            ),
        )

    timed = evolve(base, internal("RequeueScheduled", {"due_at": "2026-01-01T13:00:00Z"}))
    assert timed.requeue_at == T0 + timedelta(hours=1)
    assert evolve(timed, internal("RequeueCleared", {})).requeue_at is None
