"""EventStore.append_many: several streams' appends as one unit of work (group commit).

Runs on every backend through the contract fixtures (``store``, ``make_event``). On
PostgreSQL all the appends share one transaction; on SQLite the default loops ``append``.
Either way each append keeps its own expected version and its own outcome.
"""

from __future__ import annotations

from eventplane.errors import ConcurrencyError, ConflictError, DuplicateEventError
from eventplane.event import Category
from eventplane.store import NO_STREAM, EventStore
from tests.integration.store.conftest import EventMaker


async def test_append_many_writes_every_stream_in_order(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    batches = [
        [
            make_event(f"org-{i}"),
            make_event(f"org-{i}", reason="Provisioned", category=Category.FACT),
        ]
        for i in range(3)
    ]
    results = await store.append_many([(b, NO_STREAM) for b in batches])

    assert [[e.id for e in r] for r in results if isinstance(r, list)] == [
        [e.id for e in b] for b in batches
    ]
    positions = [e.metadata.position for r in results if isinstance(r, list) for e in r]
    assert positions == sorted(positions)
    for i in range(3):
        stored = await store.read_stream(tenant, "Organization", f"org-{i}")
        assert [e.metadata.stream_version for e in stored] == [1, 2]


async def test_append_many_reports_a_conflict_without_stopping_the_others(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    await store.append([make_event("taken")], expected_version=NO_STREAM)
    fresh, stale = make_event("fresh"), make_event("taken")

    results = await store.append_many([([stale], NO_STREAM), ([fresh], NO_STREAM)])

    assert isinstance(results[0], ConcurrencyError)
    assert isinstance(results[1], list)
    assert [e.id for e in await store.read_stream(tenant, "Organization", "fresh")] == [fresh.id]
    assert len(await store.read_stream(tenant, "Organization", "taken")) == 1


async def test_append_many_is_idempotent_by_event_id(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    event = make_event("acme")
    (first,) = await store.append_many([([event], NO_STREAM)])
    altered = event.model_copy(update={"data": {"changed": True}})
    (again, changed) = await store.append_many([([event], NO_STREAM), ([altered], NO_STREAM)])

    assert isinstance(first, list)
    assert isinstance(again, list)
    assert again[0].metadata.position == first[0].metadata.position
    assert isinstance(changed, DuplicateEventError)
    assert len(await store.read_stream(tenant, "Organization", "acme")) == 1


async def test_append_many_with_mixed_outcomes_on_distinct_streams_leaves_no_position_gap(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    # Distinct streams and ids: PostgreSQL decides all of them in one set-based call.
    stored = make_event("stored")
    half = make_event("half")
    await store.append([stored], expected_version=NO_STREAM)
    await store.append([half], expected_version=NO_STREAM)
    fresh = [make_event("fresh-a"), make_event("fresh-a", reason="Provisioned")]
    conflicting = make_event("stored-too")
    await store.append([make_event("stored-too")], expected_version=NO_STREAM)
    before = await store.last_position()
    later = make_event("fresh-b")

    results = await store.append_many(
        [
            (fresh, NO_STREAM),
            ([conflicting], NO_STREAM),
            ([stored], NO_STREAM),
            ([half, make_event("half")], 1),
            ([later], NO_STREAM),
        ]
    )

    assert isinstance(results[0], list)
    assert [e.id for e in results[0]] == [f.id for f in fresh]
    assert isinstance(results[1], ConcurrencyError)
    assert isinstance(results[2], list)
    assert results[2][0].id == stored.id
    assert isinstance(results[3], ConflictError)
    assert isinstance(results[4], list)
    assert results[4][0].id == later.id
    appended = await store.read_all(after=before)
    assert [e.metadata.position for e in appended] == [before + 1, before + 2, before + 3]
    assert [e.id for e in appended] == [fresh[0].id, fresh[1].id, later.id]
    assert [e.metadata.stream_version for e in appended] == [1, 2, 1]
    assert len(await store.read_stream(tenant, "Organization", "half")) == 1
