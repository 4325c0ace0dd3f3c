"""NATS JetStream bus (nats-py): the production backend.

``open_bus("nats://…")`` builds it; the relay publishes through it and the controller
runtime / projection workers subscribe. The only module in Eventplane that imports
``nats``; every nats-py exception is translated here into ``BusError`` or
``BusUnavailableError``.

- One stream ``EVENTPLANE`` on ``eventplane.>``, file storage, a duplicate window,
  created or updated idempotently at connect (only the fields we own are changed, so
  an operator's limits and replicas survive).
- Every message carries ``Nats-Msg-Id`` = event id (server-side de-duplication inside
  the window) and ``Content-Type: application/cloudevents+json``.
- ``publish`` pipelines a batch with ``publish_async`` and waits for every PubAck; it
  fails fast with BusUnavailableError when the connection drops, so the relay can retry
  (the Msg-Id makes the retry harmless).
- Pull consumers with one ``filter_subject`` (nats-server 2.9 allows only one). An
  existing durable keeps its filter; asking for another filter is an error, not a
  silent surprise (nats-py ignores a config for an existing durable).
- The connection reconnects forever and logs each disconnect / reconnect once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as jsapi

from eventplane.bus._subjects import parse_filter
from eventplane.bus.base import (
    SUBJECT_PREFIX,
    Bus,
    ConsumerConfig,
    DeliverPolicy,
    Delivery,
    Subscription,
    subject_for,
)
from eventplane.errors import BusError, BusUnavailableError, ValidationError
from eventplane.event.cloudevents import CONTENT_TYPE, decode, encode, event_id_of
from eventplane.event.model import Event

__all__ = ["STREAM_NAME", "NatsBus", "redact_url"]

log = logging.getLogger(__name__)

STREAM_NAME = "EVENTPLANE"
STREAM_SUBJECTS = [f"{SUBJECT_PREFIX}.>"]

# Errors that mean "the server cannot be reached right now": retry later.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    TimeoutError,
    OSError,
)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for log lines and error messages."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        if split.password:
            host = split.hostname or ""
            if split.port:
                host = f"{host}:{split.port}"
            split = split._replace(netloc=f"{split.username}:***@{host}")
        parts.append(urlunsplit(split))
    return ",".join(parts)


def _translate(exc: BaseException, doing: str) -> BusError | BusUnavailableError:
    if isinstance(exc, _UNAVAILABLE):
        return BusUnavailableError(f"NATS unavailable while {doing}: {exc!r}; retry later")
    return BusError(f"NATS error while {doing}: {exc!r}")


class _NatsDelivery(Delivery):
    __slots__ = ("_msg", "_settled", "event", "subject")

    def __init__(self, msg: Msg, event: Event) -> None:
        self._msg = msg
        self._settled: str | None = None
        self.event = event
        self.subject = msg.subject

    @property
    def num_delivered(self) -> int:  # type: ignore[override]
        # Parsed on demand: nats-py builds a whole Metadata (timestamps included) from
        # the reply subject, which costs more than the ack itself on the hot path.
        delivered: int = self._msg.metadata.num_delivered
        return delivered

    async def ack(self) -> None:
        self._settle("ack")
        try:
            await self._msg.ack()
        except nats.errors.Error as exc:
            raise _translate(exc, f"acking event {self.event.id}") from exc

    async def nak(self, delay: float | None = None) -> None:
        self._settle("nak")
        try:
            await self._msg.nak(delay=delay)
        except nats.errors.Error as exc:
            raise _translate(exc, f"naking event {self.event.id}") from exc

    async def term(self) -> None:
        self._settle("term")
        try:
            await self._msg.term()
        except nats.errors.Error as exc:
            raise _translate(exc, f"terminating event {self.event.id}") from exc

    async def in_progress(self) -> None:
        if self._settled is not None:
            raise BusError(f"delivery of event {self.event.id} was already settled")
        try:
            await self._msg.in_progress()
        except nats.errors.Error as exc:
            raise _translate(exc, f"extending event {self.event.id}") from exc


class _NatsSubscription(Subscription):
    def __init__(self, psub: JetStreamContext.PullSubscription, durable: str) -> None:
        self._psub = psub
        self._durable = durable
        self._closed = False

    async def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[Delivery]:  # noqa: ASYNC109
        if batch < 1:
            raise ValidationError("fetch batch must be at least 1")
        if self._closed:
            raise BusUnavailableError("subscription is closed; subscribe again")
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            # nats-py signals "nothing arrived" with either TimeoutError (nats' own or
            # the bare asyncio one from _fetch_n); both just mean an empty batch.
            return []
        except (nats.errors.Error, OSError) as exc:
            raise _translate(exc, f"fetching for {self._durable}") from exc
        out: list[Delivery] = []
        for msg in msgs:
            try:
                event = decode(msg.data)
            except ValidationError as exc:
                log.error(
                    "bus: terminated undecodable message on %s (event id %s): %s",
                    msg.subject, event_id_of(msg.data), exc,
                )
                try:
                    await msg.term()
                except nats.errors.Error as term_exc:
                    raise _translate(term_exc, "terminating a poison message") from term_exc
                continue
            out.append(_NatsDelivery(msg, event))
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # If the connection is already gone the server drops the interest anyway.
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._psub.unsubscribe()


class NatsBus(Bus):
    """JetStream backend. Build with ``await NatsBus.connect(url)``."""

    def __init__(
        self,
        nc: NATS,
        *,
        url: str,
        publish_timeout: float,
        api_timeout: float,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=api_timeout)
        self._url = url
        self.publish_timeout = publish_timeout
        self._closed = False
        # Replaced with a fresh, unset event on every reconnect: a publish grabs the
        # current one and fails fast if it fires while acks are outstanding.
        self._lost = asyncio.Event()
        self._error_logged = False

    # -- connection -----------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "eventplane",
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        api_timeout: float = 5.0,
        reconnect_time_wait: float = 1.0,
        duplicate_window: float = 120.0,
        max_age: float | None = None,
        ensure_stream: bool = True,
    ) -> NatsBus:
        """Connect (waiting up to ``connect_timeout`` for a first connection), then create
        or update the ``EVENTPLANE`` stream. After the first connection the client
        reconnects forever.

        ``duplicate_window`` (seconds) bounds broker-side de-duplication by Msg-Id;
        ``max_age`` (seconds, None = keep forever) bounds retention.
        """
        nc = NATS()
        holder: list[NatsBus] = []
        redacted = redact_url(url)

        async def on_disconnected() -> None:
            if not holder:
                return  # the first connect is still retrying; its failure is raised below
            holder[0]._lost.set()
            holder[0]._error_logged = False
            if holder[0]._closed:
                return  # our own close(), not an outage
            log.warning("bus: disconnected from NATS %s; reconnecting until it is back", redacted)

        async def on_reconnected() -> None:
            if holder:
                holder[0]._lost = asyncio.Event()
            log.warning("bus: reconnected to NATS %s", redact_url(str(nc.connected_url or url)))

        async def on_error(exc: Exception) -> None:
            # Each failed reconnect attempt reports here; one line per outage is enough.
            # Before the first connection the BusUnavailableError below is that one line.
            if not holder or holder[0]._error_logged:
                log.debug("bus: NATS error: %r", exc)
                return
            holder[0]._error_logged = True
            log.warning("bus: NATS %s: %r", redacted, exc)

        async def on_closed() -> None:
            log.info("bus: NATS connection to %s closed", redacted)

        servers = [s.strip() for s in url.split(",") if s.strip()]
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=servers,
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=reconnect_time_wait,  # type: ignore[arg-type]
                    connect_timeout=min(2.0, connect_timeout),  # type: ignore[arg-type]
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    error_cb=on_error,
                    closed_cb=on_closed,
                ),
                connect_timeout,
            )
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            await _quiet_close(nc)
            raise BusUnavailableError(
                f"cannot reach NATS at {redacted} within {connect_timeout:g}s ({exc!r}); "
                "start nats-server with JetStream (-js) or point EVENTPLANE_BUS_URL at one"
            ) from exc
        bus = cls(nc, url=url, publish_timeout=publish_timeout, api_timeout=api_timeout)
        holder.append(bus)
        if ensure_stream:
            try:
                await bus._ensure_stream(duplicate_window=duplicate_window, max_age=max_age)
            except BaseException:
                await bus.close()
                raise
        return bus

    async def _ensure_stream(self, *, duplicate_window: float, max_age: float | None) -> None:
        jsm = self._js
        try:
            try:
                info = await jsm.stream_info(STREAM_NAME)
            except nats.js.errors.NotFoundError:
                info = None
            if info is None:
                config = jsapi.StreamConfig(
                    name=STREAM_NAME,
                    subjects=list(STREAM_SUBJECTS),
                    storage=jsapi.StorageType.FILE,
                    retention=jsapi.RetentionPolicy.LIMITS,
                    discard=jsapi.DiscardPolicy.OLD,
                    duplicate_window=duplicate_window,
                    max_age=max_age,
                )
                try:
                    await jsm.add_stream(config)
                    log.info("bus: created JetStream stream %s on %s", STREAM_NAME, STREAM_SUBJECTS)
                    return
                except nats.js.errors.BadRequestError:
                    # Someone else created it in between; fall through and compare.
                    info = await jsm.stream_info(STREAM_NAME)
            current = info.config
            # nats-py leaves enum fields of a server response as plain strings.
            if str(getattr(current.storage, "value", current.storage)) != "file":
                log.warning(
                    "bus: stream %s uses %s storage, so messages do not survive a server "
                    "restart; recreate it with file storage",
                    STREAM_NAME, current.storage,
                )
            wanted_subjects = sorted(set(current.subjects or []) | set(STREAM_SUBJECTS))
            changes: dict[str, Any] = {}
            if sorted(current.subjects or []) != wanted_subjects:
                changes["subjects"] = wanted_subjects
            if abs((current.duplicate_window or 0) - duplicate_window) > 1e-6:
                changes["duplicate_window"] = duplicate_window
            if max_age is not None and abs((current.max_age or 0) - max_age) > 1e-6:
                changes["max_age"] = max_age
            if changes:
                await jsm.update_stream(dataclasses.replace(current, **changes))
                log.info("bus: updated JetStream stream %s: %s", STREAM_NAME, changes)
        except nats.js.errors.APIError as exc:
            if isinstance(exc, nats.js.errors.ServiceUnavailableError):
                raise BusUnavailableError(
                    f"JetStream is not available on NATS {redact_url(self._url)} ({exc}); "
                    "start nats-server with JetStream enabled (-js)"
                ) from exc
            raise BusError(f"cannot create or update stream {STREAM_NAME}: {exc}") from exc
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            if isinstance(exc, nats.errors.NoRespondersError | nats.errors.TimeoutError):
                raise BusUnavailableError(
                    f"JetStream does not answer on NATS {redact_url(self._url)} ({exc!r}); "
                    "start nats-server with JetStream enabled (-js)"
                ) from exc
            raise _translate(exc, f"creating stream {STREAM_NAME}") from exc

    @property
    def jetstream(self) -> JetStreamContext:
        """The underlying JetStream context (benchmarks and tests; not a stable API)."""
        return self._js

    @property
    def is_connected(self) -> bool:
        return bool(self._nc.is_connected)

    # -- Bus ------------------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> None:
        if self._closed:
            raise BusUnavailableError("NATS bus is closed; open a new one")
        if not events:
            return
        lost = self._lost
        if lost.is_set() or not self._nc.is_connected:
            raise BusUnavailableError(
                f"NATS {redact_url(self._url)} is disconnected (reconnecting); retry later"
            )
        js = self._js
        futures: list[asyncio.Future[jsapi.PubAck]] = []
        acks: asyncio.Future[Any] | None = None
        # Encode the whole batch first: an event that cannot be encoded publishes nothing.
        payloads = [(event, encode(event)) for event in events]
        try:
            try:
                for event, payload in payloads:
                    futures.append(
                        await js.publish_async(
                            subject_for(event),
                            payload,
                            headers={"Nats-Msg-Id": str(event.id), "Content-Type": CONTENT_TYPE},
                        )
                    )
            except nats.errors.MaxPayloadError as exc:
                raise BusError(
                    f"event {event.id} is larger than the NATS server's max_payload; "
                    "store large data elsewhere and reference it"
                ) from exc
            acks = asyncio.ensure_future(asyncio.gather(*futures))
            lost_wait: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
            try:
                done, _ = await asyncio.wait(
                    {acks, lost_wait},
                    timeout=self.publish_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                lost_wait.cancel()
            if acks not in done:
                acks.cancel()
                why = "the connection dropped" if lost.is_set() else (
                    f"no acknowledgement within {self.publish_timeout:g}s"
                )
                raise BusUnavailableError(
                    f"publishing {len(events)} events to NATS {redact_url(self._url)}: {why}; "
                    "retry (the broker drops duplicates by Nats-Msg-Id)"
                )
            acks.result()  # raises the first publish error, if any
        except (BusError, BusUnavailableError):
            raise
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, f"publishing {len(events)} events") from exc
        finally:
            # On any way out (error, timeout, our caller cancelled) leave nothing pending:
            # cancelling the gather first keeps it from ending with an unretrieved error.
            if acks is not None and not acks.done():
                acks.cancel()
            for fut in futures:
                if not fut.done():
                    fut.cancel()  # frees nats-py's in-flight slot for this message

    async def subscribe(self, config: ConsumerConfig) -> Subscription:
        if self._closed:
            raise BusUnavailableError("NATS bus is closed; open a new one")
        parse_filter(config.filter_subject)  # same validation as every backend
        wanted = jsapi.ConsumerConfig(
            name=config.durable,
            durable_name=config.durable,
            deliver_policy=(
                jsapi.DeliverPolicy.NEW
                if config.deliver_policy is DeliverPolicy.NEW
                else jsapi.DeliverPolicy.ALL
            ),
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_ack_pending=config.max_ack_pending,
            max_deliver=config.max_deliver,
            filter_subject=config.filter_subject,
        )
        js = self._js
        try:
            try:
                info = await js.consumer_info(STREAM_NAME, config.durable)
            except nats.js.errors.NotFoundError:
                info = None
            if info is None:
                await js.add_consumer(STREAM_NAME, config=wanted)
            else:
                current = info.config
                if current.filter_subject != config.filter_subject:
                    raise BusError(
                        f"durable {config.durable!r} already exists with filter "
                        f"{current.filter_subject!r}, not {config.filter_subject!r}; "
                        "use a new durable name for a different filter"
                    )
                if (
                    abs((current.ack_wait or 0) - config.ack_wait) > 1e-6
                    or current.max_ack_pending != config.max_ack_pending
                    or (current.max_deliver or -1) != config.max_deliver
                ):
                    await self._update_consumer(wanted)
            psub = await js.pull_subscribe_bind(durable=config.durable, stream=STREAM_NAME)
        except BusError:
            raise
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, f"subscribing {config.durable}") from exc
        return _NatsSubscription(psub, config.durable)

    async def _update_consumer(self, wanted: jsapi.ConsumerConfig) -> None:
        try:
            await self._js.add_consumer(STREAM_NAME, config=wanted)
            log.info("bus: updated consumer %s settings", wanted.durable_name)
        except nats.js.errors.BadRequestError as exc:
            log.warning(
                "bus: consumer %s keeps its old settings (the server refused the update: %s); "
                "delete the durable to apply new ones",
                wanted.durable_name, exc,
            )

    async def delete_consumer(self, durable: str) -> None:
        """Delete a durable and its delivery state (a no-op when it does not exist)."""
        try:
            await self._js.delete_consumer(STREAM_NAME, durable)
        except nats.js.errors.NotFoundError:
            pass
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, f"deleting consumer {durable}") from exc

    async def ping(self) -> None:
        if self._closed or not self._nc.is_connected:
            raise BusUnavailableError(f"not connected to NATS at {redact_url(self._url)}")
        try:
            await self._nc.flush(timeout=2)  # a PING/PONG round trip to the server
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, "pinging the server") from exc

    async def consumer_pending(self, durable: str) -> int | None:
        try:
            info = await self._js.consumer_info(STREAM_NAME, durable)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, f"reading consumer {durable}") from exc
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await _quiet_close(self._nc)


async def _quiet_close(nc: NATS) -> None:
    with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
        await nc.close()
