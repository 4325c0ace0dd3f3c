"""The EventStore port: one small async interface, several backends behind it.

Sits above the pure event layer and below the controller runtime, projection
workers, relay and CLI, which are its only callers. Backends (``sqlite.py``,
``postgres.py``) implement this ABC; ``open_store(url)`` picks one. One contract
test suite (``tests/integration/store``) runs against every backend.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Self

from eventplane.errors import EventplaneError, UnavailableError
from eventplane.event.model import Category, Event

__all__ = ["ANY", "NO_STREAM", "EventFilter", "EventStore", "ExpectedVersion", "StreamState"]


class StreamState(enum.Enum):
    """Symbolic expected versions for ``append``."""

    NO_STREAM = "no_stream"  # the stream must not exist yet (same as expected_version=0)
    ANY = "any"  # no concurrency check


NO_STREAM: Final = StreamState.NO_STREAM
ANY: Final = StreamState.ANY
ExpectedVersion = int | StreamState


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Narrows ``read_all``. Every field is optional; set fields are ANDed, and a tuple
    means "any of these"."""

    tenant: str | None = None
    kinds: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    categories: tuple[Category, ...] = ()
    types: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()


class EventStore(ABC):
    """Append-only, per-stream optimistic concurrency, one global gap-free-for-readers order.

    Guarantees every backend keeps:
    - ``append`` is atomic for its stream: all events or none.
    - Stream versions start at 1 and have no holes; ``position`` is global and increasing,
      and a reader following ``position`` never misses an event that commits later with a
      lower position (positions become visible in order).
    - Re-appending an already stored event (same id, same content) writes nothing and
      returns the stored record; same id with different content raises DuplicateEventError.
    - A store opened with ``tenant=...`` reads and writes that tenant only.
    """

    #: Tenant this store instance is confined to, or None for a system-scoped store
    #: (runtime, relay, projection workers).
    tenant: str | None

    @abstractmethod
    async def append(
        self, events: Sequence[Event], *, expected_version: ExpectedVersion
    ) -> list[Event]:
        """Append ``events`` (all of one stream) and return them as recorded.

        ``expected_version`` is the stream's current version the caller decided on
        (0 / NO_STREAM for a new stream) or ANY. On mismatch raises ConcurrencyError
        and writes nothing.
        """

    async def append_many(
        self, appends: Sequence[tuple[Sequence[Event], ExpectedVersion]]
    ) -> list[list[Event] | EventplaneError]:
        """Several independent ``append`` calls (each one stream, each with its own
        expected version), as one unit of work where the backend can: a backend may
        commit them in one transaction to pay for one durable commit instead of many.

        Returns, per append in order, the recorded events or the error that append alone
        would have raised (ConcurrencyError, DuplicateEventError, ValidationError, ...);
        one append failing never stops the others. Errors that concern the whole call
        (the store is unreachable) are raised. This default just loops over ``append``.
        """
        results: list[list[Event] | EventplaneError] = []
        for events, expected_version in appends:
            try:
                results.append(await self.append(events, expected_version=expected_version))
            except UnavailableError:
                raise
            except EventplaneError as exc:
                results.append(exc)
        return results

    @abstractmethod
    async def read_stream(
        self, tenant: str, kind: str, name: str, *, from_version: int = 0
    ) -> list[Event]:
        """Events of one stream with ``stream_version > from_version``, in version order."""

    @abstractmethod
    async def read_all(
        self, *, after: int = 0, limit: int = 1000, filter: EventFilter | None = None
    ) -> list[Event]:
        """Up to ``limit`` events with ``position > after`` in position order."""

    @abstractmethod
    async def last_position(self) -> int:
        """The highest position a reader may safely follow to (0 for an empty store)."""

    @abstractmethod
    async def get_event(self, event_id: object) -> Event | None:
        """The stored event with this id (tenant-scoped), or None."""

    # -- support for followers (relay, workers) -------------------------------------------

    @abstractmethod
    async def wait_for_append(self, timeout: float) -> bool:  # noqa: ASYNC109 (the port)
        """Block until an append may have happened (in this process, or anywhere when the
        backend can tell — PostgreSQL LISTEN/NOTIFY) or ``timeout`` seconds pass.

        Returns True when woken early. Only a doorbell: callers always re-read from their
        checkpoint, and treat False as "poll anyway".
        """

    @abstractmethod
    async def load_checkpoint(self, name: str) -> int:
        """The position a named follower (e.g. ``relay``) last completed; 0 if none."""

    @abstractmethod
    async def save_checkpoint(self, name: str, position: int) -> None:
        """Record that follower ``name`` completed everything up to ``position``."""

    @abstractmethod
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the named lease for ``holder`` for ``ttl`` seconds.

        True when ``holder`` owns the lease afterwards. Used to keep exactly one active
        relay per store; an expired lease can be taken by anyone.
        """

    @abstractmethod
    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up early (clean shutdown) if ``holder`` owns it."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
