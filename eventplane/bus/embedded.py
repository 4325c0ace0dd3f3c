"""Embedded SQL bus: durable messages and consumer state inside the store's SQLite file.

The default bus when no NATS URL is configured (``open_bus("sqlite:///…")``), so that
``evtctl apply`` in one shell and ``evtctl run`` in another share work through one
database file with nothing else installed. Callers are the relay (publish) and the
controller runtime / projection workers (subscribe); SQL goes through
``eventplane.store.sqlite_conn`` because only the store package touches drivers.

Tables (prefixed ``bus_`` so they sit beside the store's own):

- ``bus_messages``: ``seq`` (monotonic), ``event_id`` UNIQUE (re-publishing an id is a
  no-op: de-duplication without a time window), subject tokens, CloudEvents payload.
- ``bus_consumers``: one row per durable: filter, settings, and ``cursor`` — every
  message with ``seq <= cursor`` was handed out or skipped by the filter.
- ``bus_pending``: one row per unacknowledged delivery: ``num_delivered``,
  ``claimed_by`` (the subscription holding it) and ``lease_until``. ack/term delete
  the row; nak moves ``lease_until`` to now+delay; an expired lease is due again, which
  is how a consumer that died mid-batch gets its messages redelivered to whoever
  fetches next (competing consumers in any process).

Every claim runs in one ``BEGIN IMMEDIATE`` transaction, so two processes can never
claim the same message. Fetchers wake on an in-process signal when this process
publishes or settles, and otherwise poll (``poll_interval``, default 50 ms) with a
cheap read-only check that takes no write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from eventplane.bus._subjects import SubjectFilter, parse_filter, split_subject
from eventplane.bus.base import (
    Bus,
    ConsumerConfig,
    DeliverPolicy,
    Delivery,
    Subscription,
    subject_for,
)
from eventplane.errors import (
    BusError,
    BusUnavailableError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from eventplane.event.cloudevents import decode, encode, event_id_of
from eventplane.event.model import Event
from eventplane.store.sqlite_conn import SqliteConnection, SqliteTx
from eventplane.utils import uuid7

__all__ = ["EmbeddedBus"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    subject      TEXT    NOT NULL,
    tenant       TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    published_at REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_consumers (
    durable         TEXT    PRIMARY KEY,
    filter_subject  TEXT    NOT NULL,
    deliver_policy  TEXT    NOT NULL,
    ack_wait        REAL    NOT NULL,
    max_ack_pending INTEGER NOT NULL,
    max_deliver     INTEGER NOT NULL,
    cursor          INTEGER NOT NULL,
    created_at      REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_pending (
    durable       TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    num_delivered INTEGER NOT NULL,
    claimed_by    TEXT,
    lease_until   REAL    NOT NULL,
    PRIMARY KEY (durable, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bus_pending_due ON bus_pending (durable, lease_until);
"""

# Buses open in this process per database file, so a publish wakes local fetchers at once
# instead of after the next poll. Weak: a bus that was dropped without close() must not leak.
_LOCAL: dict[str, weakref.WeakSet[EmbeddedBus]] = {}


def _translate(exc: Exception) -> BusError | BusUnavailableError:
    if isinstance(exc, StoreUnavailableError):
        return BusUnavailableError(f"embedded bus: {exc}")
    return BusError(f"embedded bus: {exc}")


_Claimed = list[tuple[int, str, bytes, int]]  # seq, subject, payload, num_delivered


class _EmbeddedDelivery(Delivery):
    __slots__ = ("_seq", "_settled", "_sub", "event", "num_delivered", "subject")

    def __init__(
        self, sub: _EmbeddedSubscription, seq: int, event: Event, subject: str, num_delivered: int
    ) -> None:
        self._sub = sub
        self._seq = seq
        self._settled: str | None = None
        self.event = event
        self.subject = subject
        self.num_delivered = num_delivered

    async def ack(self) -> None:
        self._settle("ack")
        # A late ack (lease expired, maybe redelivered) still removes the message: the
        # work was done, so it must not come back.
        self._sub._queue_delete(self._seq)

    async def term(self) -> None:
        self._settle("term")
        self._sub._queue_delete(self._seq)

    async def nak(self, delay: float | None = None) -> None:
        self._settle("nak")
        await self._sub._reschedule(self._seq, self.num_delivered, delay or 0.0, release=True)

    async def in_progress(self) -> None:
        if self._settled is not None:
            raise BusError(f"delivery of event {self.event.id} was already settled")
        await self._sub._reschedule(
            self._seq, self.num_delivered, self._sub._config.ack_wait, release=False
        )


class _EmbeddedSubscription(Subscription):
    def __init__(self, bus: EmbeddedBus, config: ConsumerConfig, filt: SubjectFilter) -> None:
        self._bus = bus
        self._config = config
        self._filter = filt
        self._token = f"sub-{uuid7()}"
        self._closed = False
        # Acks and terms are written in batches, like NATS acks are fire-and-forget:
        # queued here, then written by a flush task on the next loop turn, by the next
        # fetch's claim transaction, or by close() — whichever comes first.
        self._settled: list[int] = []
        self._flusher: asyncio.Task[None] | None = None
        bus._subscriptions.add(self)

    async def _run(self, fn: Any, *, write: bool = True) -> Any:
        try:
            return await self._bus._conn.run(fn, write=write)
        except (StoreError, StoreUnavailableError) as exc:
            raise _translate(exc) from exc

    def _queue_delete(self, seq: int) -> None:
        self._settled.append(seq)
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await self._flush()
        except (BusError, BusUnavailableError) as exc:
            # Kept queued: the next fetch or close() writes them. Until then the worst
            # case is a redelivery after ack_wait, which consumers tolerate anyway.
            log.warning("bus: could not record acks for %s yet: %s", self._config.durable, exc)
        finally:
            self._flusher = None

    async def _flush(self) -> None:
        seqs, self._settled = self._settled, []
        if not seqs:
            return
        try:
            await self._run(lambda tx: self._delete_settled(tx, seqs))
        except BaseException:
            self._settled[:0] = seqs
            raise
        self._bus._wake_local()

    def _delete_settled(self, tx: SqliteTx, seqs: list[int]) -> None:
        durable = self._config.durable
        tx.executemany(
            "DELETE FROM bus_pending WHERE durable = ? AND seq = ?",
            [(durable, seq) for seq in seqs],
        )

    async def _reschedule(
        self, seq: int, num_delivered: int, after: float, *, release: bool
    ) -> None:
        durable, token = self._config.durable, self._token
        until = time.time() + after
        # Only while this subscription still holds this delivery: a stale nak must not
        # steal a message another consumer has claimed since.
        sql = (
            "UPDATE bus_pending SET lease_until = ?"
            + (", claimed_by = NULL" if release else "")
            + " WHERE durable = ? AND seq = ? AND claimed_by = ? AND num_delivered = ?"
        )

        def body(tx: SqliteTx) -> None:
            tx.execute(sql, (until, durable, seq, token, num_delivered))

        await self._run(body)
        if release:
            self._bus._wake_local()

    def _probe(self, tx: SqliteTx) -> tuple[bool, float | None]:
        """Read-only: is there anything to claim, and when is the next lease due?"""
        durable = self._config.durable
        row = tx.fetchone(
            "SELECT (SELECT cursor FROM bus_consumers WHERE durable = ?),"
            " (SELECT max(seq) FROM bus_messages),"
            " (SELECT count(*) FROM bus_pending WHERE durable = ?),"
            " (SELECT min(lease_until) FROM bus_pending WHERE durable = ?)",
            (durable, durable, durable),
        )
        assert row is not None
        cursor, max_seq, pending, next_due = row
        if cursor is None:
            raise BusError(f"durable {durable!r} was deleted while subscribed; subscribe again")
        now = time.time()
        new_work = (max_seq or 0) > cursor and pending < self._config.max_ack_pending
        due_work = next_due is not None and next_due <= now
        return new_work or due_work, next_due

    def _claim(self, tx: SqliteTx, batch: int, settled: list[int]) -> _Claimed:
        cfg, durable, token = self._config, self._config.durable, self._token
        if settled:  # acks queued since the last write ride along in this transaction
            self._delete_settled(tx, settled)
        now = time.time()
        lease = now + cfg.ack_wait
        row = tx.fetchone("SELECT cursor FROM bus_consumers WHERE durable = ?", (durable,))
        if row is None:
            raise BusError(f"durable {durable!r} was deleted while subscribed; subscribe again")
        cursor: int = row[0]
        claimed: dict[int, int] = {}  # seq -> num_delivered
        for seq, delivered in tx.fetchall(
            "SELECT seq, num_delivered FROM bus_pending"
            " WHERE durable = ? AND lease_until <= ? ORDER BY seq LIMIT ?",
            (durable, now, batch),
        ):
            if cfg.max_deliver > 0 and delivered >= cfg.max_deliver:
                log.warning(
                    "bus: %s dropped message %d after %d deliveries (max_deliver)",
                    durable,
                    seq,
                    delivered,
                )
                tx.execute("DELETE FROM bus_pending WHERE durable = ? AND seq = ?", (durable, seq))
                continue
            claimed[seq] = delivered + 1
        if claimed:
            tx.executemany(
                "UPDATE bus_pending SET num_delivered = ?, claimed_by = ?, lease_until = ?"
                " WHERE durable = ? AND seq = ?",
                [(n, token, lease, durable, seq) for seq, n in claimed.items()],
            )
        pending_row = tx.fetchone("SELECT count(*) FROM bus_pending WHERE durable = ?", (durable,))
        assert pending_row is not None
        room = min(batch - len(claimed), cfg.max_ack_pending - pending_row[0])
        if room > 0:
            where, params = ["seq > ?"], [cursor]
            for column in ("tenant", "kind", "category"):
                value = getattr(self._filter, column)
                if value is not None:
                    where.append(f"{column} = ?")
                    params.append(value)
            new = [
                r[0]
                for r in tx.fetchall(
                    f"SELECT seq FROM bus_messages WHERE {' AND '.join(where)}"
                    " ORDER BY seq LIMIT ?",
                    (*params, room),
                )
            ]
            if len(new) == room:
                cursor = new[-1]
            else:  # everything up to the newest message was seen (the lock keeps it stable)
                top = tx.fetchone("SELECT max(seq) FROM bus_messages")
                cursor = max(cursor, (top[0] if top else None) or 0)
            tx.execute("UPDATE bus_consumers SET cursor = ? WHERE durable = ?", (cursor, durable))
            if new:
                tx.executemany(
                    "INSERT INTO bus_pending (durable, seq, num_delivered, claimed_by, lease_until)"
                    " VALUES (?, ?, 1, ?, ?)",
                    [(durable, seq, token, lease) for seq in new],
                )
                claimed.update((seq, 1) for seq in new)
        if not claimed:
            return []
        seqs = sorted(claimed)
        marks = ",".join("?" * len(seqs))
        rows = tx.fetchall(
            f"SELECT seq, subject, payload FROM bus_messages WHERE seq IN ({marks}) ORDER BY seq",
            seqs,
        )
        return [(seq, subject, payload, claimed[seq]) for seq, subject, payload in rows]

    async def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[Delivery]:  # noqa: ASYNC109
        if batch < 1:
            raise ValidationError("fetch batch must be at least 1")
        deadline = time.monotonic() + timeout
        poll = self._bus.poll_interval
        while True:
            if self._closed or self._bus._closed:
                raise BusUnavailableError("subscription is closed; subscribe again")
            # The signal is taken before probing so a publish that lands in between
            # still wakes this fetcher.
            changed = self._bus._signal()
            has_work, next_due = await self._run(self._probe, write=False)
            if has_work:
                settled, self._settled = self._settled, []
                try:
                    claimed: _Claimed = await self._run(
                        functools.partial(self._claim, batch=batch, settled=settled)
                    )
                except BaseException:
                    self._settled[:0] = settled
                    raise
                out = await self._deliveries(claimed)
                if out:
                    return out
                if claimed:
                    continue  # everything claimed was poison; look again at once
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wait = min(remaining, poll)
            if next_due is not None:
                wait = max(0.0, min(wait, next_due - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)

    async def _deliveries(self, claimed: _Claimed) -> list[Delivery]:
        out: list[Delivery] = []
        for seq, subject, payload, num_delivered in claimed:
            try:
                event = decode(payload)
            except ValidationError as exc:
                log.error(
                    "bus: terminated undecodable message on %s (event id %s): %s",
                    subject,
                    event_id_of(payload),
                    exc,
                )
                self._queue_delete(seq)
                continue
            out.append(_EmbeddedDelivery(self, seq, event, subject, num_delivered))
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bus._subscriptions.discard(self)
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._flush()


class EmbeddedBus(Bus):
    """The bus inside a SQLite file. Build with ``await EmbeddedBus.open(path)``."""

    def __init__(self, conn: SqliteConnection, *, poll_interval: float = 0.05) -> None:
        self._conn = conn
        self.poll_interval = poll_interval
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._subscriptions: weakref.WeakSet[_EmbeddedSubscription] = weakref.WeakSet()
        self._key = str(Path(conn.path).resolve()) if conn.path != ":memory:" else str(id(self))
        _LOCAL.setdefault(self._key, weakref.WeakSet()).add(self)

    @classmethod
    async def open(cls, path: str | Path, *, poll_interval: float = 0.05) -> Self:
        """Open (creating if needed) the bus tables in the SQLite database at ``path``."""
        try:
            conn = await SqliteConnection.open(path)
            try:
                await conn.script(_SCHEMA)
            except BaseException:
                await conn.close()
                raise
        except (StoreError, StoreUnavailableError) as exc:
            raise _translate(exc) from exc
        return cls(conn, poll_interval=poll_interval)

    @property
    def path(self) -> str:
        return self._conn.path

    def _signal(self) -> asyncio.Event:
        return self._changed

    def _wake(self) -> None:
        # Swap in a fresh Event so every current waiter wakes exactly once.
        self._changed.set()
        self._changed = asyncio.Event()

    def _wake_local(self) -> None:
        """Wake fetchers of every bus on this file in this process (any event loop)."""
        for bus in list(_LOCAL.get(self._key, ())):
            if bus._closed:
                continue
            if bus._loop is self._loop:
                bus._wake()
            elif not bus._loop.is_closed():
                bus._loop.call_soon_threadsafe(bus._wake)

    async def publish(self, events: Sequence[Event]) -> None:
        if self._closed:
            raise BusUnavailableError("embedded bus is closed; open a new one")
        if not events:
            return
        now = time.time()
        rows = []
        for event in events:
            subject = subject_for(event)
            tenant, kind, category = split_subject(subject)
            rows.append((str(event.id), subject, tenant, kind, category, encode(event), now))

        def body(tx: SqliteTx) -> None:
            # OR IGNORE on the unique event_id: re-publishing after a relay crash is a no-op.
            tx.executemany(
                "INSERT OR IGNORE INTO bus_messages"
                " (event_id, subject, tenant, kind, category, payload, published_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        try:
            await self._conn.run(body)
        except (StoreError, StoreUnavailableError) as exc:
            raise _translate(exc) from exc
        self._wake_local()

    async def _publish_raw(self, subject: str, payload: bytes, event_id: str) -> None:
        """Store a payload as-is, bypassing the encoder (tests of poison handling use it)."""
        tenant, kind, category = split_subject(subject)

        def body(tx: SqliteTx) -> None:
            tx.execute(
                "INSERT INTO bus_messages"
                " (event_id, subject, tenant, kind, category, payload, published_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, subject, tenant, kind, category, payload, time.time()),
            )

        await self._conn.run(body)
        self._wake_local()

    async def subscribe(self, config: ConsumerConfig) -> Subscription:
        if self._closed:
            raise BusUnavailableError("embedded bus is closed; open a new one")
        filt = parse_filter(config.filter_subject)

        def body(tx: SqliteTx) -> str | None:
            row = tx.fetchone(
                "SELECT filter_subject FROM bus_consumers WHERE durable = ?", (config.durable,)
            )
            if row is not None and row[0] != config.filter_subject:
                return str(row[0])
            if row is None:
                cursor = 0
                if config.deliver_policy is DeliverPolicy.NEW:
                    top = tx.fetchone("SELECT max(seq) FROM bus_messages")
                    cursor = (top[0] if top else None) or 0
                tx.execute(
                    "INSERT INTO bus_consumers (durable, filter_subject, deliver_policy, ack_wait,"
                    " max_ack_pending, max_deliver, cursor, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        config.durable,
                        config.filter_subject,
                        config.deliver_policy.value,
                        config.ack_wait,
                        config.max_ack_pending,
                        config.max_deliver,
                        cursor,
                        time.time(),
                    ),
                )
            else:
                tx.execute(
                    "UPDATE bus_consumers SET ack_wait = ?, max_ack_pending = ?, max_deliver = ?"
                    " WHERE durable = ?",
                    (config.ack_wait, config.max_ack_pending, config.max_deliver, config.durable),
                )
            return None

        try:
            existing = await self._conn.run(body)
        except (StoreError, StoreUnavailableError) as exc:
            raise _translate(exc) from exc
        if existing is not None:
            raise BusError(
                f"durable {config.durable!r} already exists with filter {existing!r}, not "
                f"{config.filter_subject!r}; use a new durable name for a different filter"
            )
        return _EmbeddedSubscription(self, config, filt)

    async def ping(self) -> None:
        if self._closed:
            raise BusUnavailableError("embedded bus is closed; open a new one")
        try:
            await self._conn.run(lambda tx: tx.fetchone("SELECT 1"), write=False)
        except (StoreError, StoreUnavailableError) as exc:
            raise _translate(exc) from exc

    async def consumer_pending(self, durable: str) -> int | None:
        def body(tx: SqliteTx) -> int | None:
            row = tx.fetchone(
                "SELECT cursor, filter_subject FROM bus_consumers WHERE durable = ?", (durable,)
            )
            if row is None:
                return None
            cursor, subject = row
            filt = parse_filter(subject)
            # NULL in a slot of the filter means "any value", as in SubjectFilter.matches.
            ahead = tx.fetchone(
                "SELECT count(*) FROM bus_messages WHERE seq > ?"
                " AND (? IS NULL OR tenant = ?) AND (? IS NULL OR kind = ?)"
                " AND (? IS NULL OR category = ?)",
                (
                    cursor,
                    filt.tenant,
                    filt.tenant,
                    filt.kind,
                    filt.kind,
                    filt.category,
                    filt.category,
                ),
            )
            unacked = tx.fetchone("SELECT count(*) FROM bus_pending WHERE durable = ?", (durable,))
            return int(ahead[0] if ahead else 0) + int(unacked[0] if unacked else 0)

        try:
            result: int | None = await self._conn.run(body, write=False)
        except (StoreError, StoreUnavailableError) as exc:
            raise _translate(exc) from exc
        return result

    async def delete_consumer(self, durable: str) -> None:
        """Forget a durable and its unacknowledged deliveries."""

        def body(tx: SqliteTx) -> None:
            tx.execute("DELETE FROM bus_pending WHERE durable = ?", (durable,))
            tx.execute("DELETE FROM bus_consumers WHERE durable = ?", (durable,))

        try:
            await self._conn.run(body)
        except (StoreError, StoreUnavailableError) as exc:
            raise _translate(exc) from exc

    async def close(self) -> None:
        if self._closed:
            return
        for sub in list(self._subscriptions):
            try:
                await sub.close()  # writes queued acks before the connection goes
            except (BusError, BusUnavailableError) as exc:
                log.warning("bus: acks not recorded on close (%s); they will be redelivered", exc)
        self._closed = True
        self._wake()
        peers = _LOCAL.get(self._key)
        if peers is not None:
            peers.discard(self)
            if not peers:
                _LOCAL.pop(self._key, None)
        await self._conn.close()
