"""NatsBus fetch over its own pull requests: the request/reply bookkeeping, no server.

The contract suite (tests/integration/bus) runs the same code against a real nats-server;
these cases pin what a server only does on a bad day (stale statuses, late deliveries,
JetStream gone) so they do not depend on timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from nats.aio.msg import Msg

from eventplane.bus.nats import _NatsSubscription
from eventplane.errors import BusError, BusUnavailableError
from eventplane.event.cloudevents import decode, encode
from eventplane.event.model import Event
from tests.integration.bus.conftest import make_events

Callback = Callable[[Msg], Awaitable[None]]


class FakeNats:
    """Just the nats-py client surface the subscription uses; answers requests by script."""

    is_closed = False

    def __init__(self, answer: Callable[[FakeNats, str, dict[str, Any]], None]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.cb: Callback | None = None

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Callback) -> FakeNats:
        assert subject == "_INBOX.test.*"
        self.cb = cb
        return self

    async def unsubscribe(self) -> None:
        self.cb = None

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        assert subject == "$JS.API.CONSUMER.MSG.NEXT.EVENTPLANE.worker"
        request = orjson.loads(payload)
        self.requests.append((reply, request))
        self.answer(self, reply, request)

    def deliver(self, *msgs: Msg) -> None:
        # The server answers asynchronously, after the request went out.
        async def run() -> None:
            for msg in msgs:
                assert self.cb is not None
                await self.cb(msg)

        asyncio.get_running_loop().create_task(run())


def data(n: int) -> list[Msg]:
    return [
        Msg(None, subject="eventplane.t.organization.fact", reply=f"$JS.ACK.{i}", data=encode(e))  # type: ignore[arg-type]
        for i, e in enumerate(make_events("t", n))
    ]


def decoded(msgs: list[Msg]) -> list[Event]:
    return [decode(m.data) for m in msgs]


def status(reply: str, code: str, description: str = "") -> Msg:
    return Msg(None, subject=reply, headers={"Status": code, "Description": description})  # type: ignore[arg-type]


async def subscription(nc: FakeNats) -> _NatsSubscription:
    sub = _NatsSubscription(nc, "worker")  # type: ignore[arg-type]
    await sub.start()
    return sub


async def test_first_request_is_a_no_wait_probe_that_ends_with_the_servers_status() -> None:
    msgs = data(3)
    nc = FakeNats(lambda nc, reply, _: nc.deliver(*msgs, status(reply, "404", "No Messages")))
    sub = await subscription(nc)

    got = await sub.fetch(batch=10, timeout=5)

    assert [d.event.id for d in got] == [e.id for e in decoded(msgs)]
    assert len(nc.requests) == 1
    request = nc.requests[0][1]
    assert request["batch"] == 10
    assert request["no_wait"] is True
    assert request["expires"] > 0


async def test_a_probe_that_brings_nothing_is_followed_by_one_waiting_request() -> None:
    msgs = data(2)

    def answer(nc: FakeNats, reply: str, request: dict[str, Any]) -> None:
        if request.get("no_wait"):
            nc.deliver(status(reply, "408", "Request Timeout"))
        else:
            nc.deliver(*msgs)

    nc = FakeNats(answer)
    sub = await subscription(nc)

    got = await sub.fetch(batch=2, timeout=5)

    assert len(got) == 2
    waiting = nc.requests[1][1]
    assert "no_wait" not in waiting
    assert waiting["batch"] == 2
    assert waiting["expires"] > 0


async def test_a_status_left_over_from_an_earlier_request_does_not_end_this_one() -> None:
    msgs = data(2)

    def answer(nc: FakeNats, reply: str, _: dict[str, Any]) -> None:
        nc.deliver(status("_INBOX.test.0", "408", "Request Timeout"), *msgs)

    nc = FakeNats(answer)
    sub = await subscription(nc)

    got = await sub.fetch(batch=2, timeout=5)

    assert len(got) == 2


async def test_deliveries_that_arrive_between_fetches_are_handed_out_by_the_next_one() -> None:
    nc = FakeNats(lambda nc, reply, _: nc.deliver(status(reply, "404")))
    sub = await subscription(nc)
    assert await sub.fetch(batch=5, timeout=0.05) == []
    asked = len(nc.requests)

    for msg in data(5):  # e.g. the tail of a waiting request that expired on our side first
        assert nc.cb is not None
        await nc.cb(msg)

    got = await sub.fetch(batch=5, timeout=5)
    assert len(got) == 5
    assert len(nc.requests) == asked  # a full batch was buffered: nothing to ask for


@pytest.mark.parametrize(
    ("code", "error"), [("503", BusUnavailableError), ("400", BusError)], ids=["503", "400"]
)
async def test_an_error_status_is_raised_as_a_bus_error(code: str, error: type[Exception]) -> None:
    nc = FakeNats(lambda nc, reply, _: nc.deliver(status(reply, code, "Bad Request")))
    sub = await subscription(nc)

    with pytest.raises(error, match=code):
        await sub.fetch(batch=1, timeout=5)


async def test_fetch_after_close_raises_bus_unavailable() -> None:
    nc = FakeNats(lambda nc, reply, _: None)
    sub = await subscription(nc)
    await sub.close()

    with pytest.raises(BusUnavailableError):
        await sub.fetch()
