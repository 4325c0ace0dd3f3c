"""Fixtures for the projection worker tests: a real store per backend, a read-model
engine on the same database, and a pipeline that records Organization histories in the
store the way the runtime does (admit → fold → reconcile → mutate → append).

SQLite gets a fresh file per test; PostgreSQL a fresh migrated database per test (the
read-model tables and checkpoints are database-wide, so tests must not share one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from apps.organization.controllers import OrganizationController
from eventplane.event import (
    Category,
    Event,
    ReconcileContext,
    ResourceState,
    admit_intent,
    apply_decision,
    fold,
)
from eventplane.projection import create_read_model_engine
from eventplane.store import EventStore, open_store
from tests.fixtures.postgres import migrated_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/eventplane.db"
        return
    admin: str = request.getfixturevalue("postgres_admin_url")
    async with migrated_database(admin, "eventplane_proj") as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    async with open_store(store_url) as opened:
        yield opened


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    created = create_read_model_engine(store_url)
    try:
        yield created
    finally:
        await created.dispose()


class Pipeline:
    """The runtime's per-intent steps against a real store, synchronously."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.controller = OrganizationController()

    async def deliver(self, intent: Event) -> list[Event]:
        initial = ResourceState.empty(*intent.stream)
        state = fold(await self.store.read_stream(*intent.stream), initial=initial)
        admitted = await self.store.append(
            admit_intent(state, intent, ReconcileContext.for_trigger(intent)),
            expected_version=state.version,
        )
        if admitted[0].category is not Category.INTENT:
            return admitted  # rejected
        state = fold(admitted, initial=state)
        trigger = admitted[0]
        ctx = ReconcileContext.for_trigger(trigger)
        decision = self.controller.reconcile(trigger, state, ctx)
        written = await self.store.append(
            apply_decision(state, trigger, decision, ctx), expected_version=state.version
        )
        return admitted + written


@pytest.fixture
def pipeline(store: EventStore) -> Pipeline:
    return Pipeline(store)
