"""ControllerRuntime throughput: intents/s through the runtime alone vs. the raw store.

    .venv/bin/python benchmarks/runtime.py [--intents N] [--bus nats|memory]
                                           [--concurrency C] [--profile out.html]

Servers: ``EVENTPLANE_BENCH_POSTGRES_URL`` / ``EVENTPLANE_TEST_POSTGRES_URL`` (an admin URL;
a fresh database is created, migrated and dropped) and ``EVENTPLANE_BENCH_NATS_URL`` /
``EVENTPLANE_TEST_NATS_URL``. Everything runs in this one process (on 2 cores the
database and nats-server take the other core).

What is measured:

- store append:  C concurrent writers appending what one Organization reconcile writes
                 (read_stream of a new stream + one append of 4 events), N times — the
                 floor the runtime's own I/O costs;
- runtime:       N ``Organization.Requested`` intents published first, then
                 ``ControllerRuntime.run`` until every one is reconciled (Provisioned).
                 Reported as intents/s and the ratio to the store figure.
- latency:       with ``--rate R``: the runtime runs while intents are published one by
                 one at R/s; latency = the Provisioned fact's ``recorded_at`` (database
                 clock, same machine) minus the intent's ``occurred_at``; p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from eventplane.bus import Bus, InMemoryBus, open_bus  # noqa: E402
from eventplane.bus.nats import STREAM_NAME, NatsBus  # noqa: E402
from eventplane.controller.runtime import ControllerRuntime  # noqa: E402
from eventplane.event import (  # noqa: E402
    Event,
    EventFactory,
    ReconcileContext,
    ResourceState,
    admit_intent,
    apply_decision,
    fold,
)
from eventplane.registry import get_default_registry  # noqa: E402
from eventplane.store import EventFilter, EventStore, migrate, open_store  # noqa: E402
from eventplane.utils import utcnow, uuid7  # noqa: E402

SPEC = {"display_name": "Acme", "plan": "pro", "owners": ["ada@acme.example"]}


def intents(tenant: str, count: int, first: int = 0) -> list[Event]:
    """``count`` intents for distinct organizations ``org-<first>``, ``org-<first+1>``, ..."""
    now = utcnow()
    return [
        EventFactory.from_intent(
            SPEC, kind="Organization", tenant=tenant, name=f"org-{i}", actor="bench", now=now
        )
        for i in range(first, first + count)
    ]


async def store_append_rate(store: EventStore, count: int, concurrency: int) -> float:
    """The runtime's I/O without the runtime: read + one 4-event append per resource."""
    tenant = f"s{uuid7().hex[-10:]}"
    batch = intents(tenant, count)
    (controller_cls,) = get_default_registry().controllers("Organization")
    controller = controller_cls()
    # Decide up front so only the store is timed.
    work = []
    for intent in batch:
        state = ResourceState.empty(*intent.stream)
        ctx = ReconcileContext.for_trigger(intent)
        admitted = admit_intent(state, intent, ctx)
        state = fold(admitted, initial=state)
        decision = controller.reconcile(admitted[0], state, ctx)
        work.append(
            (intent.stream, [*admitted, *apply_decision(state, admitted[0], decision, ctx)])
        )
    queue = iter(work)

    async def writer() -> None:
        for stream, events in queue:
            await store.read_stream(*stream)
            await store.append(events, expected_version=0)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def runtime_rate(
    store: EventStore, bus: Bus, count: int, concurrency: int, profile: str | None
) -> tuple[float, dict[str, object]]:
    tenant = f"r{uuid7().hex[-10:]}"
    for start in range(0, count, 500):
        await bus.publish(intents(tenant, min(500, count - start), start))
    runtime = ControllerRuntime(
        store,
        bus,
        tenant=tenant,
        max_concurrency=concurrency,
        insecure_skip_verification=True,
        timer_scan_interval=None,
    )
    stop = asyncio.Event()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    started = time.perf_counter()
    task = asyncio.create_task(runtime.run(stop))
    while runtime.stats.admitted < count:  # noqa: ASYNC110 (sampling a counter)
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    if profiler is not None:
        profiler.stop()
        Path(profile or "").write_text(profiler.output_html())  # noqa: ASYNC240
        print(profiler.output_text(unicode=True, color=False, show_all=False)[:6000])
    stop.set()
    await task
    if isinstance(bus, NatsBus):
        for config in runtime.consumer_configs:
            await bus.delete_consumer(config.durable)
        await bus.jetstream.purge_stream(STREAM_NAME, subject=f"eventplane.{tenant}.>")
    return count / elapsed, runtime.stats.snapshot()


async def latency(
    store: EventStore, bus: Bus, count: int, rate: float, concurrency: int
) -> list[float]:
    tenant = f"l{uuid7().hex[-10:]}"
    runtime = ControllerRuntime(
        store,
        bus,
        tenant=tenant,
        max_concurrency=concurrency,
        insecure_skip_verification=True,
        timer_scan_interval=None,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    started = time.perf_counter()
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await bus.publish(intents(tenant, 1, i))  # stamped just before publishing
    while runtime.stats.admitted < count:  # noqa: ASYNC110 (sampling a counter)
        await asyncio.sleep(0.01)
    stop.set()
    await task
    events = await store.read_all(limit=10 * count + 10, filter=EventFilter(tenant=tenant))
    born = {e.name: e.metadata.occurred_at for e in events if e.reason == "Requested"}
    out = []
    for event in events:
        if event.reason == "Provisioned" and event.metadata.recorded_at is not None:
            out.append((event.metadata.recorded_at - born[event.name]).total_seconds())
    if isinstance(bus, NatsBus):
        for config in runtime.consumer_configs:
            await bus.delete_consumer(config.durable)
        await bus.jetstream.purge_stream(STREAM_NAME, subject=f"eventplane.{tenant}.>")
    return sorted(out)


def with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority, _, _ = rest.partition("/")
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")


async def run(args: argparse.Namespace) -> None:
    admin = (
        os.environ.get("EVENTPLANE_BENCH_POSTGRES_URL")
        or os.environ.get("EVENTPLANE_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    nats_url = (
        os.environ.get("EVENTPLANE_BENCH_NATS_URL")
        or os.environ.get("EVENTPLANE_TEST_NATS_URL")
        or "nats://127.0.0.1:4222"
    )
    name = f"eventplane_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = with_database(admin, name)
    try:
        await migrate(url)
        async with open_store(url, max_pool_size=args.concurrency + 2) as store:
            raw = await store_append_rate(store, args.intents, args.concurrency)
            print(
                f"store append (read + 4-event append), {args.concurrency} writers: "
                f"{raw:,.0f} reconciles/s"
            )
            bus: Bus = InMemoryBus() if args.bus == "memory" else await open_bus(nats_url)
            try:
                rate, stats = await runtime_rate(
                    store, bus, args.intents, args.concurrency, args.profile
                )
            finally:
                await bus.close()
            print(
                f"runtime ({args.bus} bus, {args.concurrency} workers): {rate:,.0f} intents/s "
                f"= {rate / raw:.2f}x the store figure"
            )
            if args.rate:
                bus = InMemoryBus() if args.bus == "memory" else await open_bus(nats_url)
                try:
                    lat = await latency(
                        store, bus, args.latency_intents, args.rate, args.concurrency
                    )
                finally:
                    await bus.close()
                p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
                print(
                    f"latency at {args.rate:g}/s ({len(lat)} intents): p50 {p(0.5):.1f} ms, "
                    f"p99 {p(0.99):.1f} ms, max {lat[-1] * 1000:.1f} ms"
                )
            print(
                f"commits {stats['commits']} (reconciles per commit "
                f"{args.intents / max(1, int(str(stats['commits']))):.1f}), "
                f"conflicts {stats['conflicts']}, released {stats['released']}, "
                f"errors {stats['errors']}"
            )
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intents", type=int, default=2000)
    parser.add_argument("--bus", choices=("nats", "memory"), default="nats")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", metavar="OUT.html")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="also measure latency at this offered rate (intents/s)",
    )
    parser.add_argument("--latency-intents", type=int, default=500)
    asyncio.run(run(parser.parse_args()))
