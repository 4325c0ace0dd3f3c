"""The EventStore contract, run against every backend (SQLite and a real PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventplane.errors import (
    AuthorizationError,
    ConcurrencyError,
    ConflictError,
    DuplicateEventError,
    PayloadTooLargeError,
    StoreError,
    ValidationError,
)
from eventplane.event.model import (
    Category,
    Condition,
    ConditionStatus,
    Event,
    ResourceStatus,
)
from eventplane.store import ANY, NO_STREAM, EventFilter, EventStore, open_store
from eventplane.utils import uuid7
from tests.strategies import events

from .conftest import EventMaker

# The fresh-machine smoke run (CI, no servers configured) proves the whole contract on a
# throwaway PostgreSQL too.
pytestmark = pytest.mark.smoke

# -- append and optimistic concurrency ---------------------------------------------------


async def test_append_to_a_new_stream_assigns_versions_positions_and_recorded_time(
    store: EventStore, make_event: EventMaker
) -> None:
    events = [make_event(), make_event(reason="Updated"), make_event(reason="Renamed")]
    before = await store.last_position()

    recorded = await store.append(events, expected_version=NO_STREAM)

    assert [e.metadata.stream_version for e in recorded] == [1, 2, 3]
    positions = [e.metadata.position for e in recorded]
    assert positions == sorted(positions)
    assert positions[0] is not None
    assert positions[0] > before
    assert all(e.metadata.recorded_at is not None for e in recorded)
    assert [e.unrecorded() for e in recorded] == events
    assert await store.last_position() >= positions[-1]


async def test_append_with_the_current_version_extends_the_stream(
    store: EventStore, make_event: EventMaker
) -> None:
    await store.append([make_event()], expected_version=NO_STREAM)
    recorded = await store.append([make_event(reason="Updated")], expected_version=1)
    assert recorded[0].metadata.stream_version == 2


async def test_append_with_a_stale_version_raises_conflict_and_writes_nothing(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    await store.append([make_event(), make_event()], expected_version=0)
    last = await store.last_position()

    with pytest.raises(ConcurrencyError) as caught:
        await store.append([make_event(reason="Late")], expected_version=1)

    assert caught.value.expected == 1
    assert caught.value.actual == 2
    assert await store.last_position() == last
    assert len(await store.read_stream(tenant, "Organization", "acme")) == 2


async def test_append_with_no_stream_on_an_existing_stream_raises_conflict(
    store: EventStore, make_event: EventMaker
) -> None:
    await store.append([make_event()], expected_version=NO_STREAM)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append([make_event()], expected_version=NO_STREAM)
    assert caught.value.expected is NO_STREAM
    assert caught.value.actual == 1


async def test_append_with_any_skips_the_version_check(
    store: EventStore, make_event: EventMaker
) -> None:
    first = await store.append([make_event()], expected_version=ANY)
    second = await store.append([make_event()], expected_version=ANY)
    assert [first[0].metadata.stream_version, second[0].metadata.stream_version] == [1, 2]


async def test_append_of_nothing_returns_nothing(store: EventStore) -> None:
    assert await store.append([], expected_version=ANY) == []


async def test_append_refuses_a_batch_spanning_two_streams(
    store: EventStore, make_event: EventMaker
) -> None:
    with pytest.raises(ValidationError, match=r"events\[1\]"):
        await store.append([make_event("a"), make_event("b")], expected_version=ANY)


async def test_append_refuses_the_same_id_twice_in_one_batch(
    store: EventStore, make_event: EventMaker
) -> None:
    event = make_event()
    with pytest.raises(ValidationError, match=r"events\[1\]\.id"):
        await store.append([event, event], expected_version=ANY)


async def test_append_refuses_a_negative_expected_version(
    store: EventStore, make_event: EventMaker
) -> None:
    with pytest.raises(ValidationError, match="expected_version"):
        await store.append([make_event()], expected_version=-1)


# -- idempotency --------------------------------------------------------------------------


async def test_reappending_the_same_events_returns_the_stored_records_and_writes_nothing(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    events = [make_event(), make_event(reason="Updated")]
    stored = await store.append(events, expected_version=NO_STREAM)
    last = await store.last_position()

    # Whatever expected_version says: the events are already there.
    for expected in (NO_STREAM, 0, 1, 7, ANY):
        again = await store.append(events, expected_version=expected)
        assert again == stored

    assert await store.last_position() == last
    assert await store.read_stream(tenant, "Organization", "acme") == stored


async def test_reappending_a_read_back_event_is_idempotent_too(
    store: EventStore, make_event: EventMaker
) -> None:
    stored = await store.append([make_event()], expected_version=NO_STREAM)
    assert await store.append(stored, expected_version=NO_STREAM) == stored


async def test_same_id_with_different_content_raises_duplicate_event(
    store: EventStore, make_event: EventMaker
) -> None:
    event = make_event()
    await store.append([event], expected_version=NO_STREAM)
    forged = event.model_copy(update={"spec": {"plan": "enterprise"}})

    with pytest.raises(DuplicateEventError) as caught:
        await store.append([forged], expected_version=ANY)
    assert caught.value.event_id == event.id


async def test_same_id_in_another_stream_raises_duplicate_event(
    store: EventStore, make_event: EventMaker
) -> None:
    event = make_event("one")
    await store.append([event], expected_version=NO_STREAM)
    moved = make_event("two", id=event.id)
    with pytest.raises(DuplicateEventError):
        await store.append([moved], expected_version=NO_STREAM)


async def test_a_batch_mixing_stored_and_new_events_is_refused_whole(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    stored = await store.append([make_event()], expected_version=NO_STREAM)
    last = await store.last_position()

    with pytest.raises(ConflictError, match="append the new events on their own") as caught:
        await store.append([stored[0], make_event(reason="Updated")], expected_version=ANY)

    assert not isinstance(caught.value, DuplicateEventError | ConcurrencyError)
    assert await store.last_position() == last
    assert await store.read_stream(tenant, "Organization", "acme") == stored


# -- reads ----------------------------------------------------------------------------------


async def test_read_stream_returns_events_after_from_version_in_order(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    stored = await store.append([make_event() for _ in range(5)], expected_version=NO_STREAM)
    await store.append([make_event("other")], expected_version=NO_STREAM)

    assert await store.read_stream(tenant, "Organization", "acme") == stored
    assert await store.read_stream(tenant, "Organization", "acme", from_version=3) == stored[3:]
    assert await store.read_stream(tenant, "Organization", "missing") == []


async def test_read_all_pages_by_position_with_after_and_limit(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    start = await store.last_position()
    stored = []
    for name in ("a", "b", "c"):
        stored += await store.append([make_event(name), make_event(name)], expected_version=0)
    flt = EventFilter(tenant=tenant)

    page1 = await store.read_all(after=start, limit=4, filter=flt)
    last_seen = page1[-1].metadata.position
    assert last_seen is not None
    page2 = await store.read_all(after=last_seen, limit=4, filter=flt)

    assert page1 + page2 == stored
    assert await store.read_all(after=stored[-1].metadata.position or 0, filter=flt) == []


async def test_read_all_filters_by_kind_name_category_type_and_actor(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    intent = (await store.append([make_event("a")], expected_version=0))[0]
    fact = (
        await store.append(
            [make_event("a", reason="Provisioned", category=Category.FACT)], expected_version=1
        )
    )[0]
    team = (await store.append([make_event("b", kind="Team")], expected_version=0))[0]
    bot = (await store.append([make_event("c", metadata={"actor": "bot"})], expected_version=0))[0]

    async def ids(**kw: object) -> list[object]:
        flt = EventFilter(tenant=tenant, **kw)  # type: ignore[arg-type]
        return [e.id for e in await store.read_all(filter=flt)]

    assert await ids(kinds=("Team",)) == [team.id]
    assert await ids(names=("a",)) == [intent.id, fact.id]
    assert await ids(categories=(Category.FACT,)) == [fact.id]
    assert await ids(types=("Organization.Provisioned", "Team.Requested")) == [fact.id, team.id]
    assert await ids(actors=("bot",)) == [bot.id]
    assert await ids(kinds=("Organization",), categories=(Category.INTENT,)) == [
        intent.id,
        bot.id,
    ]


async def test_get_event_returns_the_stored_event_or_none(
    store: EventStore, make_event: EventMaker
) -> None:
    stored = (await store.append([make_event()], expected_version=0))[0]
    assert await store.get_event(stored.id) == stored
    assert await store.get_event(str(stored.id)) == stored
    assert await store.get_event(uuid7()) is None
    with pytest.raises(ValidationError, match="event_id"):
        await store.get_event("not-a-uuid")


async def test_every_event_field_round_trips_including_unicode(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    event = make_event(
        "unicode",
        category=Category.INTERNAL,
        reason="StatusChanged",
        spec={"plan": "pro", "nested": {"list": [1, 2.5, None, True, "x"]}},
        data={"greeting": "grüß dich, 世界 🌍", "empty": {}, "quote": "\"'\\", "big": 2**53},
        status=ResourceStatus(
            phase="Ready",
            observed_generation=3,
            message="all good — ✓",
            conditions=(
                Condition(
                    type="Ready",
                    status=ConditionStatus.TRUE,
                    reason="Provisioned",
                    message="done",
                    observed_generation=3,
                    last_transition_time=when,
                ),
            ),
            attempts=2,
            last_error="earlier: ✗",
        ),
        finalizers=("billing.example.com/cleanup", "dns"),
        deletion_requested_at=when + timedelta(hours=1),
        metadata={
            "generation": 3,
            "causation_id": uuid7(),
            "labels": {"team": "Ω-core", "env": "prod"},
            "signature": "ed25519:abc",
            "source": "urn:eventplane:runtime",
            "occurred_at": datetime(2026, 1, 2, 4, 4, 5, 1, tzinfo=UTC),
        },
    )
    [stored] = await store.append([event], expected_version=NO_STREAM)

    assert stored.content_equals(event)
    [read] = await store.read_stream(tenant, "Organization", "unicode")
    assert read == stored
    assert read.model_dump() == stored.model_dump()
    assert read.status == event.status
    assert read.metadata.labels == {"team": "Ω-core", "env": "prod"}
    [scanned] = await store.read_all(filter=EventFilter(tenant=tenant))
    assert scanned == stored


@pytest.mark.parametrize("size", [1, 3], ids=["one event", "three events"])
async def test_numbers_keep_their_type_and_a_retry_of_them_stays_idempotent(
    store: EventStore, make_event: EventMaker, size: int
) -> None:
    """PostgreSQL's jsonb prints 1e17 as 100000000000000000: read back as an int, the event
    would differ from itself and its honest retry would be refused as a duplicate."""
    numbers = {
        "floats": [1e15, 1e16, 1e17, -2.5e18, 1.2345678901234567e19, 1e20, 1e300, 1e-7, 0.1],
        "ints": [10**16, -(10**18), 2**63 - 1, 0],
        "text": "1e+17 stays text",
    }
    events = [make_event(data={**numbers, "index": i}) for i in range(size)]
    stored = await store.append(events, expected_version=NO_STREAM)
    read = await store.read_stream(*events[0].stream)
    assert read == stored
    for event in read:
        assert [type(v) for v in event.data["floats"]] == [float] * 9
        assert [type(v) for v in event.data["ints"]] == [int] * 4
    assert await store.append(events, expected_version=ANY) == stored


async def test_an_integer_past_64_bits_is_refused_naming_the_event_and_writes_nothing(
    store: EventStore, make_event: EventMaker
) -> None:
    events = [make_event(), make_event(data={"huge": 2**70})]
    with pytest.raises(ValidationError, match="64-bit") as caught:
        await store.append(events, expected_version=NO_STREAM)
    assert caught.value.errors[0].path == "events[1]"
    assert str(events[1].id) in caught.value.errors[0].message
    assert await store.read_stream(*events[0].stream) == []


# Stored text cannot hold NUL on PostgreSQL (refused as a ValidationError, tested there).
_storable_events = events(recorded=False).filter(lambda e: "\\u0000" not in e.model_dump_json())


@settings(
    max_examples=40,
    deadline=None,
    # One store serves every example; each example appends to a stream of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=st.lists(_storable_events, min_size=1, max_size=4), offset=st.integers(-720, 840))
async def test_any_batch_of_events_reads_back_equal_to_what_was_appended(
    store: EventStore, tenant: str, drawn: list[Event], offset: int
) -> None:
    """One event and several take different append statements on PostgreSQL; both must
    keep every field exactly, whatever the text, numbers and time zones."""
    name = f"p-{uuid7().hex[-12:]}"
    zone = timezone(timedelta(minutes=offset))
    batch = [
        e.model_copy(
            update={
                "tenant": tenant,
                "kind": drawn[0].kind,
                "name": name,
                "metadata": e.metadata.model_copy(
                    update={"occurred_at": e.metadata.occurred_at.astimezone(zone)}
                ),
            }
        )
        for e in drawn
    ]
    stored = await store.append(batch, expected_version=NO_STREAM)
    assert [s.metadata.stream_version for s in stored] == list(range(1, len(batch) + 1))
    assert all(s.content_equals(e) for s, e in zip(stored, batch, strict=True))
    read = await store.read_stream(tenant, drawn[0].kind, name)
    assert read == stored
    assert [r.model_dump() for r in read] == [s.model_dump() for s in stored]


async def test_a_large_payload_under_the_limit_round_trips(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    blob = "é" * 300_000  # 600 kB of UTF-8
    [stored] = await store.append([make_event(data={"blob": blob})], expected_version=0)
    [read] = await store.read_stream(tenant, "Organization", "acme")
    assert read == stored
    assert read.data["blob"] == blob


async def test_an_event_over_the_size_limit_raises_payload_too_large_naming_it(
    store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    event = make_event(data={"blob": "x" * (1024 * 1024)})
    with pytest.raises(PayloadTooLargeError, match=str(event.id)):
        await store.append([event], expected_version=0)
    assert await store.read_stream(tenant, "Organization", "acme") == []


async def test_the_size_limit_is_configurable(store_url: str, make_event: EventMaker) -> None:
    async with open_store(store_url, max_event_bytes=8 * 1024) as small:
        with pytest.raises(PayloadTooLargeError, match="8192-byte limit"):
            await small.append([make_event(data={"blob": "x" * 9000})], expected_version=0)
        await small.append([make_event(data={"blob": "x" * 100})], expected_version=0)


# -- tenancy ------------------------------------------------------------------------------


async def test_a_tenant_store_never_reads_or_writes_another_tenants_events(
    store_url: str, store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    other = f"{tenant}-other"
    mine = (await store.append([make_event("shared")], expected_version=0))[0]
    theirs = (await store.append([make_event("shared", tenant=other)], expected_version=0))[0]

    async with open_store(store_url, tenant=tenant) as scoped:
        assert scoped.tenant == tenant
        with pytest.raises(AuthorizationError, match=other):
            await scoped.append([make_event("x", tenant=other)], expected_version=0)
        with pytest.raises(AuthorizationError):
            await scoped.read_stream(other, "Organization", "shared")
        with pytest.raises(AuthorizationError):
            await scoped.read_all(filter=EventFilter(tenant=other))
        assert await scoped.get_event(theirs.id) is None
        assert await scoped.get_event(mine.id) == mine

        everything = await scoped.read_all()
        assert everything == [mine]
        assert await scoped.read_all(filter=EventFilter(kinds=("Organization",))) == [mine]
        assert await scoped.last_position() == mine.metadata.position

        appended = await scoped.append([make_event("shared")], expected_version=1)
        assert appended[0].tenant == tenant


# -- checkpoints and leases ---------------------------------------------------------------


async def test_checkpoints_start_at_zero_and_keep_the_last_saved_position(
    store: EventStore, tenant: str
) -> None:
    name = f"relay-{tenant}"
    assert await store.load_checkpoint(name) == 0
    await store.save_checkpoint(name, 41)
    await store.save_checkpoint(name, 42)
    assert await store.load_checkpoint(name) == 42


async def test_a_lease_belongs_to_one_holder_until_released_or_expired(
    store: EventStore, tenant: str
) -> None:
    name = f"relay-{tenant}"
    assert await store.acquire_lease(name, "a", ttl=60)
    assert not await store.acquire_lease(name, "b", ttl=60)
    assert await store.acquire_lease(name, "a", ttl=60)  # renewal
    await store.release_lease(name, "b")  # not the holder: no effect
    assert not await store.acquire_lease(name, "b", ttl=60)
    await store.release_lease(name, "a")
    assert await store.acquire_lease(name, "b", ttl=0)  # taken, and already expired
    assert await store.acquire_lease(name, "c", ttl=60)


# -- followers ----------------------------------------------------------------------------


async def test_wait_for_append_wakes_on_an_append_through_another_store(
    store_url: str, store: EventStore, make_event: EventMaker
) -> None:
    assert not await store.wait_for_append(0.01)  # listening now; nothing happened
    async with open_store(store_url) as writer:
        await writer.append([make_event()], expected_version=0)
    assert await store.wait_for_append(60)


async def test_wait_for_append_wakes_on_an_append_through_the_same_store(
    store: EventStore, make_event: EventMaker
) -> None:
    await store.append([make_event()], expected_version=0)
    assert await store.wait_for_append(60)


# -- lifecycle ----------------------------------------------------------------------------


async def test_a_closed_store_refuses_work_and_closing_twice_is_fine(
    store_url: str, make_event: EventMaker
) -> None:
    opened = open_store(store_url)
    await opened.append([make_event()], expected_version=0)
    await opened.close()
    await opened.close()
    with pytest.raises(StoreError, match="closed"):
        await opened.last_position()
