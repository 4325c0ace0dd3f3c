"""End-to-end benchmark: intents published through the library → read model, on
PostgreSQL + NATS with ``evtctl run`` in a separate process.

    python benchmarks/e2e.py [-n 2000] [--rate 100] [--latency-count 500]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--nats nats://127.0.0.1:4222]

Creates a throwaway database (migrated) on the PostgreSQL server and uses a fresh tenant on
the NATS server, starts ``evtctl run --tenant-only`` against them, then measures:

1. **throughput** — N intents published as fast as the bus takes them (batches of 500),
   timed until every organization is Ready in the ``organizations`` read model;
2. **latency** — intents offered at a fixed rate, one by one; for each, the time from just
   before ``publish`` to its row appearing Ready in the read model (polled every 2 ms, so
   figures carry up to ~2 ms of polling granularity). Reports p50/p90/p99/max.

Both are run for two worker layouts (``--layout``): ``one`` — everything in a single
``evtctl run`` — and ``split`` — the controller runtime in one ``evtctl run`` and the relay
+ projection workers in a second (``--no-controllers``), the shape of a deployment with
separate controller and projection containers. On 2 cores one Python process is the
bottleneck of ``one``; ``split`` lets the runtime have a core of its own.

Goals on the 2-core reference machine: ≥ 1,000 intents/s, p99 ≤ 50 ms at 100/s.
The environment variables ``EVENTPLANE_TEST_POSTGRES_URL`` / ``EVENTPLANE_TEST_NATS_URL``
are used as defaults when set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventplane.bus import open_bus  # noqa: E402
from eventplane.event import Event, EventFactory  # noqa: E402
from eventplane.security import DEV_ACTOR, DevKeyring, Keypair, sign_intent  # noqa: E402
from eventplane.store import migrate  # noqa: E402

_READY_SQL = (
    "SELECT count(*) FROM projection_organizations WHERE tenant = $1 AND ready_status = 'True'"
)


def with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.partition("/")[0]
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")


# The workers run zero-trust: they accept only intents signed by a trusted key. With no
# security configuration that is the development keyring under ``<cwd>/.eventplane`` — the
# benchmark creates it in the workers' directory before starting them and signs with it,
# exactly as evtctl in that directory would. Signing happens before the timed sections.
_KEYPAIR: Keypair | None = None


def intent(tenant: str, name: str) -> Event:
    assert _KEYPAIR is not None, "call use_dev_keyring first"
    event = EventFactory.from_intent(
        {"display_name": name, "plan": "pro", "owners": [f"owner@{name}.example"]},
        kind="Organization",
        tenant=tenant,
        name=name,
        actor=DEV_ACTOR,
    )
    return sign_intent(event, _KEYPAIR)


def use_dev_keyring(workdir: Path) -> None:
    global _KEYPAIR
    _KEYPAIR = DevKeyring(workdir / ".eventplane").keypair()


# How the workers are laid out over processes (--layout): every part in one `evtctl run`, or
# the controller runtime in one process and the relay + projections in another (the shape
# of a deployment with controller and projection containers; leases and competing
# consumers make any split safe).
LAYOUTS: dict[str, list[list[str]]] = {
    "one": [["--tenant-only"]],
    "split": [
        ["--tenant-only", "--no-projections", "--no-relay"],
        ["--no-controllers"],
    ],
}


def start_workers(
    store_url: str, nats_url: str, tenant: str, log: Path, flags: list[str]
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPLANE_")}
    env.update(
        EVENTPLANE_STORE_URL=store_url,
        EVENTPLANE_BUS_URL=nats_url,
        EVENTPLANE_TENANT=tenant,
        PYTHONPATH=str(ROOT),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from evtctl.main import main; main()", "run", *flags],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "workers started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("evtctl run did not start:\n" + log.read_text(errors="replace"))
        time.sleep(0.05)
    return proc


async def wait_ready(conn: asyncpg.Connection, tenant: str, count: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while await conn.fetchval(_READY_SQL, tenant) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"read model did not reach {count} ready rows in {limit:.0f}s")
        await asyncio.sleep(0.005)


async def throughput(bus_url: str, conn: asyncpg.Connection, tenant: str, n: int) -> float:
    intents = [intent(tenant, f"tp-{i}") for i in range(n)]
    bus = await open_bus(bus_url)
    try:
        wall_start = time.time()
        start = time.perf_counter()
        for i in range(0, n, 500):
            await bus.publish(intents[i : i + 500])
        published = time.perf_counter() - start
        await wait_ready(conn, tenant, n, limit=max(60.0, n / 20))
        elapsed = time.perf_counter() - start
    finally:
        await bus.close()
    # Where the time went: the runtime is done when the last event is recorded (database
    # clock, same machine); the rest is the projection catching up.
    last = await conn.fetchval(
        "SELECT extract(epoch FROM max(recorded_at)) FROM eventplane_events WHERE tenant = $1",
        tenant,
    )
    print(
        f"throughput: {n} intents published in {published:.2f}s; all Ready in the read model "
        f"after {elapsed:.2f}s -> {n / elapsed:,.0f} intents/s "
        f"(runtime wrote its last event at {float(last) - wall_start:.2f}s)"
    )
    return n / elapsed


async def settle(conn: asyncpg.Connection, limit: float = 60.0) -> None:
    """Let the burst finish before measuring latency at a steady rate: the read model is
    complete when `throughput` returns, but the relay may still be publishing the burst's
    facts to NATS (it runs behind, by design) — wait until its checkpoint reaches the end
    of the log, then a second more."""
    deadline = time.monotonic() + limit
    while True:
        behind = await conn.fetchval(
            "SELECT (SELECT coalesce(max(position), 0) FROM eventplane_events) - "
            "coalesce((SELECT position FROM eventplane_checkpoints WHERE name = 'relay'), 0)"
        )
        if behind <= 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)


async def latency(
    bus_url: str, conn: asyncpg.Connection, tenant: str, count: int, rate: float
) -> list[float]:
    bus = await open_bus(bus_url)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        while len(seen) < count:
            pending = [name for name in sent if name not in seen]
            if pending:
                rows = await conn.fetch(
                    "SELECT name FROM projection_organizations WHERE tenant = $1 "
                    "AND name = ANY($2::text[]) AND ready_status = 'True'",
                    tenant,
                    pending,
                )
                now = time.perf_counter()
                for row in rows:
                    seen[row["name"]] = now
            await asyncio.sleep(0.002)
        done.set()

    watcher = asyncio.create_task(watch())
    try:
        start = time.perf_counter()
        for i in range(count):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            event = intent(tenant, f"lat-{i}")
            sent[event.name] = time.perf_counter()
            await bus.publish([event])
        await asyncio.wait_for(done.wait(), timeout=120)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()
    samples = sorted((seen[name] - sent[name]) * 1000 for name in sent)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    print(
        f"latency at {rate:g} intents/s offered ({count} intents), intent -> read model Ready: "
        f"p50 {q[49]:.1f} ms, p90 {q[89]:.1f} ms, p99 {q[98]:.1f} ms, max {samples[-1]:.1f} ms"
    )
    return samples


async def main(args: argparse.Namespace) -> None:
    layouts = sorted(LAYOUTS) if args.layout == "both" else [args.layout]
    for layout in layouts:
        print(
            f"== layout {layout!r}: "
            + " | ".join(f"evtctl run {' '.join(flags)}" for flags in LAYOUTS[layout])
        )
        await run_layout(args, layout)


async def run_layout(args: argparse.Namespace, layout: str) -> None:
    database = f"eventplane_bench_{uuid.uuid4().hex[:10]}"
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.postgres, timeout=15)
    await admin.execute(f'CREATE DATABASE "{database}"')
    store_url = with_database(args.postgres, database)
    workdir = Path(tempfile.mkdtemp(prefix="eventplane-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    conn: asyncpg.Connection | None = None
    try:
        await migrate(store_url)
        use_dev_keyring(workdir)
        for index, flags in enumerate(LAYOUTS[layout]):
            procs.append(
                start_workers(store_url, args.nats, tenant, workdir / f"run{index}.log", flags)
            )
        conn = await asyncpg.connect(store_url)
        print(
            f"PostgreSQL {store_url.rsplit('@', 1)[-1]}, NATS {args.nats}, tenant {tenant}; "
            + "; ".join(
                f"`evtctl run {' '.join(flags)}` pid {proc.pid}"
                for proc, flags in zip(procs, LAYOUTS[layout], strict=True)
            )
        )
        await throughput(args.nats, conn, tenant, args.n)
        await settle(conn)
        await latency(args.nats, conn, tenant, args.latency_count, args.rate)
    finally:
        if conn is not None:
            await conn.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        await cleanup_nats(args.nats, tenant)


async def cleanup_nats(url: str, tenant: str) -> None:
    from eventplane.bus.nats import STREAM_NAME, NatsBus

    bus = await open_bus(url)
    try:
        assert isinstance(bus, NatsBus)
        for durable in (f"eventplane-runtime-{tenant}-intents",):
            try:
                await bus.delete_consumer(durable)
            except Exception as exc:  # best effort: a benchmark leaves no durable behind
                print(f"note: could not delete consumer {durable}: {exc}", file=sys.stderr)
        await bus.jetstream.purge_stream(STREAM_NAME, subject=f"eventplane.{tenant}.>")
    finally:
        await bus.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000, help="intents in the throughput run")
    parser.add_argument("--rate", type=float, default=100.0, help="offered intents/s (latency)")
    parser.add_argument("--latency-count", type=int, default=500, help="intents in the latency run")
    parser.add_argument(
        "--layout",
        choices=[*sorted(LAYOUTS), "both"],
        default="both",
        help="one: every worker in one `evtctl run`; split: the controller runtime in one "
        "process, relay + projections in another; both (default): one, then split",
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "EVENTPLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin URL of a PostgreSQL server (a throwaway database is created on it)",
    )
    parser.add_argument(
        "--nats", default=os.environ.get("EVENTPLANE_TEST_NATS_URL", "nats://127.0.0.1:4222")
    )
    asyncio.run(main(parser.parse_args()))
