"""Fixtures for the ControllerRuntime unit tests: a real SQLite store in tmp_path, the
in-memory bus, and helpers to publish intents and read streams back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eventplane.bus import InMemoryBus
from eventplane.controller.runtime import ControllerRuntime
from eventplane.event import Event, ResourceState, fold
from eventplane.store import EventStore, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_store(f"sqlite:///{tmp_path}/eventplane.db") as opened:
        yield opened


@pytest.fixture
async def bus() -> AsyncIterator[InMemoryBus]:
    memory = InMemoryBus()
    yield memory
    await memory.close()


class Harness:
    """One store and bus, runtimes built on demand, and readers for assertions."""

    def __init__(self, store: EventStore, bus: InMemoryBus) -> None:
        self.store = store
        self.bus = bus

    def runtime(self, **options: Any) -> ControllerRuntime:
        options.setdefault("timer_scan_interval", None)
        if "trusted_keys" not in options and "policy" not in options:
            options.setdefault("insecure_skip_verification", True)  # unsigned test intents
        return ControllerRuntime(self.store, self.bus, **options)

    async def publish(self, *intents: Event) -> None:
        await self.bus.publish(list(intents))

    async def drive(self, *intents: Event, **options: Any) -> ControllerRuntime:
        """Publish ``intents`` and let a fresh runtime process everything available."""
        horizon = options.pop("timer_horizon", 0.0)
        if intents:
            await self.publish(*intents)
        runtime = self.runtime(**options)
        await runtime.run_until_idle(timeout=30, timer_horizon=horizon)
        return runtime

    async def stream(
        self, name: str, kind: str = "Organization", tenant: str = "default"
    ) -> list[Event]:
        return await self.store.read_stream(tenant, kind, name)

    async def types(self, name: str, kind: str = "Organization") -> list[str]:
        return [e.type.partition(".")[2] for e in await self.stream(name, kind)]

    async def state(self, name: str, kind: str = "Organization") -> ResourceState:
        return fold(
            await self.stream(name, kind), initial=ResourceState.empty("default", kind, name)
        )


@pytest.fixture
def harness(store: EventStore, bus: InMemoryBus) -> Harness:
    return Harness(store, bus)


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Wait until ``check()`` holds (polling the store); fail after ``within`` seconds.
    A bound on waiting, not a timing assertion."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.005)
