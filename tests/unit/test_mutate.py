"""The mutate helpers: intents admitted or rejected, decisions turned into events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventplane.event import (
    Category,
    ConditionStatus,
    ControllerDecision,
    Event,
    ReconcileContext,
    ResourceState,
    RetryPolicy,
    TransientError,
    admit_intent,
    apply_decision,
    condition,
    fact,
    fold,
    record_exception,
    reject_intent,
    rejection_id,
)
from tests.unit.simulate import T0, Stream, org_delete, org_intent

FIN = "example.com/cleanup"


def created() -> Stream:
    """A stream holding one admitted Requested intent (generation 1), nothing reconciled."""
    stream = Stream("default", "Organization", "acme")
    intent = org_intent(1)
    stream.append(admit_intent(stream.state, intent, ReconcileContext.for_trigger(intent)))
    return stream


def decide(
    stream: Stream, decision: ControllerDecision, *, minutes: int = 10, **ctx_args: object
) -> list[Event]:
    trigger = stream.events[-1]
    ctx = ReconcileContext(now=T0 + timedelta(minutes=minutes), trigger_id=trigger.id, **ctx_args)  # type: ignore[arg-type]
    return stream.append(apply_decision(stream.state, trigger, decision, ctx))


# -- admit_intent -----------------------------------------------------------------------------


def test_first_requested_intent_is_stored_with_generation_one() -> None:
    stream = created()
    assert stream.events[0].metadata.generation == 1
    assert stream.state.exists
    assert stream.state.generation == 1
    assert stream.state.last_intent_id == stream.events[0].id


def test_intent_with_changed_spec_bumps_generation_and_identical_spec_does_not() -> None:
    stream = created()
    same = org_intent(2)
    changed = org_intent(3, plan="free")
    assert (
        admit_intent(stream.state, same, ReconcileContext.for_trigger(same))[0].metadata.generation
        == 1
    )
    assert (
        admit_intent(stream.state, changed, ReconcileContext.for_trigger(changed))[
            0
        ].metadata.generation
        == 2
    )


def test_admitted_intent_keeps_its_id_and_correlation() -> None:
    stream = created()
    intent = org_intent(2, plan="free")
    stored = admit_intent(stream.state, intent, ReconcileContext.for_trigger(intent))[0]
    assert stored.id == intent.id
    assert stored.metadata.correlation_id == intent.metadata.correlation_id
    assert stored.spec == intent.spec


def test_delete_intent_sets_deletion_requested_at_which_never_moves() -> None:
    stream = created()
    first = org_delete(2)
    stream.append(admit_intent(stream.state, first, ReconcileContext.for_trigger(first)))
    assert stream.state.deletion_requested_at == first.metadata.occurred_at
    second = org_delete(3)
    stored = admit_intent(stream.state, second, ReconcileContext.for_trigger(second))[0]
    assert stored.deletion_requested_at == first.metadata.occurred_at


def test_delete_intent_for_a_missing_resource_is_rejected_with_not_found() -> None:
    state = ResourceState.empty("default", "Organization", "acme")
    intent = org_delete(1)
    [rejected] = admit_intent(state, intent, ReconcileContext.for_trigger(intent))
    assert rejected.type == "Organization.IntentRejected"
    assert rejected.category is Category.FACT
    assert rejected.data["reason"] == "NotFound"
    assert rejected.data["intent_id"] == str(intent.id)
    assert rejected.metadata.causation_id == intent.id
    assert rejected.id == rejection_id(intent)


def test_requested_intent_while_deletion_is_in_progress_is_rejected() -> None:
    stream = created()
    decide(stream, ControllerDecision.done(add_finalizers=[FIN]))
    delete = org_delete(2)
    stream.append(admit_intent(stream.state, delete, ReconcileContext.for_trigger(delete)))
    again = org_intent(3, plan="free")
    [rejected] = admit_intent(stream.state, again, ReconcileContext.for_trigger(again))
    assert rejected.data["reason"] == "DeletionInProgress"


def test_rejection_of_the_same_intent_has_the_same_id_whatever_the_context() -> None:
    state = ResourceState.empty("default", "Organization", "acme")
    intent = org_delete(1)
    a = reject_intent(state, intent, "Forbidden", "no", ReconcileContext.for_trigger(intent))
    b = reject_intent(
        state,
        intent,
        "Forbidden",
        "no",
        ReconcileContext.for_trigger(intent, now=T0 + timedelta(days=1)),
    )
    assert a == b


def test_rejected_intent_does_not_create_the_resource() -> None:
    stream = Stream("default", "Organization", "acme")
    intent = org_delete(1)
    stream.append(admit_intent(stream.state, intent, ReconcileContext.for_trigger(intent)))
    assert not stream.state.exists
    assert stream.state.version == 1


def test_admitting_a_non_intent_or_another_streams_intent_is_a_programming_error() -> None:
    stream = created()
    ctx = ReconcileContext.for_trigger(stream.events[0])
    other = org_intent(5, name="globex")
    with pytest.raises(ValueError, match="targets default/Organization/globex"):
        admit_intent(stream.state, other, ctx)
    status_event = decide(stream, ControllerDecision.done(phase="Active"))[0]
    with pytest.raises(ValueError, match="not an intent"):
        admit_intent(stream.state, status_event, ctx)


# -- apply_decision ---------------------------------------------------------------------------


def test_events_are_stamped_with_stream_causation_correlation_generation_and_ctx_time() -> None:
    stream = created()
    trigger = stream.events[-1]
    [event, _status] = decide(stream, ControllerDecision.done(fact("Provisioned", seats=3)))
    assert event.type == "Organization.Provisioned"
    assert event.stream == ("default", "Organization", "acme")
    assert event.api_version == "organization/v1"
    assert event.metadata.causation_id == trigger.id
    assert event.metadata.correlation_id == trigger.metadata.correlation_id
    assert event.metadata.generation == 1
    assert event.metadata.occurred_at == T0 + timedelta(minutes=10)
    assert event.data == {"seats": 3}


def test_nothing_on_a_converged_resource_writes_nothing() -> None:
    stream = created()
    decide(stream, ControllerDecision.done(conditions=[condition("Ready", True, "Ok")]))
    assert (
        decide(
            stream, ControllerDecision.done(conditions=[condition("Ready", True, "Ok")]), minutes=20
        )
        == []
    )
    assert decide(stream, ControllerDecision.nothing(), minutes=30) == []


def test_decision_for_a_resource_that_does_not_exist_writes_nothing() -> None:
    state = ResourceState.empty("default", "Organization", "acme")
    trigger = org_intent(1)
    ctx = ReconcileContext.for_trigger(trigger)
    assert apply_decision(state, trigger, ControllerDecision.done(fact("X")), ctx) == []


def test_last_transition_time_moves_only_when_condition_status_moves() -> None:
    stream = created()
    decide(
        stream,
        ControllerDecision.done(conditions=[condition("Ready", False, "Waiting")]),
        minutes=10,
    )
    first = stream.state.status.condition("Ready")
    decide(
        stream,
        ControllerDecision.done(conditions=[condition("Ready", False, "StillWaiting", "m")]),
        minutes=20,
    )
    second = stream.state.status.condition("Ready")
    decide(
        stream, ControllerDecision.done(conditions=[condition("Ready", True, "Done")]), minutes=30
    )
    third = stream.state.status.condition("Ready")
    assert first is not None
    assert second is not None
    assert third is not None
    assert second.reason == "StillWaiting"
    assert second.last_transition_time == first.last_transition_time == T0 + timedelta(minutes=10)
    assert third.last_transition_time == T0 + timedelta(minutes=30)


def test_conditions_keep_their_order_and_new_types_are_appended() -> None:
    stream = created()
    decide(
        stream,
        ControllerDecision.done(
            conditions=[condition("Ready", False, "A"), condition("Progressing", True, "B")]
        ),
    )
    decide(
        stream,
        ControllerDecision.done(
            conditions=[condition("Healthy", True, "C"), condition("Ready", True, "D")]
        ),
        minutes=11,
    )
    assert [c.type for c in stream.state.status.conditions] == ["Ready", "Progressing", "Healthy"]


def test_finalizer_addition_comes_before_facts_and_removal_after() -> None:
    stream = created()
    events = decide(stream, ControllerDecision.done(fact("Provisioned"), add_finalizers=[FIN]))
    assert [e.reason for e in events] == ["FinalizersUpdated", "Provisioned", "StatusUpdated"]
    events = decide(
        stream, ControllerDecision.done(fact("Cleaned"), remove_finalizers=[FIN]), minutes=11
    )
    assert [e.reason for e in events] == ["Cleaned", "FinalizersUpdated"]
    assert stream.state.finalizers == ()


def test_adding_a_present_finalizer_or_removing_an_absent_one_changes_nothing() -> None:
    stream = created()
    decide(stream, ControllerDecision.done(add_finalizers=[FIN]))
    assert decide(stream, ControllerDecision.done(add_finalizers=[FIN]), minutes=11) == []
    assert (
        decide(stream, ControllerDecision.done(remove_finalizers=["other.io/x"]), minutes=12) == []
    )


def test_deleted_is_recorded_only_when_deletion_was_requested_and_no_finalizers_remain() -> None:
    stream = created()
    decide(stream, ControllerDecision.done(add_finalizers=[FIN]))
    delete = org_delete(2)
    stream.append(admit_intent(stream.state, delete, ReconcileContext.for_trigger(delete)))
    assert decide(stream, ControllerDecision.nothing(), minutes=12) == []
    assert stream.state.exists
    events = decide(stream, ControllerDecision.done(remove_finalizers=[FIN]), minutes=13)
    assert [e.reason for e in events] == ["FinalizersUpdated", "Deleted"]
    assert stream.state.deleted
    assert events[-1].data["deletion_requested_at"] is not None


def test_requeue_is_recorded_as_a_durable_timer_and_cleared_when_no_longer_wanted() -> None:
    stream = created()
    events = decide(stream, ControllerDecision.requeue(after=timedelta(minutes=5)))
    assert [e.reason for e in events] == ["StatusUpdated", "RequeueScheduled"]
    assert events[-1].data["due_at"] == "2026-01-01T12:15:00.000000Z"
    assert stream.state.requeue_at == T0 + timedelta(minutes=15)
    # A restarted runtime finds the timer by folding the stream.
    assert fold(stream.events).requeue_at == T0 + timedelta(minutes=15)
    events = decide(stream, ControllerDecision.nothing(), minutes=15)
    assert [e.reason for e in events] == ["RequeueCleared"]
    assert stream.state.requeue_at is None


def test_retry_counts_attempts_records_the_error_and_schedules_backoff() -> None:
    stream = created()
    events = decide(stream, ControllerDecision.retry("UpstreamDown", "billing API 503"))
    assert [e.reason for e in events] == ["StatusUpdated", "RequeueScheduled"]
    status = stream.state.status
    assert status.attempts == 1
    assert status.last_error == "billing API 503"
    synced = status.condition("Synced")
    assert synced is not None
    assert synced.status is ConditionStatus.FALSE
    assert synced.reason == "UpstreamDown"
    assert stream.state.requeue_at is not None
    assert events[-1].data["reason"] == "Retry"
    decide(stream, ControllerDecision.retry("UpstreamDown", "billing API 503"), minutes=11)
    assert stream.state.status.attempts == 2


def test_success_after_retries_resets_attempts_and_sets_synced_true() -> None:
    stream = created()
    decide(stream, ControllerDecision.retry("UpstreamDown", "503"))
    decide(stream, ControllerDecision.done(), minutes=11)
    status = stream.state.status
    assert status.attempts == 0
    assert status.last_error is None
    synced = status.condition("Synced")
    assert synced is not None
    assert synced.status is ConditionStatus.TRUE
    assert stream.state.requeue_at is None


def test_retry_with_explicit_delay_uses_it() -> None:
    stream = created()
    decide(stream, ControllerDecision.retry("Busy", "later", after=timedelta(seconds=42)))
    assert stream.state.requeue_at == T0 + timedelta(minutes=10, seconds=42)


def test_exhausted_retries_become_a_failure_with_ready_false_and_a_fact() -> None:
    stream = created()
    policy = RetryPolicy(max_attempts=2)
    decide(stream, ControllerDecision.retry("UpstreamDown", "503"), retry=policy)
    events = decide(
        stream, ControllerDecision.retry("UpstreamDown", "503"), minutes=11, retry=policy
    )
    assert [e.reason for e in events] == ["ReconcileFailed", "StatusUpdated", "RequeueCleared"]
    assert events[0].category is Category.FACT
    assert events[0].data["attempts"] == 2
    status = stream.state.status
    ready = status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.FALSE
    assert status.phase == "Failed"
    assert "gave up after 2 attempts" in (status.last_error or "")


def test_permanent_failure_is_recorded_once() -> None:
    stream = created()
    events = decide(stream, ControllerDecision.failed("InvalidBilling", "account closed"))
    assert [e.reason for e in events] == ["ReconcileFailed", "StatusUpdated"]
    assert events[0].data == {
        "reason": "InvalidBilling",
        "message": "account closed",
        "attempts": 0,
        "generation": 1,
    }
    assert (
        decide(stream, ControllerDecision.failed("InvalidBilling", "account closed"), minutes=11)
        == []
    )


def test_an_exception_from_reconcile_is_recorded_as_retry_or_failure() -> None:
    stream = created()
    trigger = stream.events[-1]
    ctx = ReconcileContext.for_trigger(trigger)
    transient = record_exception(stream.state, trigger, TransientError("flaky", delay=5), ctx)
    assert [e.reason for e in transient] == ["StatusUpdated", "RequeueScheduled"]
    assert transient[-1].data["due_at"] == "2026-01-01T12:01:05.000000Z"
    crash = record_exception(stream.state, trigger, ZeroDivisionError("boom"), ctx)
    assert crash[0].status is not None
    assert crash[0].status.last_error == "ZeroDivisionError: boom"


def test_event_ids_are_deterministic_for_the_same_state_trigger_and_ctx() -> None:
    stream = created()
    trigger = stream.events[-1]
    ctx = ReconcileContext.for_trigger(trigger)
    decision = ControllerDecision.done(fact("A"), fact("B"), add_finalizers=[FIN])
    first = apply_decision(stream.state, trigger, decision, ctx)
    second = apply_decision(stream.state, trigger, decision, ctx)
    assert first == second
    assert len({e.id for e in first}) == len(first)
    assert all(e.id.version == 7 for e in first)


def test_event_ids_differ_once_the_stream_has_moved_on() -> None:
    stream = created()
    trigger = stream.events[-1]
    ctx = ReconcileContext.for_trigger(trigger)
    before = apply_decision(stream.state, trigger, ControllerDecision.done(fact("A")), ctx)
    stream.append(before)
    after = apply_decision(stream.state, trigger, ControllerDecision.done(fact("A")), ctx)
    assert {e.id for e in before}.isdisjoint(e.id for e in after)
