"""The ControllerRuntime drives the Organization lifecycle end to end on SQLite + memory bus."""

from __future__ import annotations

from typing import Any

from eventplane.bus import InMemoryBus
from eventplane.event import Category, ConditionStatus, Event, EventMetadata, encode
from eventplane.utils import utcnow, uuid7
from tests.unit.controller.conftest import Harness
from tests.unit.simulate import org_delete, org_intent


def raw_intent(
    kind: str,
    spec: dict[str, Any] | None,
    *,
    name: str = "acme",
    reason: str = "Requested",
    api_version: str | None = None,
) -> Event:
    """An intent built without EventFactory (which would refuse it): what a buggy or
    hostile client could put on the bus."""
    ident = uuid7()
    return Event(
        id=ident,
        tenant="default",
        kind=kind,
        name=name,
        type=f"{kind}.{reason}",
        category=Category.INTENT,
        api_version=api_version or f"{kind.lower()}/v1",
        spec=spec,
        metadata=EventMetadata(
            correlation_id=ident,
            actor="user:test",
            source="tests",
            occurred_at=utcnow(),
        ),
    )


async def test_applied_organization_is_provisioned_and_ready(harness: Harness) -> None:
    runtime = await harness.drive(org_intent(1))

    assert await harness.types("acme") == [
        "Requested",
        "FinalizersUpdated",
        "Provisioned",
        "StatusUpdated",
    ]
    state = await harness.state("acme")
    ready = state.status.condition("Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE
    assert state.status.observed_generation == state.generation == 1
    assert state.facts["Provisioned"]["seats"] == 25
    assert runtime.stats.reconciles[("Organization", "done")] == 1
    assert runtime.stats.admitted == 1
    assert harness.bus.message_count == 1  # the runtime publishes nothing itself


async def test_every_event_of_a_reconcile_is_caused_by_the_intent(harness: Harness) -> None:
    intent = org_intent(1)
    await harness.drive(intent)

    events = await harness.stream("acme")
    assert events[0].id == intent.id
    assert {e.metadata.causation_id for e in events[1:]} == {intent.id}
    assert {e.metadata.correlation_id for e in events} == {intent.metadata.correlation_id}


async def test_spec_update_bumps_generation_and_announces_plan_change(harness: Harness) -> None:
    await harness.drive(org_intent(1, plan="pro"))
    await harness.drive(org_intent(2, plan="enterprise"))

    assert (await harness.types("acme"))[4:] == [
        "Requested",
        "Updated",
        "PlanChanged",
        "StatusUpdated",
    ]
    state = await harness.state("acme")
    assert state.generation == 2
    assert state.status.observed_generation == 2
    assert state.facts["PlanChanged"] == {
        "previous_plan": "pro",
        "plan": "enterprise",
        "seats": 1000,
        "generation": 2,
    }


async def test_reapplying_the_same_spec_changes_nothing_but_storing_the_intent(
    harness: Harness,
) -> None:
    await harness.drive(org_intent(1))
    await harness.drive(org_intent(2))

    assert (await harness.types("acme"))[4:] == ["Requested"]
    assert (await harness.state("acme")).generation == 1


async def test_seat_limit_exceeded_sets_ready_false_without_provisioning(
    harness: Harness,
) -> None:
    owners = [f"o{i}@acme.example" for i in range(4)]
    await harness.drive(org_intent(1, plan="free", owners=owners))

    state = await harness.state("acme")
    ready = state.status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "SeatLimitExceeded")
    assert "Provisioned" not in await harness.types("acme")
    assert state.status.phase == "Blocked"


async def test_delete_records_deleted_only_after_the_finalizer_is_removed(
    harness: Harness,
) -> None:
    await harness.drive(org_intent(1))
    await harness.drive(org_delete(2))

    assert (await harness.types("acme"))[4:] == [
        "DeletionRequested",
        "Deprovisioned",
        "FinalizersUpdated",
        "Deleted",
    ]
    state = await harness.state("acme")
    assert state.deleted
    assert not state.exists
    assert state.finalizers == ()


async def test_delete_of_a_missing_resource_is_rejected_as_not_found(harness: Harness) -> None:
    runtime = await harness.drive(org_delete(1, name="ghost"))

    (event,) = await harness.stream("ghost")
    assert event.type == "Organization.IntentRejected"
    assert event.data["reason"] == "NotFound"
    assert runtime.stats.rejections[("Organization", "NotFound")] == 1


async def test_intent_for_an_unknown_kind_becomes_an_intent_rejected_fact(
    harness: Harness,
) -> None:
    intent = raw_intent("Widget", {"size": 3})
    runtime = await harness.drive(intent)

    (event,) = await harness.stream("acme", kind="Widget")
    assert event.type == "Widget.IntentRejected"
    assert event.category is Category.FACT
    assert event.data["reason"] == "UnknownKind"
    assert event.data["intent_id"] == str(intent.id)
    assert "Widget" in str(event.data["message"])
    assert runtime.stats.rejections[("Widget", "UnknownKind")] == 1
    # Acked, not left for redelivery: a second runtime finds nothing to do.
    again = await harness.drive()
    assert again.stats.deliveries == 0


async def test_intent_with_an_invalid_spec_is_rejected_naming_the_field(
    harness: Harness,
) -> None:
    intent = raw_intent(
        "Organization",
        {"display_name": "Acme", "plan": "platinum", "owners": ["a@b.example"]},
        api_version="organization/v1",
    )
    await harness.drive(intent)

    (event,) = await harness.stream("acme")
    assert event.data["reason"] == "SpecInvalid"
    assert "spec.plan" in str(event.data["message"])


async def test_intent_with_an_unserved_api_version_is_rejected(harness: Harness) -> None:
    intent = raw_intent(
        "Organization",
        {"display_name": "Acme", "plan": "pro", "owners": ["a@b.example"]},
        api_version="organization/v9",
    )
    await harness.drive(intent)

    (event,) = await harness.stream("acme")
    assert event.data["reason"] == "UnsupportedApiVersion"


async def test_duplicate_delivery_of_a_stored_intent_writes_nothing(harness: Harness) -> None:
    intent = org_intent(1)
    await harness.drive(intent)
    before = await harness.stream("acme")

    # The same intent again, as after a crash between append and ack: a new bus
    # delivers it once more to a new runtime on the same store.
    harness.bus = InMemoryBus()
    runtime = await harness.drive(intent)

    # The new runtime has no memo of the stream, so its first try decides the intent as
    # new — the same events, ids and content as the first time — and the append finds them
    # all stored: an idempotent no-op (counted as admitted again), not a second write.
    assert await harness.stream("acme") == before
    assert (runtime.stats.released, runtime.stats.errors) == (0, 0)
    await harness.bus.close()


async def test_duplicate_delivery_after_the_stream_moved_on_writes_nothing(
    harness: Harness,
) -> None:
    intent = org_intent(1)
    await harness.drive(intent)
    await harness.drive(org_intent(2, plan="pro"))
    before = await harness.stream("acme")

    harness.bus = InMemoryBus()
    runtime = await harness.drive(intent)

    assert await harness.stream("acme") == before
    assert (runtime.stats.released, runtime.stats.errors) == (0, 0)
    await harness.bus.close()


async def test_duplicate_delivery_of_a_rejected_intent_writes_nothing(harness: Harness) -> None:
    intent = raw_intent("Widget", {"size": 3})
    await harness.drive(intent)

    harness.bus = InMemoryBus()
    runtime = await harness.drive(intent)

    assert len(await harness.stream("acme", kind="Widget")) == 1
    assert (runtime.stats.released, runtime.stats.errors) == (0, 0)
    await harness.bus.close()


async def test_older_intent_arriving_after_a_newer_one_is_rejected_as_superseded(
    harness: Harness,
) -> None:
    newer = org_intent(2, plan="enterprise")
    older = org_intent(1, plan="free")
    await harness.drive(newer)
    await harness.drive(older)

    state = await harness.state("acme")
    assert state.spec is not None
    assert state.spec["plan"] == "enterprise"
    assert (await harness.stream("acme"))[-1].data["reason"] == "Superseded"


async def test_intents_for_one_resource_in_one_batch_are_admitted_in_time_order(
    harness: Harness,
) -> None:
    await harness.drive(org_intent(2, plan="enterprise"), org_intent(1, plan="free"))

    events = await harness.stream("acme")
    assert [e.type for e in events[:2]] == ["Organization.Requested"] * 2
    state = await harness.state("acme")
    assert state.spec is not None
    assert state.spec["plan"] == "enterprise"
    assert state.generation == 2
    # Coalesced: one reconcile saw the newest spec, so one Provisioned and no PlanChanged.
    assert [e.reason for e in events].count("Provisioned") == 1


async def test_many_resources_are_reconciled_concurrently(harness: Harness) -> None:
    intents = [org_intent(i, name=f"org-{i}") for i in range(1, 41)]
    runtime = await harness.drive(*intents, max_concurrency=4, batch_size=7)

    for i in range(1, 41):
        assert "Provisioned" in await harness.types(f"org-{i}")
    assert runtime.stats.reconciles[("Organization", "done")] == 40


async def test_intent_claiming_another_tenant_than_its_subject_is_refused_unwritten(
    harness: Harness,
) -> None:
    intent = org_intent(1, tenant="victim")
    harness.bus._publish_raw("eventplane.mallory.organization.intent", encode(intent))
    runtime = await harness.drive()

    assert runtime.stats.terminated == 1
    assert await harness.store.read_all() == []
    again = await harness.drive()
    assert again.stats.deliveries == 0  # terminated, not left for redelivery
