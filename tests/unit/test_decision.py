"""ControllerDecision, its named constructors and the values around it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from eventplane.controller import (
    ConditionPatch,
    Controller,
    ControllerDecision,
    EmitEvent,
    Outcome,
    PermanentError,
    ReconcileContext,
    RetryPolicy,
    TransientError,
    Watch,
    condition,
    fact,
)
from eventplane.event import Category, ConditionStatus, Event, ResourceState
from tests.unit.simulate import event_id, org_delete, org_intent


def test_nothing_is_done_with_no_effects() -> None:
    decision = ControllerDecision.nothing()
    assert decision.outcome is Outcome.DONE
    assert decision == ControllerDecision()


def test_done_collects_events_conditions_and_finalizers_in_one_line() -> None:
    decision = ControllerDecision.done(
        fact("Provisioned", seats=3),
        conditions=[condition("Ready", True, "Provisioned")],
        add_finalizers=["example.com/cleanup"],
    )
    assert decision.events == (EmitEvent("Provisioned", {"seats": 3}, Category.FACT),)
    assert decision.conditions == (ConditionPatch("Ready", ConditionStatus.TRUE, "Provisioned"),)
    assert decision.add_finalizers == ("example.com/cleanup",)


def test_requeue_needs_a_positive_delay() -> None:
    assert ControllerDecision.requeue(after=timedelta(seconds=30)).outcome is Outcome.REQUEUE
    with pytest.raises(ValueError, match="positive"):
        ControllerDecision.requeue(after=timedelta(0))
    with pytest.raises(ValueError, match="needs requeue_after"):
        ControllerDecision(outcome=Outcome.REQUEUE)


def test_retry_and_failed_carry_a_camel_case_reason_and_a_message() -> None:
    assert ControllerDecision.retry("UpstreamDown", "503").outcome is Outcome.RETRY
    assert ControllerDecision.failed("BadInput", "no").outcome is Outcome.FAILED
    with pytest.raises(ValueError, match="CamelCase"):
        ControllerDecision.retry("upstream down", "503")
    with pytest.raises(ValueError, match="needs a reason and a message"):
        ControllerDecision(outcome=Outcome.FAILED)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: fact("Deleted"), id="reserved-reason"),
        pytest.param(lambda: fact("not-camel"), id="bad-reason"),
        pytest.param(lambda: EmitEvent("Asked", {}, Category.INTENT), id="intent-category"),
        pytest.param(
            lambda: ControllerDecision.done(add_finalizers=["cleanup"]), id="unqualified-finalizer"
        ),
        pytest.param(
            lambda: ControllerDecision.done(
                add_finalizers=["a.io/x"], remove_finalizers=["a.io/x"]
            ),
            id="add-and-remove",
        ),
        pytest.param(
            lambda: ControllerDecision.done(
                conditions=[condition("Ready", True, "A"), condition("Ready", False, "B")]
            ),
            id="duplicate-condition",
        ),
        pytest.param(lambda: condition("ready", True, "A"), id="lowercase-condition-type"),
    ],
)
def test_invalid_decisions_are_refused_at_construction(build: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  (each case has its own message)
        build()  # type: ignore[operator]


def test_exceptions_map_to_explicit_outcomes() -> None:
    transient = ControllerDecision.from_exception(TransientError("flaky", delay=3, reason="Flaky"))
    assert transient.outcome is Outcome.RETRY
    assert transient.reason == "Flaky"
    assert transient.requeue_after == timedelta(seconds=3)
    permanent = ControllerDecision.from_exception(PermanentError("bad", reason="BadInput"))
    assert (permanent.outcome, permanent.reason, permanent.error) == (
        Outcome.FAILED,
        "BadInput",
        "bad",
    )
    other = ControllerDecision.from_exception(KeyError("x"))
    assert other.outcome is Outcome.RETRY
    assert other.reason == "ReconcileError"


def test_decisions_survive_deep_copy_unchanged() -> None:
    decision = ControllerDecision.done(
        fact("A", nested={"k": [1, 2]}), conditions=[condition("Ready", True, "Ok")]
    )
    assert copy.deepcopy(decision) == decision


def test_retry_policy_backs_off_exponentially_within_the_cap_and_deterministically() -> None:
    policy = RetryPolicy(base=timedelta(seconds=1), cap=timedelta(seconds=60), max_attempts=10)
    delays = [policy.delay(n, b"seed") for n in range(1, 11)]
    assert delays == [policy.delay(n, b"seed") for n in range(1, 11)]
    assert all(timedelta(seconds=0.9) <= d <= timedelta(seconds=60) for d in delays)
    assert delays[0] < delays[3] < delays[6]
    assert delays[-1] <= timedelta(seconds=60)
    with pytest.raises(ValueError, match="base <= cap"):
        RetryPolicy(base=timedelta(seconds=5), cap=timedelta(seconds=1))


def test_context_takes_now_from_the_trigger_and_derives_stable_time_ordered_ids() -> None:
    trigger = org_intent(1)
    ctx = ReconcileContext.for_trigger(trigger)
    assert ctx.now == trigger.metadata.occurred_at
    assert ctx.derive_id("a", 1) == ReconcileContext.for_trigger(trigger).derive_id("a", 1)
    assert ctx.derive_id("a", 1) != ctx.derive_id("a", 2)
    derived = ctx.derive_id(0)
    assert derived.version == 7
    later = ReconcileContext.for_trigger(
        trigger, now=trigger.metadata.occurred_at + timedelta(seconds=1)
    )
    assert later.derive_id(0) > derived


def test_context_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ReconcileContext(now=datetime(2026, 1, 1), trigger_id=event_id(1))
    assert (
        ReconcileContext(now=datetime(2026, 1, 1, tzinfo=UTC), trigger_id=event_id(1)).attempt == 1
    )


class _Sample(Controller):
    KIND = "Organization"

    def reconcile(
        self, event: Event, state: ResourceState, ctx: ReconcileContext
    ) -> ControllerDecision:
        return ControllerDecision.nothing()


def test_controller_watches_its_kinds_intents_by_default() -> None:
    assert _Sample.wants(org_intent(1))
    assert _Sample.wants(org_delete(2))
    status_like = org_intent(1).model_copy(
        update={"category": Category.FACT, "type": "Organization.Provisioned"}
    )
    assert not _Sample.wants(status_like)


def test_watch_filters_on_kind_category_and_type() -> None:
    watch = Watch(
        kind="Organization",
        categories=(Category.INTENT,),
        types=("Organization.DeletionRequested",),
    )
    assert watch.matches(org_delete(1))
    assert not watch.matches(org_intent(1))
    assert Watch().matches(org_intent(1))


def test_controller_kind_must_be_pascal_case() -> None:
    with pytest.raises(TypeError, match="PascalCase"):

        class _Bad(Controller):  # pyright: ignore[reportUnusedClass]
            KIND = "organization"

            def reconcile(
                self, event: Event, state: ResourceState, ctx: ReconcileContext
            ) -> ControllerDecision:
                return ControllerDecision.nothing()
