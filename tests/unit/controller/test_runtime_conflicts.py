"""Optimistic concurrency: a stream written by someone else between read and append."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventplane.bus import InMemoryBus
from eventplane.controller.runtime import ControllerRuntime
from eventplane.errors import ConfigError
from eventplane.event import Event, ReconcileContext, ResourceState, admit_intent, evolve
from eventplane.security import TrustedKeys
from eventplane.store import SqliteEventStore, open_store
from tests.unit.simulate import org_intent


class RacingStore(SqliteEventStore):
    """A real SQLite store on which "another runtime" admits an intent right after each of
    the next ``races`` stream reads — the interleaving two runtime processes produce."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rivals: list[Event] = []

    async def read_stream(
        self, tenant: str, kind: str, name: str, *, from_version: int = 0
    ) -> list[Event]:
        events = await super().read_stream(tenant, kind, name, from_version=from_version)
        if self.rivals:
            rival = self.rivals.pop(0)
            state = ResourceState.empty(tenant, kind, name)
            for event in events:
                state = evolve(state, event)
            admitted = admit_intent(state, rival, ReconcileContext.for_trigger(rival))
            await super().append(admitted, expected_version=state.version)
        return events


@pytest.fixture
async def racing(tmp_path: Path) -> AsyncIterator[RacingStore]:
    store = RacingStore(tmp_path / "racing.db")
    yield store
    await store.close()


async def test_conflict_is_reloaded_and_decided_again(
    racing: RacingStore, bus: InMemoryBus
) -> None:
    racing.rivals = [org_intent(1, plan="free")]
    await bus.publish([org_intent(2, plan="pro")])
    runtime = ControllerRuntime(
        racing, bus, timer_scan_interval=None, insecure_skip_verification=True
    )
    await runtime.run_until_idle(timeout=10)

    events = await racing.read_stream("default", "Organization", "acme")
    assert [e.reason for e in events] == [
        "Requested",
        "Requested",
        "FinalizersUpdated",
        "Provisioned",
        "StatusUpdated",
    ]
    assert events[3].data["plan"] == "pro"  # decided on the reloaded state
    assert runtime.stats.conflicts == 1


async def test_a_trigger_that_keeps_conflicting_is_handed_back_not_lost(
    racing: RacingStore, bus: InMemoryBus
) -> None:
    racing.rivals = [org_intent(i, name="acme", owners=[f"o{i}@acme.example"]) for i in (1, 2, 3)]
    await bus.publish([org_intent(10)])
    first = ControllerRuntime(
        racing,
        bus,
        max_conflict_retries=3,
        timer_scan_interval=None,
        insecure_skip_verification=True,
    )
    await first.run_until_idle(timeout=10)
    assert first.stats.conflicts == 3
    assert first.stats.released == 1
    assert first.stats.admitted == 0

    await asyncio.sleep(0.6)  # the nak delay after hitting the bound
    second = ControllerRuntime(
        racing, bus, timer_scan_interval=None, insecure_skip_verification=True
    )
    await second.run_until_idle(timeout=10)
    assert second.stats.admitted == 1
    events = await racing.read_stream("default", "Organization", "acme")
    assert [e.reason for e in events].count("Provisioned") == 1


async def test_a_runtime_without_trusted_keys_and_policy_refuses_to_start(
    tmp_path: Path,
) -> None:
    """Zero trust: skipping verification must be asked for by name, never a default."""
    async with open_store(f"sqlite:///{tmp_path}/ep.db") as store:
        bus = InMemoryBus()
        with pytest.raises(ConfigError, match="trusted_keys and policy"):
            ControllerRuntime(store, bus)
        with pytest.raises(ConfigError, match="insecure_skip_verification"):
            ControllerRuntime(store, bus, trusted_keys=TrustedKeys([]))
        await bus.close()
