"""The bus contract: every backend (memory, embedded SQLite, NATS JetStream) behaves alike."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from eventplane.bus import ConsumerConfig, DeliverPolicy, Delivery, Subscription, subject_for
from eventplane.bus.embedded import EmbeddedBus
from eventplane.errors import BusError, ValidationError
from eventplane.event.model import Category
from tests.integration.bus.conftest import BusBackend, make_event, make_events, new_tenant

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[3]


async def drain(
    sub: Subscription, *, want: int, batch: int = 100, wait: float = 5.0
) -> list[Delivery]:
    """Fetch (and ack) until ``want`` deliveries arrived or a fetch comes back empty."""
    got: list[Delivery] = []
    while len(got) < want:
        batch_got = await sub.fetch(batch=batch, timeout=wait)
        if not batch_got:
            break
        for delivery in batch_got:
            await delivery.ack()
        got.extend(batch_got)
    return got


@pytest.mark.smoke
async def test_published_event_round_trips_exactly(backend: BusBackend) -> None:
    bus = await backend.open()
    event = make_event(backend.tenant, position=42)
    sub = await bus.subscribe(backend.config())

    await bus.publish([event])
    [delivery] = await sub.fetch(batch=10, timeout=5)

    assert delivery.event == event
    assert delivery.subject == subject_for(event)
    assert delivery.subject == f"eventplane.{backend.tenant}.organization.fact"
    assert delivery.num_delivered == 1
    await delivery.ack()
    await sub.close()


async def test_events_arrive_in_publish_order(backend: BusBackend) -> None:
    bus = await backend.open()
    events = make_events(backend.tenant, 30)
    sub = await bus.subscribe(backend.config())

    await bus.publish(events[:10])
    await bus.publish(events[10:])
    got = await drain(sub, want=30, batch=7)

    assert [d.event.id for d in got] == [e.id for e in events]


async def test_subject_filters_select_kind_and_category(backend: BusBackend) -> None:
    bus = await backend.open()
    org_fact = make_event(backend.tenant, kind="Organization", category=Category.FACT)
    org_internal = make_event(backend.tenant, kind="Organization", category=Category.INTERNAL)
    team_fact = make_event(backend.tenant, kind="Team", category=Category.FACT)
    org_facts = await bus.subscribe(
        backend.config("orgfacts", filter_subject=backend.filter("Organization", Category.FACT))
    )
    all_facts = await bus.subscribe(
        backend.config("facts", filter_subject=backend.filter(category=Category.FACT))
    )
    everything = await bus.subscribe(
        backend.config("all", filter_subject=f"eventplane.{backend.tenant}.>")
    )

    await bus.publish([org_fact, org_internal, team_fact])

    assert [d.event.id for d in await drain(org_facts, want=1)] == [org_fact.id]
    assert [d.event.id for d in await drain(all_facts, want=2)] == [org_fact.id, team_fact.id]
    assert [d.event.id for d in await drain(everything, want=3)] == [
        org_fact.id,
        org_internal.id,
        team_fact.id,
    ]
    # Nothing more is waiting for the narrow consumer.
    assert await org_facts.fetch(batch=10, timeout=0.3) == []


async def test_republished_event_id_is_delivered_once(backend: BusBackend) -> None:
    bus = await backend.open()
    events = make_events(backend.tenant, 5)
    sub = await bus.subscribe(backend.config())

    await bus.publish(events)
    await bus.publish(events[2:])  # a relay retry after a crash republishes a tail

    got = await drain(sub, want=10, wait=1.0)
    assert [d.event.id for d in got] == [e.id for e in events]


async def test_fetch_returns_empty_list_when_nothing_arrives(backend: BusBackend) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config())

    assert await sub.fetch(batch=10, timeout=0.3) == []


async def test_consumer_that_dies_without_ack_gets_messages_redelivered(
    backend: BusBackend,
) -> None:
    bus = await backend.open()
    events = make_events(backend.tenant, 3)
    config = backend.config(ack_wait=0.5)
    dying = await bus.subscribe(config)
    await bus.publish(events)
    first = await dying.fetch(batch=10, timeout=5)
    assert [d.event.id for d in first] == [e.id for e in events]
    await dying.close()  # dies holding all three, unacknowledged

    other_client = await backend.open()
    survivor = await other_client.subscribe(config)
    again = await drain(survivor, want=3, wait=5)

    assert [d.event.id for d in again] == [e.id for e in events]
    assert all(d.num_delivered == 2 for d in again)
    assert await survivor.fetch(batch=10, timeout=1.0) == []  # acked now: gone for good


async def test_nak_with_delay_redelivers_only_after_the_delay(backend: BusBackend) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config(ack_wait=30))
    await bus.publish([make_event(backend.tenant)])
    [delivery] = await sub.fetch(batch=1, timeout=5)

    naked_at = time.monotonic()
    await delivery.nak(delay=1.0)
    assert await sub.fetch(batch=1, timeout=0.3) == []
    [again] = await sub.fetch(batch=1, timeout=5)

    # A lower bound only: arriving late on a slow machine is fine, arriving early is the bug.
    assert time.monotonic() - naked_at >= 0.9
    assert again.event.id == delivery.event.id
    assert again.num_delivered == 2
    await again.ack()


async def test_nak_without_delay_redelivers_at_once(backend: BusBackend) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config(ack_wait=30))
    await bus.publish([make_event(backend.tenant)])
    [delivery] = await sub.fetch(batch=1, timeout=5)

    await delivery.nak()
    [again] = await sub.fetch(batch=1, timeout=5)

    assert again.event.id == delivery.event.id
    assert again.num_delivered == 2
    await again.ack()


async def test_term_is_never_redelivered(backend: BusBackend) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config(ack_wait=0.5))
    poison, fine = make_events(backend.tenant, 2)
    await bus.publish([poison, fine])
    first, second = await sub.fetch(batch=2, timeout=5)

    await first.term()
    await second.ack()

    assert await sub.fetch(batch=10, timeout=1.0) == []  # twice the ack_wait


async def test_settling_a_delivery_twice_raises(backend: BusBackend) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config())
    await bus.publish([make_event(backend.tenant)])
    [delivery] = await sub.fetch(batch=1, timeout=5)
    await delivery.ack()

    with pytest.raises(BusError, match="already settled"):
        await delivery.nak()


async def test_in_progress_keeps_a_slow_delivery_from_being_redelivered(
    backend: BusBackend,
) -> None:
    bus = await backend.open()
    config = backend.config(ack_wait=0.8)
    slow = await bus.subscribe(config)
    other = await (await backend.open()).subscribe(config)
    await bus.publish([make_event(backend.tenant)])
    [delivery] = await slow.fetch(batch=1, timeout=5)

    for _ in range(4):  # 4 x 0.4 s of "work" is twice the ack_wait
        assert await other.fetch(batch=1, timeout=0.4) == []
        await delivery.in_progress()
    await delivery.ack()

    assert await other.fetch(batch=1, timeout=1.0) == []


async def test_two_competing_consumers_split_work_none_lost_none_twice(
    backend: BusBackend,
) -> None:
    events = make_events(backend.tenant, 60)
    config = backend.config("workers", ack_wait=30)
    worker_a = await (await backend.open()).subscribe(config)
    worker_b = await (await backend.open()).subscribe(config)
    await (await backend.open()).publish(events)

    seen_a: list[str] = []
    seen_b: list[str] = []
    while len(seen_a) + len(seen_b) < len(events):
        # Both hold their batch unacknowledged at the same time: a message in both
        # batches would be a double delivery.
        batch_a = await worker_a.fetch(batch=7, timeout=2)
        batch_b = await worker_b.fetch(batch=7, timeout=2)
        ids_a = {str(d.event.id) for d in batch_a}
        ids_b = {str(d.event.id) for d in batch_b}
        assert not ids_a & ids_b
        for delivery in [*batch_a, *batch_b]:
            await delivery.ack()
        seen_a.extend(ids_a)
        seen_b.extend(ids_b)
        if not batch_a and not batch_b:
            break

    assert seen_a, "worker A got nothing: the work was not split"
    assert seen_b, "worker B got nothing: the work was not split"
    assert sorted(seen_a + seen_b) == sorted(str(e.id) for e in events)  # none lost, none twice
    assert await worker_a.fetch(batch=7, timeout=0.3) == []


async def test_new_durable_with_deliver_new_skips_earlier_messages(backend: BusBackend) -> None:
    bus = await backend.open()
    old, new = make_events(backend.tenant, 2)
    await bus.publish([old])
    sub = await bus.subscribe(backend.config(deliver_policy=DeliverPolicy.NEW))
    await bus.publish([new])

    got = await drain(sub, want=1)

    assert [d.event.id for d in got] == [new.id]
    assert await sub.fetch(batch=10, timeout=0.3) == []


async def test_new_durable_with_deliver_all_starts_from_the_first_message(
    backend: BusBackend,
) -> None:
    bus = await backend.open()
    events = make_events(backend.tenant, 3)
    await bus.publish(events)
    sub = await bus.subscribe(backend.config(deliver_policy=DeliverPolicy.ALL))

    got = await drain(sub, want=3)

    assert [d.event.id for d in got] == [e.id for e in events]


async def test_unacked_deliveries_are_bounded_by_max_ack_pending(backend: BusBackend) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config(max_ack_pending=4, ack_wait=30))
    await bus.publish(make_events(backend.tenant, 10))

    held = await sub.fetch(batch=10, timeout=1)
    held.extend(await sub.fetch(batch=10, timeout=0.3))
    assert len(held) == 4  # the consumer is full until it acks

    for delivery in held:
        await delivery.ack()
    rest = await drain(sub, want=6, batch=4)
    assert len(rest) == 6


async def test_undecodable_message_is_terminated_and_never_delivered(
    backend: BusBackend, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config(ack_wait=0.5))
    subject = f"eventplane.{backend.tenant}.organization.fact"
    await backend.publish_raw(subject, b'{"not": "a cloudevent"')
    good = make_event(backend.tenant)
    await bus.publish([good])

    got = await drain(sub, want=1)

    assert [d.event.id for d in got] == [good.id]
    assert await sub.fetch(batch=10, timeout=1.0) == []  # the poison never comes back
    assert any(
        subject in r.getMessage() and "undecodable" in r.getMessage() for r in caplog.records
    )


async def test_existing_durable_with_a_different_filter_is_rejected(backend: BusBackend) -> None:
    bus = await backend.open()
    config = backend.config(filter_subject=backend.filter(category=Category.FACT))
    await bus.subscribe(config)

    with pytest.raises(BusError, match="already exists with filter"):
        await bus.subscribe(
            ConsumerConfig(
                durable=config.durable, filter_subject=backend.filter(category=Category.INTERNAL)
            )
        )


@pytest.mark.parametrize(
    "bad",
    ["orders.>", "eventplane.acme.Organization.fact", "eventplane.>.fact", "eventplane.acme"],
)
async def test_filter_outside_eventplane_subjects_is_rejected_naming_the_field(
    backend: BusBackend, bad: str
) -> None:
    bus = await backend.open()

    with pytest.raises(ValidationError, match="filter_subject"):
        await bus.subscribe(ConsumerConfig(durable=backend.durable("bad"), filter_subject=bad))


async def test_embedded_bus_shares_a_durable_between_processes(tmp_path: Path) -> None:
    db = tmp_path / "eventplane.db"
    tenant = new_tenant()
    events = make_events(tenant, 120)
    args = [
        sys.executable,
        "-m",
        "tests.integration.bus.embedded_worker",
        str(db),
        "shared",
        f"eventplane.{tenant}.>",
    ]
    bus = await EmbeddedBus.open(db)
    workers = [
        await asyncio.create_subprocess_exec(*args, stdin=PIPE, stdout=PIPE, cwd=REPO_ROOT)
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert (await worker.stdout.readline()).strip() == b"ready"
        await bus.publish(events)
        outputs = await asyncio.gather(*(worker.communicate(b"go\n") for worker in workers))
    finally:
        await bus.close()
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()

    seen = [json.loads(out.splitlines()[-1]) for out, _ in outputs]
    assert all(w.returncode == 0 for w in workers)
    assert seen[0], "the first process got nothing: the work was not shared"
    assert seen[1], "the second process got nothing: the work was not shared"
    assert sorted(seen[0] + seen[1]) == sorted(str(e.id) for e in events)
