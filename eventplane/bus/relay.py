"""The relay: the event store is the outbox, and this moves it onto the bus.

Sits in the bus layer and reads the store (bus may import store; never the reverse).
``evtctl run`` starts one per process; only the holder of the store lease ``relay``
publishes, the others stand by and take over when the lease expires.

One step, repeated until caught up:

1. read the checkpoint (last published position) and the store's safe horizon;
2. read up to ``batch_size`` internal/fact events after the checkpoint, in position order;
3. publish them and wait for the broker's acknowledgement of every one;
4. make sure the lease is still held, then save the new checkpoint.

While it holds the lease the relay is the checkpoint's only writer, so it keeps the
checkpoint in memory (reading it again after any failure or a lost lease) and renews the
lease only once a third of its time-to-live has passed — the renewal was measured against
the relay's own clock from before the request, so it is held for at least two thirds of
the TTL more. A quiet relay thus costs one read of the horizon and one of the events per
wake-up, and a busy one two round trips more per batch (the checkpoint save and, now and
then, the renewal).

A crash anywhere loses nothing: before 3 nothing happened; between 3 and 4 the batch
is published again on restart and the broker drops the copies (``Nats-Msg-Id`` =
event id on NATS, the unique event id on the embedded bus). The relay is woken by
``store.wait_for_append`` (in-process appends, PostgreSQL NOTIFY) with a poll
fallback, and survives bus or store outages by retrying with capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable

from eventplane.bus.base import Bus
from eventplane.errors import BusError, StoreError, UnavailableError
from eventplane.event.model import Category
from eventplane.store.base import EventFilter, EventStore
from eventplane.utils import uuid7

__all__ = ["Relay"]

log = logging.getLogger(__name__)


class _LeaseLost(Exception):
    """Another relay took the lease while this one was publishing."""


class Relay:
    """Publishes stored events of ``categories`` to ``bus`` in position order."""

    def __init__(
        self,
        store: EventStore,
        bus: Bus,
        *,
        name: str = "relay",
        batch_size: int = 500,
        poll_interval: float = 1.0,
        lease_ttl: float = 15.0,
        max_backoff: float = 5.0,
        categories: tuple[Category, ...] = (Category.INTERNAL, Category.FACT),
        holder: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if poll_interval <= 0 or lease_ttl <= 0:
            raise ValueError("poll_interval and lease_ttl must be positive")
        self.store = store
        self.bus = bus
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        self.max_backoff = max_backoff
        self.filter = EventFilter(categories=categories)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid7()}"
        self._active = False  # holds the lease (as of the last acquire)
        self._checkpoint: int | None = None  # known only while active; None: read it
        self._renewed_at = 0.0  # time.monotonic() taken just before the last acquire
        self.published = 0  # events published by this instance (monitoring)

    # -- one pass ---------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Publish everything stored so far if this relay holds (or can take) the lease.

        Returns how many events it published (0 when standing by or caught up). Raises
        BusUnavailableError / StoreUnavailableError on an outage; what was acknowledged
        before the error is checkpointed.
        """
        if not await self._hold_lease():
            return 0
        total = 0
        try:
            while True:
                published, more = await self._step()
                total += published
                if not more:
                    return total
        except _LeaseLost:
            self._set_active(False)
            return total
        except BaseException:
            self._checkpoint = None  # a save may or may not have happened: read it again
            raise

    async def _step(self) -> tuple[int, bool]:
        checkpoint = self._checkpoint
        if checkpoint is None:
            checkpoint = await self.store.load_checkpoint(self.name)
            self._checkpoint = checkpoint
        # The horizon is taken before reading: every matching event at or below it is
        # visible to the read, so a short batch proves the whole range up to it is done
        # (and the checkpoint may skip past intents the relay does not publish).
        horizon = await self.store.last_position()
        events = await self.store.read_all(
            after=checkpoint, limit=self.batch_size, filter=self.filter
        )
        if events:
            await self.bus.publish(events)
        full = len(events) == self.batch_size
        last = events[-1].metadata.position if events else None
        new_checkpoint = checkpoint
        if last is not None:
            new_checkpoint = last
        if not full:
            new_checkpoint = max(new_checkpoint, horizon)
        if new_checkpoint > checkpoint:
            # Renew before writing: if the lease moved on while we published, the new
            # holder owns the checkpoint and ours must not overwrite it.
            if not await self._hold_lease():
                raise _LeaseLost
            await self.store.save_checkpoint(self.name, new_checkpoint)
            self._checkpoint = new_checkpoint
        self.published += len(events)
        if events:
            log.debug(
                "relay %s: published %d events up to position %s", self.name, len(events), last
            )
        return len(events), full

    async def _hold_lease(self) -> bool:
        if self._active and time.monotonic() - self._renewed_at < self.lease_ttl / 3:
            return True
        asked_at = time.monotonic()
        held = await self.store.acquire_lease(self.name, self.holder, self.lease_ttl)
        if held:
            self._renewed_at = asked_at
        self._set_active(held)
        return held

    def _set_active(self, active: bool) -> None:
        if not active:
            self._checkpoint = None  # whoever holds the lease now may move it
        if active and not self._active:
            log.info("relay %s (%s): active", self.name, self.holder)
        elif not active and self._active:
            log.warning("relay %s (%s): lost the lease; standing by", self.name, self.holder)
        elif not active and not self._active and self.published == 0:
            log.debug("relay %s (%s): another relay is active; standing by", self.name, self.holder)
        self._active = active

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop_event: asyncio.Event) -> None:
        """Relay until ``stop_event`` is set, then release the lease.

        Outages (UnavailableError) and other bus/store failures are logged and retried
        with exponential backoff capped at ``max_backoff``; nothing is skipped, so an
        event the bus keeps refusing blocks the relay (logged on every attempt) rather
        than breaking the order.
        """
        backoff = 0.0
        failures = 0
        try:
            while not stop_event.is_set():
                try:
                    published = await self.run_once()
                except (UnavailableError, BusError, StoreError) as exc:
                    failures += 1
                    backoff = min(self.max_backoff, backoff * 2 if backoff else 0.1)
                    level = logging.WARNING if isinstance(exc, UnavailableError) else logging.ERROR
                    if failures == 1 or level == logging.ERROR:
                        log.log(
                            level,
                            "relay %s: %s; retrying every <=%.1fs until it works",
                            self.name,
                            exc,
                            self.max_backoff,
                        )
                    else:
                        log.debug("relay %s: attempt %d failed: %s", self.name, failures, exc)
                    await self._wait(stop_event, asyncio.sleep(backoff))
                    continue
                if failures:
                    log.warning("relay %s: recovered after %d failed attempts", self.name, failures)
                    failures, backoff = 0, 0.0
                if not self._active:
                    # Standing by: try for the lease again well before it could expire.
                    await self._wait(
                        stop_event, asyncio.sleep(min(self.poll_interval, self.lease_ttl / 3))
                    )
                else:
                    # Caught up (run_once loops while batches come back full). An append
                    # during the pass has rung the doorbell already: this returns at once.
                    log.debug("relay %s: caught up after publishing %d", self.name, published)
                    wait = min(self.poll_interval, self.lease_ttl / 3)
                    await self._wait(stop_event, self.store.wait_for_append(wait))
        finally:
            if self._active:
                self._active = False
                try:
                    await self.store.release_lease(self.name, self.holder)
                except (UnavailableError, StoreError) as exc:
                    log.warning(
                        "relay %s: could not release the lease (%s); it expires in %.0fs",
                        self.name,
                        exc,
                        self.lease_ttl,
                    )

    @staticmethod
    async def _wait(stop_event: asyncio.Event, waiter: Awaitable[object]) -> None:
        """Wait for ``waiter`` or ``stop_event``, whichever first, leaving no task behind."""
        wait_task = asyncio.ensure_future(waiter)
        stop_task = asyncio.ensure_future(stop_event.wait())
        try:
            await asyncio.wait({wait_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (wait_task, stop_task):
                if not task.done():
                    task.cancel()
            await asyncio.gather(wait_task, stop_task, return_exceptions=True)
