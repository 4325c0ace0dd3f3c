"""ProjectionWorker: applied once, atomic with its checkpoint, rebuild equals live.

Real stores (SQLite file and PostgreSQL), real Organization histories recorded through the
same admit/reconcile/mutate steps the runtime uses (``conftest.Pipeline``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from sqlalchemy import BigInteger, Column, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import Field, SQLModel

from apps.organization.projections import OrganizationRow, OrganizationsProjection
from eventplane.bus import InMemoryBus
from eventplane.event import Event
from eventplane.projection import (
    Projection,
    ProjectionWatch,
    ProjectionWorker,
    create_read_model_engine,
)
from eventplane.store import EventStore
from tests.unit.projection.conftest import Pipeline
from tests.unit.simulate import org_delete, org_intent


class AppliedCount(SQLModel, table=True):
    """How many times the counting projection applied each event."""

    __tablename__ = "test_applied_counts"

    event_id: str = Field(sa_column=Column(Text(), primary_key=True))
    position: int = Field(sa_column=Column(BigInteger(), nullable=False))
    times: int = Field(sa_column=Column(BigInteger(), nullable=False))


class CountingProjection(Projection):
    NAME: ClassVar[str] = "test-counting"
    WATCH: ClassVar[ProjectionWatch] = ProjectionWatch(categories=())
    TABLES: ClassVar[tuple[type[SQLModel], ...]] = (AppliedCount,)

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at

    async def apply(self, event: Event, session: AsyncSession) -> None:
        assert event.metadata.position is not None
        if event.metadata.position == self.fail_at:
            raise RuntimeError(f"projection bug at position {self.fail_at}")
        row = await session.get(AppliedCount, str(event.id))
        if row is None:
            session.add(
                AppliedCount(event_id=str(event.id), position=event.metadata.position, times=1)
            )
        else:
            row.times += 1


async def counts(engine: AsyncEngine) -> dict[int, int]:
    async with AsyncSession(engine) as session:
        rows = (await session.execute(select(AppliedCount))).scalars().all()
        return {row.position: row.times for row in rows}


async def org_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with AsyncSession(engine) as session:
        rows = (await session.execute(select(OrganizationRow))).scalars().all()
        return sorted((row.model_dump() for row in rows), key=lambda r: (r["tenant"], r["name"]))


async def record_history(pipeline: Pipeline) -> None:
    """Create, update, block, delete and re-create organizations (many event shapes)."""
    await pipeline.deliver(org_intent(1, name="acme"))
    await pipeline.deliver(org_intent(2, name="globex", plan="free"))
    await pipeline.deliver(org_intent(3, name="acme", plan="enterprise"))
    await pipeline.deliver(
        org_intent(
            4, name="initech", plan="free", owners=[f"o{i}@initech.example" for i in range(5)]
        )
    )
    await pipeline.deliver(org_delete(5, name="globex"))
    await pipeline.deliver(org_delete(6, name="nobody"))  # rejected: NotFound
    await pipeline.deliver(org_intent(7, name="globex", plan="pro", display_name="Globex 2"))
    await pipeline.deliver(org_intent(8, name="acme", plan="enterprise"))  # unchanged


async def test_organization_lifecycle_reaches_the_read_model(
    store: EventStore, engine: AsyncEngine, pipeline: Pipeline
) -> None:
    worker = ProjectionWorker(OrganizationsProjection(), store, engine)
    await pipeline.deliver(org_intent(1, name="acme"))
    await worker.run_once()
    [row] = await org_rows(engine)
    assert (row["tenant"], row["name"], row["plan"], row["seats"]) == ("default", "acme", "pro", 25)
    assert (row["ready_status"], row["ready_reason"]) == ("True", "Provisioned")
    assert (row["generation"], row["observed_generation"]) == (1, 1)
    created = row["created_at"]

    await pipeline.deliver(org_intent(2, name="acme", plan="enterprise"))
    await worker.run_once()
    [row] = await org_rows(engine)
    assert (row["plan"], row["seats"], row["generation"], row["observed_generation"]) == (
        "enterprise",
        1000,
        2,
        2,
    )
    assert row["created_at"] == created
    assert row["updated_at"] > created

    await pipeline.deliver(
        org_intent(3, name="acme", plan="free", owners=[f"o{i}@acme.example" for i in range(4)])
    )
    await worker.run_once()
    [row] = await org_rows(engine)
    assert (row["ready_status"], row["ready_reason"], row["phase"]) == (
        "False",
        "SeatLimitExceeded",
        "Blocked",
    )
    assert row["seats"] == 1000  # still what was provisioned last

    await pipeline.deliver(org_delete(4, name="acme"))
    await worker.run_once()
    assert await org_rows(engine) == []
    assert await worker.lag() == 0


async def test_running_again_applies_nothing_twice(
    store: EventStore, engine: AsyncEngine, pipeline: Pipeline
) -> None:
    worker = ProjectionWorker(CountingProjection(), store, engine, batch_size=3)
    await record_history(pipeline)
    applied = await worker.run_once()
    assert applied == await store.last_position()
    assert await worker.run_once() == 0
    assert set((await counts(engine)).values()) == {1}
    assert await worker.checkpoint() == await store.last_position()


async def test_competing_workers_apply_each_event_exactly_once(
    store: EventStore, store_url: str, pipeline: Pipeline
) -> None:
    engines = [create_read_model_engine(store_url) for _ in range(3)]
    try:
        workers = [ProjectionWorker(CountingProjection(), store, e, batch_size=2) for e in engines]
        for n in range(1, 9):
            await pipeline.deliver(org_intent(n, name=f"org-{n}"))
            await asyncio.gather(*(w.run_once() for w in workers))
        await asyncio.gather(*(w.run_once() for w in workers))
        seen = await counts(engines[0])
        assert len(seen) == await store.last_position()
        assert set(seen.values()) == {1}
        assert sum(w.applied for w in workers) == len(seen)
    finally:
        for e in engines:
            await e.dispose()


async def test_bus_redeliveries_only_ring_the_doorbell(
    store: EventStore, engine: AsyncEngine, pipeline: Pipeline
) -> None:
    async with InMemoryBus() as bus:
        worker = ProjectionWorker(CountingProjection(), store, engine, bus=bus, poll_interval=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            for n in range(1, 4):
                stored = await pipeline.deliver(org_intent(n, name=f"org-{n}"))
                await bus.publish(stored)
                await bus.publish(stored)  # a redelivery / duplicate publish
            last = await store.last_position()
            for _ in range(2000):  # bounded: a stuck worker fails the assertions below
                if await worker.checkpoint() >= last:
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await task
    assert set((await counts(engine)).values()) == {1}
    assert len(await counts(engine)) == last


async def test_a_failing_apply_commits_neither_rows_nor_checkpoint(
    store: EventStore, engine: AsyncEngine, pipeline: Pipeline
) -> None:
    await record_history(pipeline)
    broken = ProjectionWorker(CountingProjection(fail_at=4), store, engine, batch_size=100)
    with pytest.raises(RuntimeError, match="position 4"):
        await broken.run_once()
    assert await counts(engine) == {}
    assert await broken.checkpoint() == 0

    fixed = ProjectionWorker(CountingProjection(), store, engine, batch_size=100)
    await fixed.run_once()
    assert set((await counts(engine)).values()) == {1}
    assert len(await counts(engine)) == await store.last_position()


async def test_rebuild_equals_the_live_read_model_row_for_row(
    store: EventStore, engine: AsyncEngine, pipeline: Pipeline
) -> None:
    worker = ProjectionWorker(OrganizationsProjection(), store, engine, batch_size=4)
    for intent in (org_intent(1, name="acme"), org_intent(2, name="globex", plan="free")):
        await pipeline.deliver(intent)
        await worker.run_once()  # live: applied as the history grows
    await record_history(pipeline)
    await worker.run_once()
    live = await org_rows(engine)
    assert {r["name"] for r in live} == {"acme", "globex", "initech"}

    reports: list[tuple[int, int]] = []
    applied = await ProjectionWorker(
        OrganizationsProjection(), store, engine, batch_size=4
    ).rebuild(progress=lambda done, target: reports.append((done, target)))

    assert await org_rows(engine) == live
    assert applied == len(await store.read_all(limit=10_000))
    last = await store.last_position()
    assert reports[-1] == (last, last)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert await worker.checkpoint() == last


async def test_rebuild_replaces_rows_the_log_does_not_support(
    store: EventStore, engine: AsyncEngine, pipeline: Pipeline
) -> None:
    worker = ProjectionWorker(OrganizationsProjection(), store, engine)
    await pipeline.deliver(org_intent(1, name="acme"))
    await worker.run_once()
    async with AsyncSession(engine) as session, session.begin():
        row = await session.get(OrganizationRow, ("default", "acme"))
        assert row is not None
        row.plan = "tampered"
    await worker.rebuild()
    [row_after] = await org_rows(engine)
    assert row_after["plan"] == "pro"


async def test_lag_counts_positions_behind_the_store(
    store: EventStore, engine: AsyncEngine, pipeline: Pipeline
) -> None:
    worker = ProjectionWorker(OrganizationsProjection(), store, engine)
    await pipeline.deliver(org_intent(1, name="acme"))
    await worker.setup()
    assert await worker.lag() == await store.last_position() > 0
    await worker.run_once()
    assert await worker.lag() == 0


def test_worker_refuses_a_tenant_scoped_store(tmp_path: Any) -> None:
    from eventplane.store import open_store

    scoped = open_store(f"sqlite:///{tmp_path}/x.db", tenant="acme")
    with pytest.raises(ValueError, match="system-scoped"):
        ProjectionWorker(
            OrganizationsProjection(),
            scoped,
            create_read_model_engine(f"sqlite:///{tmp_path}/x.db"),
        )


def test_projection_name_must_be_a_tame_identifier() -> None:
    with pytest.raises(TypeError, match="lowercase"):
        type("Bad", (CountingProjection,), {"NAME": "Bad Name"})


async def test_batching_does_not_change_the_read_model(
    store: EventStore, store_url: str, pipeline: Pipeline
) -> None:
    """One event per transaction and the whole log in one batch (deletes and re-creations
    of the same row inside it) give identical rows."""
    await record_history(pipeline)
    await pipeline.deliver(org_delete(9, name="globex"))
    await pipeline.deliver(org_intent(10, name="globex", plan="enterprise"))
    results = []
    for batch_size in (1, 10_000):
        engine = create_read_model_engine(store_url)
        try:
            worker = ProjectionWorker(
                OrganizationsProjection(), store, engine, batch_size=batch_size
            )
            await worker.rebuild()
            results.append(await org_rows(engine))
        finally:
            await engine.dispose()
    one_by_one, all_at_once = results
    assert all_at_once == one_by_one
    assert {r["name"]: r["plan"] for r in one_by_one} == {
        "acme": "enterprise",
        "globex": "enterprise",
        "initech": "free",
    }
