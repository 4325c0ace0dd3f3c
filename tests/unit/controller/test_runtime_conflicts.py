"""Optimistic concurrency: a stream written by someone else between read and append."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from eventplane.bus import InMemoryBus
from eventplane.controller.runtime import ControllerRuntime
from eventplane.errors import ConfigError, EventplaneError
from eventplane.event import Event, ReconcileContext, ResourceState, admit_intent, fold
from eventplane.security import TrustedKeys
from eventplane.store import ExpectedVersion, SqliteEventStore, open_store
from tests.unit.simulate import org_intent


class RacingStore(SqliteEventStore):
    """A real SQLite store on which "another runtime" admits one of ``rivals`` right before
    each of the runtime's next appends — the interleaving two runtime processes produce."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rivals: list[Event] = []

    async def append_many(
        self, appends: Sequence[tuple[Sequence[Event], ExpectedVersion]]
    ) -> list[list[Event] | EventplaneError]:
        if self.rivals:
            rival = self.rivals.pop(0)
            events = await super().read_stream(*rival.stream)
            state = fold(events, initial=ResourceState.empty(*rival.stream))
            admitted = admit_intent(state, rival, ReconcileContext.for_trigger(rival))
            await super().append(admitted, expected_version=state.version)
        return await super().append_many(appends)


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


async def test_a_stream_written_elsewhere_since_the_last_turn_is_read_again(
    racing: RacingStore, bus: InMemoryBus
) -> None:
    """The runtime keeps each stream's state from its own last append; a write by someone
    else in between makes the next append conflict, and the turn is decided on a read."""
    runtime = ControllerRuntime(
        racing, bus, timer_scan_interval=None, insecure_skip_verification=True
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop))
    try:
        await bus.publish([org_intent(1, plan="free")])
        await _until(lambda: runtime.stats.admitted == 1)
        assert runtime.stats.conflicts == 0

        racing.rivals = [org_intent(2, plan="enterprise")]
        await bus.publish([org_intent(3, plan="pro")])
        await _until(lambda: runtime.stats.admitted == 2)
    finally:
        stop.set()
        await running

    events = await racing.read_stream("default", "Organization", "acme")
    assert [e.reason for e in events].count("Requested") == 3
    # Decided on the re-read stream: the rival's intent is generation 2, so this is 3.
    [updated] = [e for e in events if e.reason == "Updated"]
    assert (updated.data["plan"], updated.data["generation"]) == ("pro", 3)
    assert runtime.stats.conflicts == 1


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (polling the runtime's counters)
            await asyncio.sleep(0.01)


async def test_a_redelivered_intent_is_recognised_without_the_memo(
    racing: RacingStore, bus: InMemoryBus
) -> None:
    """A fresh runtime knows nothing: deciding an intent another runtime already applied
    again yields the very events already stored (deterministic ids and content), so the
    append is an idempotent no-op — or, had the stream moved on, a conflict and a re-read.
    Either way the stream is unchanged and the delivery is settled."""
    intent = org_intent(1)
    first = ControllerRuntime(
        racing, bus, timer_scan_interval=None, insecure_skip_verification=True
    )
    await bus.publish([intent])
    await first.run_until_idle(timeout=10)
    before = await racing.read_stream("default", "Organization", "acme")

    redelivering = InMemoryBus()  # the same message again, past any dedup window
    second = ControllerRuntime(
        racing, redelivering, timer_scan_interval=None, insecure_skip_verification=True
    )
    await redelivering.publish([intent])
    await second.run_until_idle(timeout=10)
    await redelivering.close()

    assert await racing.read_stream("default", "Organization", "acme") == before
    assert (second.stats.released, second.stats.errors) == (0, 0)


async def test_a_redelivered_intent_after_more_changes_is_found_in_the_stream(
    racing: RacingStore, bus: InMemoryBus
) -> None:
    first = ControllerRuntime(
        racing, bus, timer_scan_interval=None, insecure_skip_verification=True
    )
    old = org_intent(1, plan="free")
    await bus.publish([old, org_intent(2, plan="pro")])
    await first.run_until_idle(timeout=10)
    before = await racing.read_stream("default", "Organization", "acme")

    redelivering = InMemoryBus()
    second = ControllerRuntime(
        racing, redelivering, timer_scan_interval=None, insecure_skip_verification=True
    )
    await redelivering.publish([old])
    await second.run_until_idle(timeout=10)
    await redelivering.close()

    assert await racing.read_stream("default", "Organization", "acme") == before
    assert second.stats.duplicates == 1
    assert second.stats.conflicts == 1  # the first try (no read) met the longer stream


async def test_a_trigger_that_keeps_conflicting_is_handed_back_not_lost(
    racing: RacingStore, bus: InMemoryBus
) -> None:
    # Four rivals: the first try (no read) and the three bounded re-decisions each lose.
    racing.rivals = [
        org_intent(i, name="acme", owners=[f"o{i}@acme.example"]) for i in (1, 2, 3, 4)
    ]
    await bus.publish([org_intent(10)])
    first = ControllerRuntime(
        racing,
        bus,
        max_conflict_retries=3,
        timer_scan_interval=None,
        insecure_skip_verification=True,
    )
    await first.run_until_idle(timeout=10)
    assert first.stats.conflicts == 4
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
