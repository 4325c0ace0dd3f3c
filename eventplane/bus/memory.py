"""In-memory bus: the JetStream semantics in one process, for unit tests.

Called through ``open_bus("memory://")`` or constructed directly by tests that want a
bus without a server. It keeps the same contract as the NATS and embedded buses
(tests/integration/bus runs against all three): messages are stored encoded as
CloudEvents JSON and decoded on delivery, ids are de-duplicated, durables track a
cursor plus their unacknowledged deliveries, and an unsettled delivery comes back after
``ack_wait``. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from eventplane.bus._subjects import SubjectFilter, parse_filter, split_subject
from eventplane.bus.base import (
    Bus,
    ConsumerConfig,
    DeliverPolicy,
    Delivery,
    Subscription,
    subject_for,
)
from eventplane.errors import BusError, BusUnavailableError, ValidationError
from eventplane.event.cloudevents import decode, encode, event_id_of
from eventplane.event.model import Event
from eventplane.utils import uuid7

__all__ = ["InMemoryBus"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Message:
    subject: str
    tenant: str
    kind: str
    category: str
    payload: bytes


@dataclass(slots=True)
class _Pending:
    num_delivered: int
    claimed_by: str | None
    deadline: float  # monotonic time after which the message is due (again)


@dataclass(slots=True)
class _Consumer:
    config: ConsumerConfig
    filter: SubjectFilter
    cursor: int  # every message with seq <= cursor was delivered or skipped by the filter
    pending: dict[int, _Pending] = field(default_factory=dict)  # seq -> unacked delivery


class _MemoryDelivery(Delivery):
    __slots__ = (
        "_bus",
        "_consumer",
        "_seq",
        "_settled",
        "_token",
        "event",
        "num_delivered",
        "subject",
    )

    def __init__(
        self,
        bus: InMemoryBus,
        consumer: _Consumer,
        seq: int,
        token: str,
        event: Event,
        subject: str,
        num_delivered: int,
    ) -> None:
        self._bus = bus
        self._consumer = consumer
        self._seq = seq
        self._token = token
        self._settled: str | None = None
        self.event = event
        self.subject = subject
        self.num_delivered = num_delivered

    def _mine(self) -> _Pending | None:
        """The pending entry if this delivery still holds the claim (not redelivered since)."""
        entry = self._consumer.pending.get(self._seq)
        if entry is None or entry.claimed_by != self._token:
            return None
        if entry.num_delivered != self.num_delivered:
            return None
        return entry

    async def ack(self) -> None:
        self._settle("ack")
        # A late ack still counts: the work was done, so the message must not come back.
        self._consumer.pending.pop(self._seq, None)
        self._bus._notify()

    async def nak(self, delay: float | None = None) -> None:
        self._settle("nak")
        entry = self._mine()
        if entry is not None:
            entry.claimed_by = None
            entry.deadline = time.monotonic() + (delay or 0.0)
            self._bus._notify()

    async def term(self) -> None:
        self._settle("term")
        self._consumer.pending.pop(self._seq, None)
        self._bus._notify()

    async def in_progress(self) -> None:
        if self._settled is not None:
            raise BusError(f"delivery of event {self.event.id} was already settled")
        entry = self._mine()
        if entry is not None:
            entry.deadline = time.monotonic() + self._consumer.config.ack_wait


class _MemorySubscription(Subscription):
    def __init__(self, bus: InMemoryBus, consumer: _Consumer) -> None:
        self._bus = bus
        self._consumer = consumer
        self._token = f"sub-{uuid7()}"
        self._closed = False

    async def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[Delivery]:  # noqa: ASYNC109
        if batch < 1:
            raise ValidationError("fetch batch must be at least 1")
        deadline = time.monotonic() + timeout
        while True:
            if self._closed or self._bus._closed:
                raise BusUnavailableError("subscription is closed; subscribe again")
            out = self._bus._claim(self._consumer, self._token, batch)
            if out:
                return out
            now = time.monotonic()
            if now >= deadline:
                return []
            # Wake on any bus change, or when the earliest pending delivery falls due.
            wait = deadline - now
            due = [p.deadline for p in self._consumer.pending.values()]
            if due:
                wait = max(0.0, min(wait, min(due) - now))
            await self._bus._wait_for_change(wait)

    async def close(self) -> None:
        self._closed = True


class InMemoryBus(Bus):
    """A process-local bus with JetStream semantics. ``open_bus("memory://")`` makes one."""

    def __init__(self) -> None:
        self._messages: list[_Message] = []  # seq = index + 1
        self._ids: set[UUID] = set()
        self._consumers: dict[str, _Consumer] = {}
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def message_count(self) -> int:
        """How many distinct messages were published (after de-duplication)."""
        return len(self._messages)

    def _notify(self) -> None:
        # Swap in a fresh Event so every current waiter wakes exactly once.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    async def publish(self, events: Sequence[Event]) -> None:
        if self._closed:
            raise BusUnavailableError("bus is closed; open a new one")
        # Encode the whole batch first: an event that cannot be encoded publishes nothing.
        encoded = [(event, encode(event)) for event in events]
        for event, payload in encoded:
            if event.id in self._ids:
                continue
            self._ids.add(event.id)
            subject = subject_for(event)
            tenant, kind, category = split_subject(subject)
            self._messages.append(_Message(subject, tenant, kind, category, payload))
        self._notify()

    async def subscribe(self, config: ConsumerConfig) -> Subscription:
        if self._closed:
            raise BusUnavailableError("bus is closed; open a new one")
        subject_filter = parse_filter(config.filter_subject)
        consumer = self._consumers.get(config.durable)
        if consumer is None:
            cursor = len(self._messages) if config.deliver_policy is DeliverPolicy.NEW else 0
            consumer = _Consumer(config=config, filter=subject_filter, cursor=cursor)
            self._consumers[config.durable] = consumer
        else:
            if consumer.config.filter_subject != config.filter_subject:
                raise BusError(
                    f"durable {config.durable!r} already exists with filter "
                    f"{consumer.config.filter_subject!r}, not {config.filter_subject!r}; "
                    "use a new durable name for a different filter"
                )
            consumer.config = config
        return _MemorySubscription(self, consumer)

    def _claim(self, consumer: _Consumer, token: str, batch: int) -> list[Delivery]:
        now = time.monotonic()
        cfg = consumer.config
        claimed: list[tuple[int, _Pending]] = []
        for seq in sorted(s for s, p in consumer.pending.items() if p.deadline <= now):
            if len(claimed) >= batch:
                break
            entry = consumer.pending[seq]
            if cfg.max_deliver > 0 and entry.num_delivered >= cfg.max_deliver:
                log.warning(
                    "bus: %s dropped message %d after %d deliveries (max_deliver)",
                    cfg.durable,
                    seq,
                    entry.num_delivered,
                )
                del consumer.pending[seq]
                continue
            entry.num_delivered += 1
            entry.claimed_by = token
            entry.deadline = now + cfg.ack_wait
            claimed.append((seq, entry))
        while len(claimed) < batch and len(consumer.pending) < cfg.max_ack_pending:
            if consumer.cursor >= len(self._messages):
                break
            consumer.cursor += 1
            msg = self._messages[consumer.cursor - 1]
            if not consumer.filter.matches(msg.tenant, msg.kind, msg.category):
                continue
            entry = _Pending(num_delivered=1, claimed_by=token, deadline=now + cfg.ack_wait)
            consumer.pending[consumer.cursor] = entry
            claimed.append((consumer.cursor, entry))
        out: list[Delivery] = []
        for seq, entry in claimed:
            msg = self._messages[seq - 1]
            try:
                event = decode(msg.payload)
            except ValidationError as exc:
                log.error(
                    "bus: terminated undecodable message on %s (event id %s): %s",
                    msg.subject,
                    event_id_of(msg.payload),
                    exc,
                )
                consumer.pending.pop(seq, None)
                continue
            out.append(
                _MemoryDelivery(self, consumer, seq, token, event, msg.subject, entry.num_delivered)
            )
        return out

    def _publish_raw(self, subject: str, payload: bytes) -> None:
        """Store a payload as-is, bypassing the encoder (tests of poison handling use it)."""
        tenant, kind, category = split_subject(subject)
        self._messages.append(_Message(subject, tenant, kind, category, payload))
        self._notify()

    async def close(self) -> None:
        self._closed = True
        self._notify()
