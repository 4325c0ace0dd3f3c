"""Harness for the bus contract suite: one ``backend`` fixture, three real backends.

``backend`` is parametrized over memory, embedded (SQLite file in tmp_path) and NATS
(the session's ``nats_url``: the configured server or a throwaway one). Each test gets
its own tenant, so its subjects (``eventplane.<tenant>.…``) and durable names are its
own on a shared server; teardown deletes those durables and purges those subjects only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio

from eventplane.bus import Bus, ConsumerConfig, InMemoryBus, open_bus, subject_filter
from eventplane.bus.embedded import EmbeddedBus
from eventplane.bus.nats import STREAM_NAME, NatsBus
from eventplane.event.model import (
    Category,
    Condition,
    ConditionStatus,
    Event,
    EventMetadata,
    ResourceStatus,
)
from eventplane.utils import utcnow, uuid7

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("embedded", id="embedded"),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]


def make_event(
    tenant: str,
    *,
    kind: str = "Organization",
    name: str = "acme",
    category: Category = Category.FACT,
    reason: str = "Provisioned",
    position: int | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    """A real event; with ``position`` it also carries store-assigned fields."""
    now = utcnow()
    meta: dict[str, Any] = {
        "generation": 2,
        "correlation_id": uuid7(),
        "causation_id": uuid7(),
        "actor": "user:alice",
        "source": "eventplane/tests",
        "labels": {"team": "core"},
        "occurred_at": now,
    }
    if position is not None:
        meta.update(stream_version=position, position=position, recorded_at=now)
    return Event(
        id=uuid7(),
        tenant=tenant,
        kind=kind,
        name=name,
        type=f"{kind}.{reason}",
        category=category,
        api_version=f"{kind.lower()}/v1",
        data=data if data is not None else {"plan": "pro", "seats": 5, "tags": ["a", "b"]},
        metadata=EventMetadata(**meta),
        status=ResourceStatus(
            phase="Ready",
            observed_generation=2,
            conditions=(
                Condition(
                    type="Ready",
                    status=ConditionStatus.TRUE,
                    reason="Provisioned",
                    message="all good",
                    observed_generation=2,
                    last_transition_time=now,
                ),
            ),
        ),
        finalizers=("billing",),
    )


def make_events(tenant: str, count: int, **kwargs: Any) -> list[Event]:
    return [make_event(tenant, name=f"org-{i}", **kwargs) for i in range(count)]


@dataclass
class BusBackend:
    """One backend under test, scoped to one test's tenant."""

    kind: str
    tenant: str
    opener: Callable[[], Awaitable[Bus]]
    nats_url: str | None = None
    buses: list[Bus] = field(default_factory=list)
    durables: list[str] = field(default_factory=list)

    async def open(self) -> Bus:
        """Another client of the same broker (another connection; for memory the same bus)."""
        bus = await self.opener()
        if bus not in self.buses:
            self.buses.append(bus)
        return bus

    def durable(self, label: str) -> str:
        name = f"{label}-{self.tenant}"
        self.durables.append(name)
        return name

    def filter(self, kind: str | None = None, category: Category | None = None) -> str:
        return subject_filter(self.tenant, kind, category)

    def config(self, label: str = "worker", **kwargs: Any) -> ConsumerConfig:
        kwargs.setdefault("filter_subject", self.filter())
        return ConsumerConfig(durable=self.durable(label), **kwargs)

    async def publish_raw(self, subject: str, payload: bytes) -> None:
        """Put bytes on the bus without our encoder (poison-message tests)."""
        bus = await self.open()
        if isinstance(bus, InMemoryBus):
            bus._publish_raw(subject, payload)
        elif isinstance(bus, EmbeddedBus):
            await bus._publish_raw(subject, payload, event_id=str(uuid7()))
        else:
            assert self.nats_url is not None
            nc = await nats.connect(self.nats_url)
            try:
                await nc.jetstream().publish(subject, payload)
            finally:
                await nc.close()

    async def cleanup(self) -> None:
        for bus in self.buses:
            if isinstance(bus, NatsBus):
                for durable in self.durables:
                    await bus.delete_consumer(durable)
                await bus.jetstream.purge_stream(STREAM_NAME, subject=f"eventplane.{self.tenant}.>")
                break
        for bus in self.buses:
            await bus.close()


def new_tenant() -> str:
    return f"t{uuid7().hex[-12:]}"


@pytest_asyncio.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusBackend]:
    tenant = new_tenant()
    kind: str = request.param
    if kind == "memory":
        shared = InMemoryBus()

        async def open_memory() -> Bus:
            return shared

        harness = BusBackend(kind, tenant, open_memory)
    elif kind == "embedded":
        url = f"sqlite:///{tmp_path / 'eventplane.db'}"

        async def open_embedded() -> Bus:
            return await open_bus(url)

        harness = BusBackend(kind, tenant, open_embedded)
    else:
        nats_url: str = request.getfixturevalue("nats_url")

        async def open_nats() -> Bus:
            return await open_bus(nats_url)

        harness = BusBackend(kind, tenant, open_nats, nats_url=nats_url)
    try:
        yield harness
    finally:
        await harness.cleanup()
