"""OrganizationController: every behaviour of issue 2, its purity, and replay."""

from __future__ import annotations

import copy
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.organization.controllers import FINALIZER, OrganizationController
from eventplane.controller import ReconcileContext
from eventplane.event import ConditionStatus, apply_decision, fold
from tests.unit.simulate import Stream, org_delete, org_intent

CONTROLLER = OrganizationController()


def new_stream(name: str = "acme") -> Stream:
    return Stream("default", "Organization", name)


def test_new_organization_gets_finalizer_provisioned_fact_and_ready_true() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1, plan="pro"))
    assert stream.types() == [
        "Organization.Requested",
        "Organization.FinalizersUpdated",
        "Organization.Provisioned",
        "Organization.StatusUpdated",
    ]
    state = stream.state
    assert state.finalizers == (FINALIZER,)
    provisioned = stream.events[2]
    assert provisioned.category.value == "fact"
    assert provisioned.data["seats"] == 25
    assert provisioned.data["plan"] == "pro"
    ready = state.status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE
    assert ready.observed_generation == 1
    assert state.status.observed_generation == 1


def test_seat_quota_in_the_provisioned_fact_follows_the_plan() -> None:
    for plan, seats in (("free", 3), ("pro", 25), ("enterprise", 1000)):
        stream = new_stream()
        stream.deliver(CONTROLLER, org_intent(1, plan=plan))
        assert stream.state.facts["Provisioned"]["seats"] == seats


def test_spec_change_gives_updated_fact_without_plan_changed_when_plan_is_the_same() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1))
    before = len(stream.events)
    stream.deliver(CONTROLLER, org_intent(2, display_name="Acme Inc"))
    new_types = stream.types(before)
    assert "Organization.Updated" in new_types
    assert "Organization.PlanChanged" not in new_types
    assert stream.state.generation == 2
    assert stream.state.facts["Updated"]["display_name"] == "Acme Inc"


def test_plan_change_gives_updated_and_plan_changed_facts() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1, plan="free"))
    before = len(stream.events)
    stream.deliver(CONTROLLER, org_intent(2, plan="enterprise"))
    assert stream.types(before) == [
        "Organization.Requested",
        "Organization.Updated",
        "Organization.PlanChanged",
        "Organization.StatusUpdated",
    ]
    changed = stream.events[-2].data
    assert changed == {
        "previous_plan": "free",
        "plan": "enterprise",
        "seats": 1000,
        "generation": 2,
    }


def test_more_owners_than_seats_gives_ready_false_seat_limit_exceeded_and_no_fact() -> None:
    stream = new_stream()
    owners = [f"o{i}@acme.example" for i in range(4)]
    stream.deliver(CONTROLLER, org_intent(1, plan="free", owners=owners))
    assert [e.category.value for e in stream.events[1:]] == ["internal"]
    ready = stream.state.status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.FALSE
    assert ready.reason == "SeatLimitExceeded"
    assert "4 owners" in ready.message
    assert stream.state.finalizers == ()


def test_fixing_the_seat_limit_provisions_the_organization() -> None:
    stream = new_stream()
    owners = [f"o{i}@acme.example" for i in range(4)]
    stream.deliver(CONTROLLER, org_intent(1, plan="free", owners=owners))
    stream.deliver(CONTROLLER, org_intent(2, plan="pro", owners=owners))
    assert "Organization.Provisioned" in stream.types()
    ready = stream.state.status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE


def test_delete_request_gives_deprovisioned_fact_then_removes_finalizer_then_deleted() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1))
    before = len(stream.events)
    stream.deliver(CONTROLLER, org_delete(2))
    assert stream.types(before) == [
        "Organization.DeletionRequested",
        "Organization.Deprovisioned",
        "Organization.FinalizersUpdated",
        "Organization.Deleted",
    ]
    assert stream.state.deleted
    assert not stream.state.exists
    assert stream.state.finalizers == ()


def test_deleting_an_organization_that_was_never_provisioned_needs_no_deprovisioning() -> None:
    stream = new_stream()
    owners = [f"o{i}@acme.example" for i in range(4)]
    stream.deliver(CONTROLLER, org_intent(1, plan="free", owners=owners))
    before = len(stream.events)
    stream.deliver(CONTROLLER, org_delete(2))
    assert stream.types(before) == ["Organization.DeletionRequested", "Organization.Deleted"]


def test_reconciling_a_converged_organization_at_the_same_generation_decides_nothing() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1))
    before = len(stream.events)
    step = stream.reconcile(CONTROLLER, stream.events[-1])
    assert step.events == []
    assert len(stream.events) == before
    # Re-applying the identical spec is stored (audit trail) but changes nothing else.
    stream.deliver(CONTROLLER, org_intent(3))
    assert stream.types(before) == ["Organization.Requested"]
    assert stream.state.generation == 1


def test_reconcile_after_deletion_decides_nothing() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1))
    stream.deliver(CONTROLLER, org_delete(2))
    before = len(stream.events)
    stream.reconcile(CONTROLLER, stream.events[-1])
    assert len(stream.events) == before


def test_recreating_a_deleted_organization_provisions_it_again() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1))
    stream.deliver(CONTROLLER, org_delete(2))
    before = len(stream.events)
    stream.deliver(CONTROLLER, org_intent(3, plan="free"))
    assert "Organization.Provisioned" in stream.types(before)
    assert stream.state.exists
    assert stream.state.generation == 2  # generations never repeat within a stream


def test_the_decision_is_level_triggered_not_event_triggered() -> None:
    stream = new_stream()
    stream.deliver(CONTROLLER, org_intent(1))
    state = stream.state
    ctx = ReconcileContext.for_trigger(stream.events[0])
    by_intent = CONTROLLER.reconcile(stream.events[0], state, ctx)
    by_status = CONTROLLER.reconcile(stream.events[-1], state, ctx)
    assert by_intent == by_status


# -- determinism and replay -------------------------------------------------------------------

plans = st.sampled_from(["free", "pro", "enterprise"])
owner_lists = st.lists(
    st.from_regex(r"\A[a-z]{1,6}@acme\.example\Z"), min_size=1, max_size=5, unique=True
)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("apply"), plans, owner_lists),
        st.tuples(st.just("delete"), st.none(), st.none()),
        st.tuples(st.just("resync"), st.none(), st.none()),
    ),
    min_size=1,
    max_size=8,
)


def run_history(script: list[tuple[str, str | None, list[str] | None]]) -> Stream:
    stream = new_stream()
    for n, (verb, plan, owners) in enumerate(script, start=1):
        if verb == "apply":
            assert plan is not None
            stream.deliver(CONTROLLER, org_intent(n, plan=plan, owners=owners, display_name="Acme"))
        elif verb == "delete":
            stream.deliver(CONTROLLER, org_delete(n))
        elif stream.events:
            stream.reconcile(CONTROLLER, stream.events[-1])
    return stream


@given(actions)
@settings(max_examples=60, deadline=None)
def test_the_decision_is_identical_when_run_twice_and_on_a_deep_copy(
    script: list[tuple[str, str | None, list[str] | None]],
) -> None:
    stream = run_history(script)
    for step in stream.steps:
        again = CONTROLLER.reconcile(step.trigger, step.state, step.ctx)
        copied = CONTROLLER.reconcile(
            copy.deepcopy(step.trigger), copy.deepcopy(step.state), copy.deepcopy(step.ctx)
        )
        assert again == step.decision
        assert copied == step.decision


@given(actions)
@settings(max_examples=60, deadline=None)
def test_replaying_a_recorded_history_reproduces_the_recorded_decisions_and_events(
    script: list[tuple[str, str | None, list[str] | None]],
) -> None:
    recorded = run_history(script)
    for step in recorded.steps:
        # Rebuild the state from the recorded stream up to the step, as a restarted runtime would.
        version = step.state.version
        state = fold(
            recorded.events[:version], initial=step.state.empty("default", "Organization", "acme")
        )
        assert state == step.state
        decision = CONTROLLER.reconcile(step.trigger, state, step.ctx)
        assert decision == step.decision
        replayed = apply_decision(state, step.trigger, decision, step.ctx)
        assert [e.unrecorded() for e in step.events] == replayed


@given(actions)
@settings(max_examples=40, deadline=None)
def test_every_history_ends_converged(
    script: list[tuple[str, str | None, list[str] | None]],
) -> None:
    stream = run_history(script)
    if stream.events:
        assert (
            stream.reconcile(
                CONTROLLER,
                stream.events[-1],
                now=stream.events[-1].metadata.occurred_at + timedelta(hours=1),
            ).events
            == []
        )
