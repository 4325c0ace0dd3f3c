"""Failures: backoff visible in status, bounded retries, permanent failures, isolation."""

from __future__ import annotations

import itertools
from datetime import timedelta

from eventplane.controller import RetryPolicy
from eventplane.event import ConditionStatus
from eventplane.utils import parse_time, utcnow
from tests.unit.controller.conftest import Harness
from tests.unit.controller.controllers import FailingFor
from tests.unit.simulate import org_intent

FAST = RetryPolicy(base=timedelta(milliseconds=2), cap=timedelta(milliseconds=20), max_attempts=4)
SLOW = RetryPolicy(base=timedelta(minutes=1), cap=timedelta(minutes=5))


async def test_controller_raising_for_one_resource_does_not_stall_the_others(
    harness: Harness,
) -> None:
    now = utcnow()  # the backoff counts from the intent's time: keep it in the future
    intents = [org_intent(1, name="bad", at=now)] + [
        org_intent(i, name=f"good-{i}", at=now) for i in range(2, 7)
    ]
    runtime = await harness.drive(
        *intents, controllers=[FailingFor("bad")], retry=SLOW, max_concurrency=2
    )

    for i in range(2, 7):
        ready = (await harness.state(f"good-{i}")).status.condition("Ready")
        assert ready is not None
        assert ready.status is ConditionStatus.TRUE
    bad = await harness.state("bad")
    assert bad.status.attempts == 1
    assert bad.status.last_error == "billing backend is down"
    synced = bad.status.condition("Synced")
    assert synced is not None
    assert (synced.status, synced.reason) == (ConditionStatus.FALSE, "BackendDown")
    assert bad.requeue_at is not None
    assert (await harness.types("bad"))[-1] == "RequeueScheduled"
    assert runtime.stats.reconciles[("Organization", "error")] == 1
    assert runtime.stats.retries["Organization"] == 1
    assert ("default", "Organization", "bad") in runtime.pending_timers


async def test_retries_back_off_exponentially_then_fail_with_a_fact(harness: Harness) -> None:
    runtime = await harness.drive(
        org_intent(1, name="bad"),
        controllers=[FailingFor("bad")],
        retry=FAST,
        timer_horizon=5.0,
    )

    events = await harness.stream("bad")
    schedules = [e for e in events if e.reason == "RequeueScheduled"]
    assert [s.data["reason"] for s in schedules] == ["Retry"] * 3
    dues = [parse_time(str(s.data["due_at"])) for s in schedules]
    start = events[0].metadata.occurred_at
    delays = [(b - a).total_seconds() for a, b in zip([start, *dues], dues, strict=False)]
    for shorter, longer in itertools.pairwise(delays):
        assert 1.6 < longer / shorter < 2.5  # doubling, with the deterministic ±10% jitter
    assert [e.status.attempts for e in events if e.status is not None] == [1, 2, 3, 4]
    (failed,) = [e for e in events if e.reason == "ReconcileFailed"]
    assert failed.data["reason"] == "BackendDown"
    assert failed.data["attempts"] == 4
    state = await harness.state("bad")
    ready = state.status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "BackendDown")
    assert state.status.phase == "Failed"
    assert state.requeue_at is None  # exhausted: no timer left behind
    assert runtime.stats.failures["Organization"] == 1
    assert runtime.stats.timers_fired == 3


async def test_success_after_transient_failures_resets_attempts(harness: Harness) -> None:
    await harness.drive(
        org_intent(1, name="flaky"),
        controllers=[FailingFor("flaky", until_attempts=2)],
        retry=FAST,
        timer_horizon=5.0,
    )

    state = await harness.state("flaky")
    assert state.status.attempts == 0
    assert state.status.last_error is None
    synced = state.status.condition("Synced")
    assert synced is not None
    assert (synced.status, synced.reason) == (ConditionStatus.TRUE, "ReconcileSuccess")
    ready = state.status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE
    assert (await harness.types("flaky")).count("Provisioned") == 1


async def test_retry_decision_backs_off_like_a_raised_transient_error(harness: Harness) -> None:
    runtime = await harness.drive(
        org_intent(1, name="waiting", at=utcnow()),
        controllers=[FailingFor("waiting", as_decision=True)],
        retry=SLOW,
    )

    state = await harness.state("waiting")
    assert state.status.attempts == 1
    assert state.status.last_error == "billing is not ready yet"
    assert runtime.stats.reconciles[("Organization", "retry")] == 1


async def test_permanent_error_records_ready_false_and_one_reconcile_failed_fact(
    harness: Harness,
) -> None:
    controllers = [FailingFor("doomed", permanent=True)]
    runtime = await harness.drive(org_intent(1, name="doomed"), controllers=controllers)
    await harness.drive(org_intent(2, name="doomed"), controllers=controllers)  # re-apply

    types = await harness.types("doomed")
    assert types.count("ReconcileFailed") == 1
    assert "RequeueScheduled" not in types
    state = await harness.state("doomed")
    assert state.facts["ReconcileFailed"]["reason"] == "BillingRejected"
    ready = state.status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "BillingRejected")
    assert state.status.phase == "Failed"
    assert runtime.stats.failures["Organization"] == 1


async def test_a_new_spec_after_a_permanent_failure_is_reconciled_again(
    harness: Harness,
) -> None:
    await harness.drive(
        org_intent(1, name="doomed"), controllers=[FailingFor("doomed", permanent=True)]
    )
    await harness.drive(org_intent(2, name="doomed", plan="enterprise"))

    state = await harness.state("doomed")
    ready = state.status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE
    assert state.facts["Provisioned"]["plan"] == "enterprise"
