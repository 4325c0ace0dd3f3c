"""The relay over every bus backend, with a real SQLite store (PostgreSQL in one test)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from eventplane.bus import Bus, ConsumerConfig, Relay, Subscription
from eventplane.bus.nats import STREAM_NAME, NatsBus
from eventplane.errors import BusUnavailableError
from eventplane.event.model import Category, Event
from eventplane.store import NO_STREAM, EventStore, open_store
from tests.fixtures.nats import NatsServerProcess
from tests.integration.bus.conftest import BusBackend, make_event, new_tenant

pytestmark = pytest.mark.timeout(90)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    # The same file the embedded bus uses: the default deployment keeps both together.
    async with open_store(f"sqlite:///{tmp_path / 'eventplane.db'}") as opened:
        yield opened


async def append_stream(
    store: EventStore, tenant: str, name: str, categories: list[Category]
) -> list[Event]:
    """Append one stream's events (one per category) and return them as stored."""
    events = [
        make_event(tenant, name=name, category=category, reason=f"Step{i}")
        for i, category in enumerate(categories)
    ]
    return await store.append(events, expected_version=NO_STREAM)


async def receive(sub: Subscription, count: int, *, wait: float = 10.0) -> list[Event]:
    """Fetch and ack until ``count`` events arrived (or a fetch times out)."""
    got: list[Event] = []
    while len(got) < count:
        batch = await sub.fetch(batch=100, timeout=wait)
        if not batch:
            break
        for delivery in batch:
            await delivery.ack()
            got.append(delivery.event)
    return got


async def test_relay_publishes_internal_and_fact_events_in_position_order(
    backend: BusBackend, store: EventStore
) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config())
    first = await append_stream(
        store,
        backend.tenant,
        "acme",
        [Category.INTENT, Category.INTERNAL, Category.FACT],
    )
    second = await append_stream(store, backend.tenant, "globex", [Category.INTENT, Category.FACT])
    expected = [e for e in first + second if e.category is not Category.INTENT]

    published = await Relay(store, bus, batch_size=2).run_once()
    got = await receive(sub, len(expected))

    assert published == 3
    assert got == expected  # stored form: positions, versions and all, in position order
    assert await sub.fetch(batch=10, timeout=0.3) == []
    assert await store.load_checkpoint("relay") == await store.last_position()
    assert await Relay(store, bus).run_once() == 0


async def test_relay_restarted_after_crash_before_checkpoint_delivers_each_event_once(
    backend: BusBackend, store: EventStore
) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config())
    before = await append_stream(store, backend.tenant, "acme", [Category.FACT] * 4)
    await Relay(store, bus, lease_ttl=0.5).run_once()
    # The crash: the broker acknowledged the batch but the checkpoint was never written.
    await store.save_checkpoint("relay", 0)
    after = await append_stream(store, backend.tenant, "globex", [Category.FACT] * 3)

    await asyncio.sleep(0.6)  # the crashed relay's lease runs out
    republished = await Relay(store, bus).run_once()
    got = await receive(sub, 7)

    assert republished == 7  # the relay republished everything after its checkpoint...
    assert [e.id for e in got] == [e.id for e in before + after]  # ...the bus dropped copies
    assert await sub.fetch(batch=10, timeout=0.5) == []


async def test_relay_killed_between_append_and_publish_publishes_everything_on_restart(
    backend: BusBackend, store: EventStore, tmp_path: Path
) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config())
    stored = await append_stream(store, backend.tenant, "acme", [Category.FACT] * 5)
    # The killed relay is another process: its own store connection, gone with it.
    async with open_store(f"sqlite:///{tmp_path / 'eventplane.db'}") as its_store:
        await its_store.last_position()  # connected, as a relay process is before it works
        killed = Relay(its_store, bus, lease_ttl=0.5)
        task = asyncio.ensure_future(killed.run(asyncio.Event()))
        await asyncio.sleep(0.01)  # it starts, then dies without a clean shutdown
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    restarted = Relay(store, bus, lease_ttl=0.5)
    for _ in range(40):  # stands by until a lease the killed relay may hold runs out
        if await restarted.run_once() or await store.load_checkpoint("relay"):
            break
        await asyncio.sleep(0.05)
    got = await receive(sub, 5)

    assert [e.id for e in got] == [e.id for e in stored]
    assert await sub.fetch(batch=10, timeout=0.3) == []


async def test_only_one_relay_is_active_per_store_and_a_standby_takes_over(
    backend: BusBackend, store: EventStore
) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config())
    active = Relay(store, bus, holder="relay-a", lease_ttl=30)
    standby = Relay(store, bus, holder="relay-b", lease_ttl=30)
    first = await append_stream(store, backend.tenant, "acme", [Category.FACT] * 2)

    assert await active.run_once() == 2
    second = await append_stream(store, backend.tenant, "globex", [Category.FACT] * 2)
    assert await standby.run_once() == 0  # the lease is relay-a's

    await store.release_lease("relay", "relay-a")  # relay-a shuts down cleanly
    assert await standby.run_once() == 2
    got = await receive(sub, 4)

    assert [e.id for e in got] == [e.id for e in first + second]


async def test_running_relay_is_woken_by_appends_and_releases_its_lease_on_stop(
    backend: BusBackend, store: EventStore
) -> None:
    bus = await backend.open()
    sub = await bus.subscribe(backend.config())
    stop = asyncio.Event()
    relay = Relay(store, bus, poll_interval=30, lease_ttl=60)
    task = asyncio.ensure_future(relay.run(stop))
    try:
        # With a 30 s poll, only the append's doorbell can deliver this within the fetch.
        stored = await append_stream(store, backend.tenant, "acme", [Category.FACT] * 3)
        got = await receive(sub, 3, wait=10)
    finally:
        stop.set()
        await task

    assert [e.id for e in got] == [e.id for e in stored]
    assert await store.acquire_lease("relay", "someone-else", 1.0)  # released on stop


@pytest.mark.nats
async def test_events_appended_while_nats_is_down_are_published_when_it_returns(
    throwaway_nats: NatsServerProcess, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = new_tenant()
    bus = await NatsBus.connect(throwaway_nats.url, publish_timeout=2, reconnect_time_wait=0.2)
    stop = asyncio.Event()
    relay = Relay(store, bus, poll_interval=0.2, max_backoff=0.5)
    task = asyncio.ensure_future(relay.run(stop))
    try:
        sub = await bus.subscribe(
            _config(durable="relay-outage", filter_subject=f"eventplane.{tenant}.>")
        )
        early = await append_stream(store, tenant, "acme", [Category.FACT] * 2)
        assert [e.id for e in await receive(sub, 2)] == [e.id for e in early]

        throwaway_nats.stop()
        with caplog.at_level(logging.WARNING, logger="eventplane.bus.relay"):
            during = await append_stream(store, tenant, "globex", [Category.FACT] * 3)
            for _ in range(200):  # the relay notices, logs and keeps retrying
                if any("retrying" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            throwaway_nats.start()
            got = await _receive_through_outage(sub, 3)
    finally:
        stop.set()
        await task
        await bus.close()

    assert [e.id for e in got] == [e.id for e in during]
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert await store.load_checkpoint("relay") == await store.last_position()


@pytest.mark.postgres
@pytest.mark.nats
async def test_relay_moves_a_postgresql_store_onto_nats(postgres_url: str, nats_url: str) -> None:
    tenant = new_tenant()
    name = f"relay-{tenant}"  # its own checkpoint and lease in the session's database
    async with open_store(postgres_url, migrate=True) as pg_store:
        bus: Bus = await NatsBus.connect(nats_url)
        sub = await bus.subscribe(_config(durable=name, filter_subject=f"eventplane.{tenant}.>"))
        stop = asyncio.Event()
        task = asyncio.ensure_future(Relay(pg_store, bus, name=name, poll_interval=0.2).run(stop))
        try:
            stored = await append_stream(
                pg_store, tenant, "acme", [Category.INTENT, Category.FACT, Category.FACT]
            )
            got = await receive(sub, 2)
        finally:
            stop.set()
            await task
            assert isinstance(bus, NatsBus)
            await bus.delete_consumer(name)
            await bus.jetstream.purge_stream(STREAM_NAME, subject=f"eventplane.{tenant}.>")
            await bus.close()

    assert got == stored[1:]


def _config(*, durable: str, filter_subject: str) -> ConsumerConfig:
    return ConsumerConfig(durable=durable, filter_subject=filter_subject, ack_wait=5)


async def _receive_through_outage(sub: Subscription, count: int) -> list[Event]:
    got: list[Event] = []
    for _ in range(100):
        try:
            got.extend(await receive(sub, count - len(got), wait=1))
        except BusUnavailableError:
            await asyncio.sleep(0.1)
        if len(got) >= count:
            break
    return got
