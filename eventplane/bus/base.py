"""The Bus port: publish events, consume them through durable named consumers.

Sits beside the store, above the pure event layer; called by the relay, the
controller runtime, projection workers and ``evtctl apply``. Backends: NATS
JetStream (``nats.py``), the embedded SQL bus (``embedded.py``) and in-memory
(``memory.py``, unit tests only); ``open_bus(url)`` picks one. One contract suite
(``tests/integration/bus``) runs against all three.

Subjects are ``eventplane.<tenant>.<kind lowercased>.<category>``; payloads are
CloudEvents structured JSON (``eventplane.event.cloudevents``).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from eventplane.errors import BusError
from eventplane.event.model import Category, Event

__all__ = [
    "SUBJECT_PREFIX",
    "Bus",
    "ConsumerConfig",
    "DeliverPolicy",
    "Delivery",
    "Subscription",
    "subject_filter",
    "subject_for",
]

SUBJECT_PREFIX = "eventplane"


def subject_for(event: Event) -> str:
    return f"{SUBJECT_PREFIX}.{event.tenant}.{event.kind.lower()}.{event.category.value}"


def subject_filter(
    tenant: str | None = None, kind: str | None = None, category: Category | None = None
) -> str:
    """A subject filter with ``*`` for every unspecified token."""
    return ".".join(
        (
            SUBJECT_PREFIX,
            tenant or "*",
            kind.lower() if kind else "*",
            category.value if category else "*",
        )
    )


class DeliverPolicy(enum.Enum):
    ALL = "all"  # a new durable starts from the first stored message
    NEW = "new"  # a new durable starts with messages published after it was created


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """How a durable consumer behaves. Applied when the durable is created."""

    durable: str  # name shared by competing consumers
    filter_subject: str  # one filter (nats-server 2.9 allows only one); wildcards are fine
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    ack_wait: float = 30.0  # seconds before an unacknowledged delivery is redelivered
    max_ack_pending: int = 1000  # backpressure: at most this many unacked deliveries
    max_deliver: int = -1  # -1 = unlimited


class Delivery(ABC):
    """One message handed to a consumer. Exactly one of ack/nak/term settles it."""

    event: Event
    subject: str
    num_delivered: int  # 1 on first delivery
    _settled: str | None  # how it was settled; backends set None on construction

    def _settle(self, how: str) -> None:
        """Record the one settlement a delivery gets; a second one is a consumer bug."""
        if self._settled is not None:
            raise BusError(
                f"delivery of event {self.event.id} was already settled ({self._settled}); "
                "call exactly one of ack/nak/term per delivery"
            )
        self._settled = how

    @abstractmethod
    async def ack(self) -> None:
        """Processed; never deliver again."""

    @abstractmethod
    async def nak(self, delay: float | None = None) -> None:
        """Not processed; redeliver (after ``delay`` seconds when given)."""

    @abstractmethod
    async def term(self) -> None:
        """Never deliver again: the message cannot be processed (poison)."""

    @abstractmethod
    async def in_progress(self) -> None:
        """Still working: extend the ack deadline by another ``ack_wait``."""


class Subscription(ABC):
    """A pull consumer bound to one durable name."""

    @abstractmethod
    async def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[Delivery]:  # noqa: ASYNC109
        """Up to ``batch`` deliveries; returns [] (never raises) when none arrive in time."""

    @abstractmethod
    async def close(self) -> None:
        """Stop fetching. Unsettled deliveries are redelivered after ack_wait."""


class Bus(ABC):
    @abstractmethod
    async def publish(self, events: Sequence[Event]) -> None:
        """Publish and wait for the broker's acknowledgement of every event.

        Re-publishing an event id is deduplicated by the broker where it can be.
        """

    @abstractmethod
    async def subscribe(self, config: ConsumerConfig) -> Subscription:
        """Create (or bind to) the durable consumer ``config.durable``."""

    @abstractmethod
    async def close(self) -> None:
        """Drain and release the connection. Idempotent."""

    async def ping(self) -> None:
        """Raise BusUnavailableError unless the broker answers now (readiness probes).

        The default suits in-process buses, which are reachable while they exist.
        """
        return None

    async def consumer_pending(self, durable: str) -> int | None:
        """Messages durable consumer ``durable`` has not had acknowledged (undelivered +
        unacknowledged), or None when this bus cannot tell (metrics)."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
