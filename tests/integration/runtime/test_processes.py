"""The runtime as real processes on PostgreSQL + NATS JetStream: kill -9 mid-load and
restart, and two processes sharing the work. Every organization ends reconciled exactly
once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from eventplane.bus.nats import NatsBus
from eventplane.event import Category, EventFactory
from eventplane.store import EventStore
from eventplane.utils import utcnow
from tests.integration.runtime.conftest import (
    RuntimeProcesses,
    count_by_name,
    tenant_events,
)

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

SPEC = {"display_name": "Acme", "plan": "pro", "owners": ["ada@acme.example"]}


def intents(tenant: str, count: int, **spec_changes: object) -> list:  # type: ignore[type-arg]
    spec = {**SPEC, **spec_changes}
    now = utcnow()
    return [
        EventFactory.from_intent(
            spec,
            kind="Organization",
            tenant=tenant,
            name=f"org-{i}",
            actor="user:test",
            now=now,
        )
        for i in range(count)
    ]


async def wait_for(
    store: EventStore,
    tenant: str,
    event_type: str,
    at_least: int,
    processes: RuntimeProcesses,
    *,
    within: float = 60.0,
) -> Counter[str]:
    async with asyncio.timeout(within):
        while True:
            counts = await count_by_name(store, tenant, event_type)
            if sum(counts.values()) >= at_least:
                return counts
            for child in processes.children:
                code = child.poll()
                if code not in (None, -9):
                    raise AssertionError(
                        f"runtime process exited with {code}:\n{processes.log_text()}"
                    )
            await asyncio.sleep(0.05)


async def test_kill_9_mid_load_then_restart_reconciles_every_organization_exactly_once(
    processes: RuntimeProcesses, pg_store: EventStore, nats_bus: NatsBus, tenant: str
) -> None:
    total = 400
    await nats_bus.publish(intents(tenant, total))
    first = processes.start()
    done_before_kill = await wait_for(pg_store, tenant, "Organization.Provisioned", 20, processes)
    processes.kill(first)
    assert sum(done_before_kill.values()) < total, "the crash must happen mid-load"

    second = processes.start()
    counts = await wait_for(pg_store, tenant, "Organization.Provisioned", total, processes)
    assert processes.stop(second) == 0, processes.log_text()  # SIGTERM: clean exit

    assert counts == Counter({f"org-{i}": 1 for i in range(total)})
    events = await tenant_events(pg_store, tenant)
    requested = Counter(e.name for e in events if e.type == "Organization.Requested")
    assert requested == Counter({f"org-{i}": 1 for i in range(total)})
    assert not [e for e in events if e.reason == "IntentRejected"]
    # Every stream is complete: the one append per reconcile was all or nothing.
    by_name: dict[str, list[str]] = {}
    for event in events:
        by_name.setdefault(event.name, []).append(event.reason)
    assert {tuple(v) for v in by_name.values()} == {
        ("Requested", "FinalizersUpdated", "Provisioned", "StatusUpdated")
    }


@pytest.mark.smoke
async def test_two_runtime_processes_share_the_work_and_do_it_once(
    processes: RuntimeProcesses, pg_store: EventStore, nats_bus: NatsBus, tenant: str
) -> None:
    total = 150
    for _ in range(2):
        processes.start(max_concurrency=4)
    applies = intents(tenant, total)
    updates = intents(tenant, total, plan="enterprise")
    await nats_bus.publish(applies)
    await nats_bus.publish(updates)

    await wait_for(pg_store, tenant, "Organization.Provisioned", total, processes)

    async def converged() -> bool:
        events = await tenant_events(pg_store, tenant)
        handled = {e.id for e in events if e.category is Category.INTENT} | {
            e.data["intent_id"] for e in events if e.reason == "IntentRejected"
        }
        return len(handled) == 2 * total

    async with asyncio.timeout(60):
        while not await converged():  # noqa: ASYNC110 (polling another process's writes)
            await asyncio.sleep(0.1)
    for child in processes.children:
        assert processes.stop(child) == 0, processes.log_text()

    events = await tenant_events(pg_store, tenant)
    provisioned = Counter(e.name for e in events if e.reason == "Provisioned")
    assert provisioned == Counter({f"org-{i}": 1 for i in range(total)})
    stored_intents = Counter(e.id for e in events if e.category is Category.INTENT)
    assert set(stored_intents.values()) == {1}
    rejected = [e for e in events if e.reason == "IntentRejected"]
    assert {e.data["reason"] for e in rejected} <= {"Superseded"}
    # The newest spec won everywhere, and every resource observed it.
    from eventplane.event import ResourceState, fold

    streams: dict[str, list] = {}  # type: ignore[type-arg]
    for event in events:
        streams.setdefault(event.name, []).append(event)
    for name, stream in streams.items():
        state = fold(stream, initial=ResourceState.empty(tenant, "Organization", name))
        assert state.spec is not None
        assert state.spec["plan"] == "enterprise"
        assert state.observed
