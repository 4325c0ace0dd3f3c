"""NATS-only behaviour: outside clients, server restarts, URLs and connection errors."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from cloudevents.core.formats.json import JSONFormat
from nats.aio.msg import Msg

from eventplane.bus import ConsumerConfig, Delivery, open_bus, subject_for
from eventplane.bus.nats import STREAM_NAME, NatsBus, redact_url
from eventplane.errors import BusUnavailableError, ConfigError
from eventplane.event.cloudevents import CONTENT_TYPE
from tests.fixtures.nats import NatsServerProcess, free_port
from tests.integration.bus.conftest import make_events, new_tenant

pytestmark = [pytest.mark.nats, pytest.mark.timeout(90)]


@pytest.mark.smoke
async def test_plain_nats_subscriber_parses_every_message_with_the_cloudevents_sdk(
    nats_url: str,
) -> None:
    tenant = new_tenant()
    events = make_events(tenant, 5)
    received: list[Msg] = []
    all_seen = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        # Other test sessions may share this server: keep only this test's tenant.
        if msg.subject.split(".")[1] == tenant:
            received.append(msg)
            if len(received) == len(events):
                all_seen.set()

    outsider = await nats.connect(nats_url)
    bus = await open_bus(nats_url)
    try:
        await outsider.subscribe("eventplane.>", cb=on_message)
        # nats-py's flush() can overtake a SUB still in its write buffer (its PING is written
        # straight to the socket); a second round trip guarantees the server has the SUB.
        await outsider.flush()
        await outsider.flush()
        await bus.publish(events)
        await asyncio.wait_for(all_seen.wait(), 30)
    finally:
        await outsider.close()
        assert isinstance(bus, NatsBus)
        await bus.jetstream.purge_stream(STREAM_NAME, subject=f"eventplane.{tenant}.>")
        await bus.close()

    for msg, event in zip(received, events, strict=True):
        assert msg.subject == subject_for(event)
        assert msg.headers is not None
        assert msg.headers["Content-Type"] == CONTENT_TYPE
        assert msg.headers["Nats-Msg-Id"] == str(event.id)
        # The SDK fills in a missing id/time, so compare against the raw document too.
        raw = json.loads(msg.data)
        parsed = JSONFormat().read(None, msg.data)
        assert parsed.get_id() == raw["id"] == str(event.id)
        assert parsed.get_type() == event.type
        assert parsed.get_source() == event.metadata.source
        assert parsed.get_specversion() == "1.0"
        assert parsed.get_extension("tenant") == tenant
        assert parsed.get_extension("category") == event.category.value


async def _wait_until(condition: object, what: str, seconds: float = 15.0) -> None:
    assert callable(condition)
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _publish_until_accepted(bus: NatsBus, events: list[object]) -> int:
    """Publish, retrying on BusUnavailableError as the relay does; returns failed attempts."""
    failures = 0
    while True:
        try:
            await bus.publish(events)  # type: ignore[arg-type]
            return failures
        except BusUnavailableError:
            failures += 1
            assert failures < 100, "the bus never came back"
            await asyncio.sleep(0.1)


async def test_server_restart_mid_stream_loses_nothing(
    throwaway_nats: NatsServerProcess,
) -> None:
    tenant = new_tenant()
    before, after = make_events(tenant, 20), make_events(tenant, 20)
    bus = await NatsBus.connect(throwaway_nats.url, publish_timeout=3, reconnect_time_wait=0.2)
    try:
        sub = await bus.subscribe(
            ConsumerConfig(durable="restart", filter_subject=f"eventplane.{tenant}.>", ack_wait=2)
        )
        await bus.publish(before)
        first = await sub.fetch(batch=10, timeout=5)
        for delivery in first:
            await delivery.ack()

        throwaway_nats.stop()
        await _wait_until(lambda: not bus.is_connected, "the client to notice the outage")
        with pytest.raises(BusUnavailableError):
            await bus.publish(after[:1])
        throwaway_nats.start()

        await _publish_until_accepted(bus, after)
        rest: list[Delivery] = []
        for _ in range(50):
            try:
                batch = await sub.fetch(batch=50, timeout=1)
            except BusUnavailableError:
                await asyncio.sleep(0.1)
                continue
            for delivery in batch:
                await delivery.ack()
            rest.extend(batch)
            if len({d.event.id for d in rest}) == 30:
                break
    finally:
        await bus.close()

    got = {d.event.id for d in first} | {d.event.id for d in rest}
    assert got == {e.id for e in before + after}


async def test_stream_creation_is_idempotent_and_keeps_messages(
    throwaway_nats: NatsServerProcess,
) -> None:
    tenant = new_tenant()
    events = make_events(tenant, 3)
    first = await NatsBus.connect(throwaway_nats.url, duplicate_window=60)
    try:
        await first.publish(events)
        second = await NatsBus.connect(throwaway_nats.url, duplicate_window=90)
        try:
            info = await second.jetstream.stream_info(STREAM_NAME)
        finally:
            await second.close()
    finally:
        await first.close()

    assert info.config.subjects == ["eventplane.>"]
    assert info.config.duplicate_window == 90
    assert info.state.messages == 3


async def test_connecting_to_an_unreachable_server_raises_bus_unavailable() -> None:
    url = f"nats://127.0.0.1:{free_port()}"

    with pytest.raises(BusUnavailableError, match="cannot reach NATS"):
        await NatsBus.connect(url, connect_timeout=1.0)


async def test_bus_url_with_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nats://"):
        await open_bus("kafka://localhost:9092")


def test_passwords_never_appear_in_logged_urls() -> None:
    assert (
        redact_url("nats://relay:s3cret@nats.example:4222") == "nats://relay:***@nats.example:4222"
    )
    assert "s3cret" not in redact_url("nats://a:s3cret@h1:4222,nats://b:s3cret@h2:4222")
