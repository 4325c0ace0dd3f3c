"""run(stop_event): clean shutdown, and a restart picks up where the last run stopped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from eventplane.bus import InMemoryBus
from eventplane.controller.runtime import ControllerRuntime
from eventplane.errors import EventplaneError
from eventplane.event import Event
from eventplane.store import EventFilter, ExpectedVersion, SqliteEventStore
from tests.unit.controller.conftest import Harness, eventually
from tests.unit.simulate import org_intent


async def provisioned(harness: Harness) -> Counter[str]:
    events = await harness.store.read_all(
        limit=100_000, filter=EventFilter(types=("Organization.Provisioned",))
    )
    return Counter(e.name for e in events)


async def has_provisioned(harness: Harness) -> bool:
    return bool(await provisioned(harness))


async def test_run_returns_promptly_when_stopped_with_nothing_to_do(harness: Harness) -> None:
    stop = asyncio.Event()
    runtime = harness.runtime(shutdown_grace=5)
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert runtime.stats.deliveries == 0


async def test_stopping_mid_load_loses_nothing_and_a_restart_finishes_the_rest(
    harness: Harness,
) -> None:
    names = [f"org-{i}" for i in range(60)]
    await harness.publish(*[org_intent(i + 1, name=n) for i, n in enumerate(names)])
    stop = asyncio.Event()
    first = harness.runtime(max_concurrency=2, batch_size=10)
    task = asyncio.create_task(first.run(stop))
    await eventually(lambda: has_provisioned(harness))
    stop.set()
    async with asyncio.timeout(10):
        await task
    done_by_first = sum((await provisioned(harness)).values())

    second = await harness.drive()

    counts = await provisioned(harness)
    assert counts == Counter(names)  # every organization exactly once
    assert done_by_first + second.stats.reconciles[("Organization", "done")] == len(names)


async def test_runtime_runs_once(harness: Harness) -> None:
    runtime = await harness.drive()
    with pytest.raises(RuntimeError, match="runs once"):
        await runtime.run_until_idle(timeout=1)


async def test_two_runtimes_sharing_store_and_bus_do_all_work_once(
    harness: Harness,
) -> None:
    names = [f"org-{i}" for i in range(20)]
    intents = [org_intent(i + 1, name=n) for i, n in enumerate(names)]
    updates = [org_intent(100 + i, name=n, plan="enterprise") for i, n in enumerate(names)]
    stop = asyncio.Event()
    runtimes = [harness.runtime(max_concurrency=3, batch_size=5) for _ in range(2)]
    tasks = [asyncio.create_task(r.run(stop)) for r in runtimes]
    await harness.publish(*intents)
    await harness.publish(*updates)

    async def converged() -> bool:
        states = [await harness.state(n) for n in names]
        return all(s.spec and s.spec["plan"] == "enterprise" and s.observed for s in states)

    await eventually(converged, within=20)
    stop.set()
    await asyncio.gather(*tasks)

    assert await provisioned(harness) == Counter(names)
    assert sum(r.stats.admitted for r in runtimes) == 40
    for name in names:
        types = await harness.types(name)
        assert types.count("Requested") == 2


class GatedStore(SqliteEventStore):
    """A real SQLite store whose appends wait at a gate: holds a reconcile "in progress"
    (decided, not yet written) for as long as a test needs."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.reading = asyncio.Event()  # set once a turn has reached its append

    async def append_many(
        self, appends: Sequence[tuple[Sequence[Event], ExpectedVersion]]
    ) -> list[list[Event] | EventplaneError]:
        self.reading.set()
        await self.gate.wait()
        return await super().append_many(appends)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[GatedStore]:
    store = GatedStore(tmp_path / "gated.db")
    yield store
    await store.close()


async def test_shutdown_hands_back_queued_work_and_lets_running_work_finish(
    gated: GatedStore, bus: InMemoryBus
) -> None:
    await bus.publish([org_intent(1, name="running"), org_intent(2, name="queued")])
    stop = asyncio.Event()
    first = ControllerRuntime(
        gated, bus, max_concurrency=1, timer_scan_interval=None, insecure_skip_verification=True
    )
    task = asyncio.create_task(first.run(stop))
    await gated.reading.wait()  # "running" is in progress, "queued" waits for a worker
    stop.set()
    await asyncio.sleep(0)
    gated.gate.set()
    async with asyncio.timeout(10):
        await task

    assert first.stats.admitted == 1
    assert first.stats.released == 1
    second = ControllerRuntime(
        gated, bus, timer_scan_interval=None, insecure_skip_verification=True
    )
    await second.run_until_idle(timeout=10)
    assert second.stats.admitted == 1  # the handed-back intent, delivered again at once
    assert "Provisioned" in [e.reason for e in await gated.read_all() if e.name == "queued"]


async def test_work_still_running_after_the_grace_period_is_cancelled_and_handed_back(
    gated: GatedStore, bus: InMemoryBus
) -> None:
    await bus.publish([org_intent(1, name="stuck")])
    stop = asyncio.Event()
    first = ControllerRuntime(
        gated, bus, shutdown_grace=0.01, timer_scan_interval=None, insecure_skip_verification=True
    )
    task = asyncio.create_task(first.run(stop))
    await gated.reading.wait()
    stop.set()
    async with asyncio.timeout(10):
        await task

    assert first.stats.admitted == 0
    assert first.stats.released == 1
    gated.gate.set()
    second = ControllerRuntime(
        gated, bus, timer_scan_interval=None, insecure_skip_verification=True
    )
    await second.run_until_idle(timeout=10)
    assert second.stats.admitted == 1
