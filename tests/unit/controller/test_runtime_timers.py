"""Durable timers: requeue_after is written to the store and survives a restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from eventplane.bus import InMemoryBus
from eventplane.utils import parse_time, utcnow
from tests.unit.controller.conftest import Harness, eventually
from tests.unit.controller.controllers import Poller
from tests.unit.simulate import org_intent

KEY = ("default", "Organization", "acme")


async def test_requeue_after_is_recorded_as_a_durable_timer(harness: Harness) -> None:
    runtime = await harness.drive(org_intent(1, at=utcnow()), controllers=[Poller()])

    events = await harness.stream("acme")
    assert [e.reason for e in events] == [
        "Requested",
        "Waiting",
        "StatusUpdated",
        "RequeueScheduled",
    ]
    due = parse_time(str(events[-1].data["due_at"]))
    assert due == events[0].metadata.occurred_at + timedelta(milliseconds=300)
    assert runtime.pending_timers == {KEY: due}


async def test_requeue_after_survives_a_runtime_restart(harness: Harness) -> None:
    await harness.drive(org_intent(1, at=utcnow()), controllers=[Poller()])
    scheduled = (await harness.stream("acme"))[-1]

    # A new process: nothing on its bus, only the store remembers the timer.
    harness.bus = InMemoryBus()
    runtime = await harness.drive(controllers=[Poller()], timer_horizon=10.0)
    await harness.bus.close()

    events = await harness.stream("acme")
    assert [e.reason for e in events][4:] == ["Polled", "RequeueCleared"]
    polled = events[4]
    assert polled.metadata.causation_id == scheduled.id
    assert polled.data["at"] == scheduled.data["due_at"]  # ctx.now is the due time
    assert runtime.stats.timers_fired == 1
    assert runtime.pending_timers == {}


async def test_a_cleared_timer_is_not_fired_after_a_restart(harness: Harness) -> None:
    await harness.drive(org_intent(1, at=utcnow()), controllers=[Poller()])
    # The plain Organization controller takes over and converges: the timer is cleared.
    await harness.drive(org_intent(2, at=utcnow(), plan="enterprise"))
    assert (await harness.types("acme"))[-1] == "RequeueCleared"

    harness.bus = InMemoryBus()
    runtime = await harness.drive(controllers=[Poller()], timer_horizon=10.0)
    await harness.bus.close()

    assert runtime.stats.timers_fired == 0
    assert "Polled" not in await harness.types("acme")


async def test_running_runtime_fires_its_timers(harness: Harness) -> None:
    stop = asyncio.Event()
    runtime = harness.runtime(controllers=[Poller(timedelta(milliseconds=20))])
    task = asyncio.create_task(runtime.run(stop))
    await harness.publish(org_intent(1, at=utcnow()))

    async def polled() -> bool:
        return "Polled" in await harness.types("acme")

    await eventually(polled)
    stop.set()
    await task

    assert runtime.stats.timers_fired == 1
