"""ProjectionWorker: keeps one projection's read model in step with the event store.

Sits above the store and the bus; started by ``eventplane.runner`` (``evtctl run``,
``evtctl apply --wait`` on the embedded default) and driven directly by tests.

**The store is the source of truth, the bus only a doorbell.** The worker follows
``store.read_all(after=checkpoint, filter=…)`` in position order — gap-safe by the
store's guarantee — and wakes up on ``store.wait_for_append`` (in-process appends,
PostgreSQL NOTIFY, SQLite's ``data_version``), on deliveries from its own durable bus
consumer ``projection-<NAME>`` when one is given, or after ``poll_interval``.

**Applied once.** One batch is one database transaction on the store's database:

1. read the checkpoint, the store's safe horizon, then up to ``batch_size`` matching
   events after the checkpoint (outside the transaction, so no lock is held while reading);
2. begin; move the projection's checkpoint row to the batch's end only if it still holds
   the position the batch was read from (one ``UPDATE … WHERE position = expected``; the
   row stays locked until commit — on SQLite ``BEGIN IMMEDIATE`` already holds the file's
   write lock); if it moved meanwhile, another worker of the same projection applied these
   events — roll back and start over from the new checkpoint;
3. ``projection.apply`` every event, commit.

The read-model writes and the checkpoint commit together, so a crash, a redelivery or a
replay can never apply an event twice or skip one, and competing workers of one
projection serialize on the checkpoint row. Bus deliveries are acknowledged only after a
pass that started after they arrived has committed. The checkpoint lives in the store's
``eventplane_checkpoints`` table as ``projection:<NAME>`` and also advances past events
the projection does not watch (to the horizon), so ``lag = last_position - checkpoint``
is meaningful.

**Tables.** Read-model tables live in the same database as the store (the SQLite file,
or the PostgreSQL database) and are created on start with
``SQLModel.metadata.create_all`` for the projection's ``TABLES`` only. On PostgreSQL the
role the workers connect as needs ``CREATE`` on the schema the first time (or create the
tables once as an owner by running a worker or ``evtctl projections rebuild`` with that
role), and afterwards ``SELECT, INSERT, UPDATE, DELETE`` on the read-model tables plus
``SELECT, INSERT, UPDATE`` on ``eventplane_checkpoints``; readers (``evtctl get``) need
``SELECT`` only. E.g. ``GRANT SELECT, INSERT, UPDATE, DELETE ON projection_organizations
TO eventplane_app``.

**Rebuild** (``rebuild``) deletes the rows of the projection's tables and replays the
whole log in batches inside ONE transaction holding the checkpoint lock, so readers see
the old read model until the new one commits and live workers wait (PostgreSQL) or
retry (SQLite) instead of interleaving. On SQLite that transaction holds the file's
write lock, so other writers (the runtime's appends) wait for the rebuild — up to the
30 s busy timeout; rebuild large embedded stores while the workers are stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import Table, delete, event, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlmodel import SQLModel

from eventplane.bus.base import (
    Bus,
    ConsumerConfig,
    DeliverPolicy,
    Delivery,
    Subscription,
    subject_filter,
)
from eventplane.errors import BusError, StoreError, UnavailableError
from eventplane.event.model import Event
from eventplane.projection.base import Projection, checkpoint_name
from eventplane.store.base import EventFilter, EventStore
from eventplane.store.tables import CheckpointRow
from eventplane.store.url import parse_store_url, sqlalchemy_url
from eventplane.utils import utcnow

__all__ = [
    "ProgressFn",
    "ProjectionWorker",
    "create_read_model_engine",
    "create_read_model_tables",
]

log = logging.getLogger(__name__)

#: ``progress(position_reached, target_position)`` during a rebuild.
ProgressFn = Callable[[int, int], None]

_CHECKPOINTS: Table = CheckpointRow.__table__  # type: ignore[attr-defined]
_SQLITE_BUSY_TIMEOUT_MS = 30_000
# Serializes CREATE TABLE of read models across processes on PostgreSQL (two workers
# starting together would otherwise race on the catalog's unique indexes).
_DDL_LOCK_KEY = 0x65766E70  # "evnp"


def create_read_model_engine(store_url: str, *, write: bool = True) -> AsyncEngine:
    """A SQLAlchemy async engine on the store's database, for read models.

    ``store_url`` is the store URL with any password filled in (``Settings.store_dsn()``).
    On SQLite every connection gets the store's settings (WAL, busy timeout) and, with
    ``write``, every transaction starts with ``BEGIN IMMEDIATE`` so it owns the write
    lock from the start (no SQLITE_BUSY on lock upgrade; it is also what makes the
    checkpoint check in a batch race-free). ``write=False`` engines use deferred
    transactions and never block writers (``evtctl get``). On PostgreSQL ``write`` engines
    commit asynchronously (``synchronous_commit = off``): see below.
    """
    target = parse_store_url(store_url)
    options: dict[str, Any] = {}
    if target.backend == "postgresql" and write:
        # A read model is derived data: its commits need not wait for the WAL flush. A
        # crash loses at most the last few hundred milliseconds of batches — each one whole,
        # rows and checkpoint together — and the worker applies them again from the older
        # checkpoint. (SQLite's WAL with synchronous=NORMAL makes the same trade.)
        options["connect_args"] = {"server_settings": {"synchronous_commit": "off"}}
    engine = create_async_engine(sqlalchemy_url(store_url), pool_pre_ping=False, **options)
    if target.backend == "sqlite":
        target.path.parent.mkdir(parents=True, exist_ok=True)
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # SQLAlchemy's pysqlite-style transaction handling is off; "begin" below
            # decides how each transaction starts.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

    return engine


def _tables(projection: type[Projection] | Projection) -> list[Table]:
    return [model.__table__ for model in projection.TABLES]  # type: ignore[attr-defined]


async def create_read_model_tables(
    engine: AsyncEngine, projections: list[type[Projection]] | list[Projection]
) -> None:
    """Create the read-model tables of ``projections`` if missing (safe to race)."""
    tables = [t for p in projections for t in _tables(p)]
    if not tables:
        return
    try:
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({_DDL_LOCK_KEY})"))

            def create(sync_conn: Any) -> None:
                SQLModel.metadata.create_all(sync_conn, tables=tables, checkfirst=True)

            await conn.run_sync(create)
    except Exception as exc:
        raise _translate(exc, "creating the read-model tables") from exc


def _translate(exc: Exception, what: str) -> Exception:
    """SQLAlchemy/driver errors become eventplane errors (the worker's boundary)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

    if isinstance(exc, UnavailableError | StoreError | BusError):
        return exc
    if isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        from eventplane.errors import StoreUnavailableError

        return StoreUnavailableError(f"read-model database unreachable while {what}: {exc}")
    if isinstance(exc, SQLAlchemyError | OSError):
        return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")
    return exc


class _Moved(Exception):
    """The checkpoint moved under us: another worker applied this batch."""


class ProjectionWorker:
    """Applies the stored events one projection watches, exactly once, in position order."""

    def __init__(
        self,
        projection: Projection,
        store: EventStore,
        engine: AsyncEngine,
        *,
        bus: Bus | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_backoff: float = 5.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if store.tenant is not None:
            raise ValueError(
                "a projection worker needs a system-scoped store (open_store(url)) — "
                "projections serve every tenant"
            )
        self.projection = projection
        self.name = projection.NAME
        self.store = store
        self.engine = engine
        self.bus = bus
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.checkpoint_key = checkpoint_name(self.name)
        watch = projection.WATCH
        self.filter = EventFilter(kinds=watch.kinds, categories=watch.categories, types=watch.types)
        self.applied = 0  # events applied by this instance (monitoring)
        self._ready = False
        # The checkpoint as this worker last committed it; None: read it from the store.
        # Each commit checks it under the row lock, so a stale value costs one _Moved.
        self._known: int | None = None

    # -- setup ------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the read-model tables and the checkpoint row if missing. Idempotent;
        ``run_once``/``run``/``rebuild`` call it on first use."""
        if self._ready:
            return
        # Touch the store first: on SQLite this creates the store's schema (and with it
        # the checkpoint table) in a fresh file.
        await self.store.load_checkpoint(self.checkpoint_key)
        await create_read_model_tables(self.engine, [self.projection])
        try:
            async with self.engine.begin() as conn:
                found = await conn.scalar(
                    select(_CHECKPOINTS.c.position).where(
                        _CHECKPOINTS.c.name == self.checkpoint_key
                    )
                )
                if found is None:
                    # The row must exist before any batch: locking a missing row locks
                    # nothing, and two first batches would both apply.
                    if self.engine.dialect.name == "postgresql":
                        from sqlalchemy.dialects.postgresql import insert as pg_insert

                        stmt: Any = pg_insert(_CHECKPOINTS).on_conflict_do_nothing()
                    else:
                        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                        stmt = sqlite_insert(_CHECKPOINTS).on_conflict_do_nothing()
                    await conn.execute(
                        stmt.values(name=self.checkpoint_key, position=0, updated_at=utcnow())
                    )
        except Exception as exc:
            raise _translate(exc, f"creating the checkpoint of projection {self.name!r}") from exc
        self._ready = True

    # -- progress ---------------------------------------------------------------------------

    async def checkpoint(self) -> int:
        """The position up to which the read model is complete."""
        return await self.store.load_checkpoint(self.checkpoint_key)

    async def lag(self) -> int:
        """How many positions the read model is behind the store."""
        return max(0, await self.store.last_position() - await self.checkpoint())

    # -- one pass ---------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Apply everything stored so far; returns how many events were applied."""
        await self.setup()
        total = 0
        while True:
            try:
                applied, more = await self._step()
            except _Moved:
                self._known = None
                continue  # another worker got there first; re-read from its checkpoint
            except BaseException:
                self._known = None  # a commit may or may not have happened
                raise
            total += applied
            if not more:
                return total

    async def _step(self) -> tuple[int, bool]:
        checkpoint = self._known if self._known is not None else await self.checkpoint()
        # Horizon before reading (as the relay does): a short batch then proves every
        # matching event up to the horizon was seen, so the checkpoint may jump there.
        horizon = await self.store.last_position()
        events = await self.store.read_all(
            after=checkpoint, limit=self.batch_size, filter=self.filter
        )
        full = len(events) == self.batch_size
        new_checkpoint = checkpoint
        if events:
            position = events[-1].metadata.position
            assert position is not None
            new_checkpoint = position
        if not full:
            new_checkpoint = max(new_checkpoint, horizon)
        if new_checkpoint <= checkpoint:
            return 0, False
        await self._commit_batch(checkpoint, new_checkpoint, events)
        self._known = new_checkpoint
        self.applied += len(events)
        if events:
            log.debug(
                "projection %s: applied %d events, checkpoint %d",
                self.name,
                len(events),
                new_checkpoint,
            )
        return len(events), full

    async def _commit_batch(self, expected: int, new: int, events: list[Event]) -> None:
        try:
            async with (
                AsyncSession(self.engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                # Move the checkpoint first, only if it is still where we read from: the
                # row stays locked to the commit, so a competing worker waits here and then
                # finds it moved. One statement for what was a SELECT … FOR UPDATE plus an
                # UPDATE at the end.
                if not await self._advance_checkpoint(session, expected, new):
                    raise _Moved
                await self.projection.apply_batch(events, session)
        except _Moved:
            raise
        except Exception as exc:
            raise _translate(exc, f"applying a batch to projection {self.name!r}") from exc

    async def _lock_checkpoint(self, session: AsyncSession) -> int:
        # FOR UPDATE renders on PostgreSQL only; on SQLite BEGIN IMMEDIATE already holds
        # the file's write lock for this transaction.
        position = await session.scalar(
            select(_CHECKPOINTS.c.position)
            .where(_CHECKPOINTS.c.name == self.checkpoint_key)
            .with_for_update()
        )
        return int(position or 0)

    async def _advance_checkpoint(self, session: AsyncSession, expected: int, new: int) -> bool:
        result = await session.execute(
            update(_CHECKPOINTS)
            .where(_CHECKPOINTS.c.name == self.checkpoint_key)
            .where(_CHECKPOINTS.c.position == expected)
            .values(position=new, updated_at=utcnow())
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def _set_checkpoint(self, session: AsyncSession, position: int) -> None:
        await session.execute(
            update(_CHECKPOINTS)
            .where(_CHECKPOINTS.c.name == self.checkpoint_key)
            .values(position=position, updated_at=utcnow())
        )

    # -- rebuild ----------------------------------------------------------------------------

    async def rebuild(self, progress: ProgressFn | None = None) -> int:
        """Clear the read model and replay the whole log into it in one transaction.

        Returns how many events were applied. ``progress(position, target)`` is called
        after each batch (``target`` is the store's last position when the rebuild began).
        """
        await self.setup()
        self._known = None
        count = 0
        try:
            async with (
                AsyncSession(self.engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                await self._lock_checkpoint(session)
                for table in reversed(_tables(self.projection)):
                    await session.execute(delete(table))
                horizon = await self.store.last_position()
                after = 0
                while True:
                    events = await self.store.read_all(
                        after=after, limit=self.batch_size, filter=self.filter
                    )
                    await self.projection.apply_batch(events, session)
                    count += len(events)
                    if events:
                        position = events[-1].metadata.position
                        assert position is not None
                        after = position
                    if len(events) < self.batch_size:
                        after = max(after, horizon)
                        if progress is not None:
                            progress(after, horizon)
                        break
                    if progress is not None:
                        progress(after, horizon)
                    # Keep memory flat: rows written so far go to the database, and
                    # the identity map is cleared of them.
                    await session.flush()
                    session.expunge_all()
                await self._set_checkpoint(session, after)
        except Exception as exc:
            raise _translate(exc, f"rebuilding projection {self.name!r}") from exc
        log.info("projection %s: rebuilt from %d events up to position %d", self.name, count, after)
        return count

    # -- the loop ---------------------------------------------------------------------------

    async def _subscribe(self) -> Subscription | None:
        if self.bus is None:
            return None
        kinds = self.projection.WATCH.kinds
        categories = self.projection.WATCH.categories
        config = ConsumerConfig(
            durable=f"projection-{self.name}",
            filter_subject=subject_filter(
                kind=kinds[0] if len(kinds) == 1 else None,
                category=categories[0] if len(categories) == 1 else None,
            ),
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=30.0,
            max_ack_pending=10_000,
        )
        return await self.bus.subscribe(config)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Keep the read model current until ``stop_event`` is set.

        Outages and failing ``apply`` calls are logged and retried with capped
        exponential backoff; the worker never skips an event, so a projection bug stalls
        this projection (visible as lag) rather than corrupting it.
        """
        async with AsyncExitStack() as stack:
            subscription: Subscription | None = None
            try:
                subscription = await self._subscribe()
            except (UnavailableError, BusError) as exc:
                log.warning(
                    "projection %s: no bus doorbell (%s); polling the store", self.name, exc
                )
            if subscription is not None:
                stack.push_async_callback(subscription.close)
            doorbell = _Doorbell(subscription, self.poll_interval)
            stack.push_async_callback(doorbell.close)
            # Let the store set its doorbell up (PostgreSQL opens a LISTEN connection) now,
            # uncancelled: cancelling a wait while that connection is being opened leaks it.
            await self.store.wait_for_append(0)
            backoff = 0.0
            failures = 0
            while not stop_event.is_set():
                arrived = doorbell.take()
                try:
                    applied = await self.run_once()
                except Exception as exc:
                    failures += 1
                    backoff = min(self.max_backoff, backoff * 2 if backoff else 0.1)
                    doorbell.put_back(arrived)
                    if failures == 1 or not isinstance(exc, UnavailableError):
                        log.log(
                            logging.WARNING if isinstance(exc, UnavailableError) else logging.ERROR,
                            "projection %s: %s; retrying every <=%.1fs",
                            self.name,
                            exc,
                            self.max_backoff,
                            exc_info=not isinstance(exc, UnavailableError | StoreError),
                        )
                    await _wait_any(stop_event, asyncio.sleep(backoff))
                    continue
                if failures:
                    log.warning(
                        "projection %s: recovered after %d failed attempts", self.name, failures
                    )
                    failures, backoff = 0, 0.0
                await doorbell.ack(arrived)
                # Caught up (run_once loops while batches come back full). Both doorbells
                # stay rung until waited on, so an append during the pass returns at once.
                log.debug("projection %s: caught up after applying %d", self.name, applied)
                await _wait_any(
                    stop_event,
                    self.store.wait_for_append(self.poll_interval),
                    doorbell.wait(),
                )


class _Doorbell:
    """Bus deliveries as wake-ups: fetched in the background, acknowledged after a pass
    that started after they arrived has committed (so nothing they announce is missed)."""

    def __init__(self, subscription: Subscription | None, poll_interval: float) -> None:
        self._sub = subscription
        self._poll = poll_interval
        self._arrived: list[Delivery] = []
        self._signal = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        if subscription is not None:
            self._task = asyncio.create_task(self._fetch_loop(subscription))

    async def _fetch_loop(self, subscription: Subscription) -> None:
        # The flag, not only cancellation, ends the loop: a client library that turns a
        # cancelled fetch into "nothing arrived" would otherwise keep it running forever.
        while not self._closing:
            try:
                deliveries = await subscription.fetch(batch=256, timeout=self._poll)
            except (UnavailableError, BusError) as exc:
                log.debug("projection doorbell: fetch failed (%s)", exc)
                await asyncio.sleep(self._poll)
                continue
            if deliveries:
                self._arrived.extend(deliveries)
                self._signal.set()

    def take(self) -> list[Delivery]:
        arrived, self._arrived = self._arrived, []
        self._signal.clear()
        return arrived

    def put_back(self, deliveries: list[Delivery]) -> None:
        self._arrived[:0] = deliveries

    async def ack(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await delivery.ack()
            except (UnavailableError, BusError) as exc:
                # Redelivered later: it only rings the doorbell again.
                log.debug("projection doorbell: ack failed (%s)", exc)

    async def wait(self) -> None:
        if self._task is None:
            await asyncio.Event().wait()  # never rings; the store doorbell and poll do
        await self._signal.wait()

    async def close(self) -> None:
        if self._task is None:
            return
        self._closing = True
        self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=self._poll + 5.0)
        if not done:
            log.warning("projection doorbell: the bus fetch did not stop; abandoning it")
        else:
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None


async def _wait_any(stop_event: asyncio.Event, *waiters: Awaitable[object]) -> None:
    """Wait for the first of ``waiters`` or ``stop_event``, leaving no task behind."""
    tasks = [asyncio.ensure_future(w) for w in (*waiters, stop_event.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
