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
import collections
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
from nats.aio.subscription import Subscription as NatsSubscriptionHandle
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
from eventplane.utils import json_dumps

__all__ = ["STREAM_NAME", "NatsBus", "redact_url"]

log = logging.getLogger(__name__)

STREAM_NAME = "EVENTPLANE"
STREAM_SUBJECTS = [f"{SUBJECT_PREFIX}.>"]
_JS_API = "$JS.API"  # the default JetStream API prefix, which NatsBus.connect uses

# Pull-request status replies (headers-only messages on the request's reply subject).
_STATUS = jsapi.Header.STATUS.value
_DESCRIPTION = jsapi.Header.DESCRIPTION.value
_HEARTBEAT = "100"
_NO_RESPONDERS = "503"
# No messages (404), request expired (408), conflicts such as max-ack-pending or a deleted
# consumer (409): this request is over, nothing is wrong with the connection — as nats-py.
_REQUEST_ENDED = frozenset({"404", "408", "409"})
_EXPIRES_MARGIN_NS = 100_000

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


def _expires(seconds: float) -> int:
    """A pull request's expiry: just before our own deadline, as nats-py sets it."""
    return max(int(seconds * 1e9) - _EXPIRES_MARGIN_NS, 1)


class _NatsSubscription(Subscription):
    """A JetStream pull consumer driven over a plain inbox subscription.

    nats-py's ``PullSubscription.fetch`` spends two tasks, a ``wait_for`` and a uuid4 on
    every message it hands out — more than decoding and validating the event costs. Here
    each fetch sends one pull request (the same ``CONSUMER.MSG.NEXT`` protocol and the
    same two steps: a no-wait probe, then one lingering request) and sleeps on a single
    future; the inbox callback only files messages. Each request gets its own reply
    token so a 404/408 left over from an earlier, abandoned request cannot end this one.
    Deliveries that arrive after a fetch gave up stay buffered for the next one, as
    nats-py's pending queue does; their ack deadline runs meanwhile, as it would there.
    """

    def __init__(self, nc: NATS, durable: str) -> None:
        self._nc = nc
        self._durable = durable
        self._next_subject = f"{_JS_API}.CONSUMER.MSG.NEXT.{STREAM_NAME}.{durable}"
        self._inbox = nc.new_inbox()
        self._sub: NatsSubscriptionHandle | None = None
        self._closed = False
        self._buffer: collections.deque[Msg] = collections.deque()
        self._requests = 0
        self._reply: str | None = None  # reply subject of the request being waited on
        self._status: tuple[str, str] | None = None  # its terminating status, once seen
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get(_STATUS) if headers else None
        if status is None:
            self._buffer.append(msg)
            if len(self._buffer) >= self._want:
                self._wake()
        elif status != _HEARTBEAT and msg.subject == self._reply:
            self._status = (status, (headers or {}).get(_DESCRIPTION, ""))
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[Delivery]:  # noqa: ASYNC109
        if batch < 1:
            raise ValidationError("fetch batch must be at least 1")
        if self._closed:
            raise BusUnavailableError("subscription is closed; subscribe again")
        if self._nc.is_closed:
            raise BusUnavailableError("NATS connection is closed; open a new bus")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if len(self._buffer) < batch:
            # The same two requests as nats-py's fetch, so the server behaves the same.
            # First a no-wait one: the server sends what is available and ends it with
            # 404/408. With nothing buffered it also carries an expiry, which makes the
            # server wait up to then for the first messages.
            probe: dict[str, Any] = {"no_wait": True}
            if not self._buffer:
                probe["expires"] = _expires(deadline - loop.time())
            await self._pull(batch, probe, deadline)
        remaining = deadline - loop.time()
        if not self._buffer and remaining > 0:
            # Only if that brought nothing: one that waits for the rest of the timeout
            # (the server answers 408 when it expires).
            await self._pull(batch, {"expires": _expires(remaining)}, deadline)
        return await self._deliveries(batch)

    async def _pull(self, batch: int, options: dict[str, Any], deadline: float) -> None:
        needed = batch - len(self._buffer)
        self._requests += 1
        reply = f"{self._inbox}.{self._requests}"
        self._reply, self._status, self._want = reply, None, batch
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_at(deadline, self._wake)
        try:
            await self._nc.publish(
                self._next_subject, json_dumps({"batch": needed, **options}), reply=reply
            )
            await waiter
        except (nats.errors.Error, OSError) as exc:
            raise _translate(exc, f"fetching for {self._durable}") from exc
        finally:
            timer.cancel()
            self._waiter = None
            self._reply = None
        status = self._status
        if status is not None and status[0] not in _REQUEST_ENDED:
            error = f"JetStream answered {status[0]} {status[1]!r} to a fetch for {self._durable}"
            if status[0] == _NO_RESPONDERS:
                raise BusUnavailableError(f"{error}: no JetStream answered; retry later")
            raise BusError(error)

    async def _deliveries(self, batch: int) -> list[Delivery]:
        out: list[Delivery] = []
        buffer = self._buffer
        while buffer and len(out) < batch:
            msg = buffer.popleft()
            try:
                event = decode(msg.data)
            except ValidationError as exc:
                log.error(
                    "bus: terminated undecodable message on %s (event id %s): %s",
                    msg.subject,
                    event_id_of(msg.data),
                    exc,
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
        self._wake()
        # Buffered deliveries were never handed out; like any unsettled delivery they are
        # redelivered after ack_wait. If the connection is already gone the server drops
        # the interest anyway.
        self._buffer.clear()
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._sub.unsubscribe()


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
                    STREAM_NAME,
                    current.storage,
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
                why = (
                    "the connection dropped"
                    if lost.is_set()
                    else (f"no acknowledgement within {self.publish_timeout:g}s")
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
        subscription = _NatsSubscription(self._nc, config.durable)
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
            await subscription.start()
        except BusError:
            raise
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, f"subscribing {config.durable}") from exc
        return subscription

    async def _update_consumer(self, wanted: jsapi.ConsumerConfig) -> None:
        try:
            await self._js.add_consumer(STREAM_NAME, config=wanted)
            log.info("bus: updated consumer %s settings", wanted.durable_name)
        except nats.js.errors.BadRequestError as exc:
            log.warning(
                "bus: consumer %s keeps its old settings (the server refused the update: %s); "
                "delete the durable to apply new ones",
                wanted.durable_name,
                exc,
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
