"""Fixtures for the EventStore contract suite: one ``store`` per backend, real events.

Every test in ``tests/integration/store`` runs against SQLite (a fresh file per test) and
a real PostgreSQL (the session's migrated database). The PostgreSQL database is shared by
the session's tests, so each test works in its own fresh ``tenant``; tests that need the
whole store to themselves read "after the position where they started".
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventplane.event.model import Category, Event, EventMetadata
from eventplane.store import EventStore, open_store
from eventplane.utils import uuid7

EventMaker = Callable[..., Event]


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store/eventplane.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def backend(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgres"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    """A system-scoped store (tenant=None)."""
    async with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses, so a shared PostgreSQL database stays isolated."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_event(tenant: str) -> EventMaker:
    def make(
        name: str = "acme",
        *,
        tenant: str = tenant,
        kind: str = "Organization",
        reason: str = "Requested",
        category: Category = Category.INTENT,
        **overrides: Any,
    ) -> Event:
        meta: dict[str, Any] = {
            "correlation_id": uuid7(),
            "actor": "alice@example.com",
            "source": "evtctl",
            "occurred_at": datetime.now(UTC),
        }
        meta.update(overrides.pop("metadata", {}))
        fields: dict[str, Any] = {
            "id": uuid7(),
            "tenant": tenant,
            "kind": kind,
            "name": name,
            "type": f"{kind}.{reason}",
            "category": category,
            "api_version": "organization/v1",
            "spec": {"plan": "pro"} if category is Category.INTENT else None,
            "data": {} if category is Category.INTENT else {"seats": 3},
            "metadata": EventMetadata(**meta),
        }
        fields.update(overrides)
        return Event(**fields)

    return make
