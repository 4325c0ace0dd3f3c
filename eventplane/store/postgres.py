"""PostgreSQL EventStore (asyncpg): the production backend.

Part of ``eventplane.store``; built by ``open_store("postgresql://…")`` and used by the
controller runtime, relay, projection workers and CLI. The schema comes from the numbered
migrations in ``sqls/`` (``evtctl db migrate``); this module only checks it is there.

Design points:

- **One round trip per append.** ``eventplane_append(...)`` (sqls/0001) does the
  idempotency check, the version check, position assignment, the insert and the NOTIFY
  doorbell; the batch travels as column arrays, the bodies pre-encoded by orjson. A lone
  append first tries the same work as one plain statement (one event as scalars, a batch
  as one jsonb document) and falls back to the function only when that wrote nothing.
- **Global order without skips.** The append function first locks the single
  ``eventplane_head`` row and holds the lock until the transaction ends; positions are
  assigned from that row while the lock is held. So position N+1 cannot be handed out
  before the transaction holding N has committed or rolled back (and a rollback returns
  its positions, because the head update rolls back with it). PostgreSQL makes a commit
  visible before it releases the transaction's locks, therefore rows become visible in
  position order and a follower doing ``read_all(after=last_seen)`` never misses a row
  that "commits later with a lower position" — there is no such row. The price is that
  appends are serialized store-wide (each holds the lock across its commit); readers
  are never blocked. No time-outs, no gap detection.
- **Tenancy.** Every query carries ``tenant = $n`` when the store is tenant-scoped, and
  each pooled connection declares its scope to row-level security through the
  ``eventplane.tenant`` setting sent in the connection's startup packet (a tenant name,
  or ``*`` for a system store). Because it is a startup parameter it survives the pool's
  ``RESET ALL`` and holds for every transaction on that connection without a round trip.
- **Failures.** Driver exceptions become ``eventplane.errors``. Reads are retried on a
  lost connection (they are side-effect free); appends are not — they raise
  ``StoreUnavailableError`` saying the outcome is unknown and that retrying the same
  events is safe (appends are idempotent by event id).
- **Doorbell.** ``wait_for_append`` LISTENs on a dedicated connection (not pooled),
  reconnecting after the connection drops and reporting a possible miss by returning True.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import orjson

from eventplane.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventplaneError,
    FieldError,
    StoreError,
    StoreUnavailableError,
    UnavailableError,
    ValidationError,
)
from eventplane.event.model import Event, stream_id
from eventplane.store._common import (
    DEFAULT_MAX_EVENT_BYTES,
    EventValues,
    build_events,
    check_read_scope,
    check_stored_batch,
    event_from_row,
    expected_as_int,
    prepare_batch,
    scoped_filter,
)
from eventplane.store.base import EventFilter, EventStore, ExpectedVersion

__all__ = ["NOTIFY_CHANNEL", "SYSTEM_SCOPE", "PostgresEventStore"]

NOTIFY_CHANNEL = "eventplane_events"
SYSTEM_SCOPE = "*"  # the eventplane.tenant value of a system-scoped connection
_READ_ATTEMPTS = 4
_T = TypeVar("_T")

_COLUMNS = (
    'id, tenant, kind, name, stream_version, "position", type, category, actor, '
    "correlation_id, causation_id, generation, occurred_at, recorded_at, body"
)
_APPEND_SQL = (
    "SELECT outcome, out_id, out_stream_version, out_position, out_recorded_at "
    "FROM eventplane_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
_APPEND_ONE_SQL = (
    "SELECT outcome, out_id, out_stream_version, out_position, out_recorded_at "
    "FROM eventplane_append_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
# A lone append's first try: the append functions' work as ONE plain statement (same
# answer row), which spares the function call, its GUC switch, its two executor runs and
# its result tuplestore — ~30 µs of a ~500 µs one-event append. The position is still taken
# under the head-row lock held to COMMIT (the UPDATE), so the ordering guarantee is
# unchanged. What differs: the version and id checks read the statement's snapshot, taken
# before that lock is granted. So a first try only ever writes or does nothing, and both
# edges go to the functions, which decide on a snapshot taken after the lock: zero rows
# (version or id refused, perhaps on a stale view) and a unique violation (a concurrent
# append took the version or an id in between) — the violation rolls the statement back,
# head update included. Nothing is written twice or skipped. (A data error, e.g. a NUL
# character, also goes to the function, so its message is the one users always see.)
_APPEND_ONE_FIRST_TRY_SQL = """
WITH cur AS (
    SELECT coalesce(max(e.stream_version), 0) AS v FROM eventplane_events e
     WHERE e.tenant = $1 AND e.kind = $2 AND e.name = $3
), h AS (
    UPDATE eventplane_head h SET "position" = h."position" + 1
      FROM cur
     WHERE h.id = 1 AND ($4 < 0 OR $4 = cur.v)
       AND NOT EXISTS (SELECT FROM eventplane_events e WHERE e.id = $5)
    RETURNING h."position", cur.v, clock_timestamp() AS now,
              pg_notify('eventplane_events', '') AS bell
)
INSERT INTO eventplane_events (
    id, "position", tenant, kind, name, stream_version, type, category, actor,
    correlation_id, causation_id, generation, occurred_at, recorded_at, body)
SELECT $5, h."position", $1, $2, $3, h.v + 1, $6, $7, $8, $9, $10, $11, $12, h.now, $13
  FROM h
RETURNING 0::smallint, NULL::uuid, stream_version, "position", recorded_at
"""

# The first try for several events. They travel as ONE jsonb array of rows instead of
# nine parameter arrays: asyncpg encodes an array element by element with a Python-level
# ABC check each (~0.6 ms per 100 events, measured with py-spy), while orjson writes the
# whole document in one call (bodies are embedded as-is, already encoded) and the server
# unpacks it in C. Answer: eventplane_append's one outcome-0 row for the batch.
_APPEND_BATCH_FIRST_TRY_SQL = """
WITH b AS (
    SELECT r.n, r.v FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS r(v, n)
), cur AS (
    SELECT coalesce(max(e.stream_version), 0) AS v FROM eventplane_events e
     WHERE e.tenant = $1 AND e.kind = $2 AND e.name = $3
), h AS (
    UPDATE eventplane_head h SET "position" = h."position" + $6
      FROM cur
     WHERE h.id = 1 AND ($4 < 0 OR $4 = cur.v)
       AND NOT EXISTS (SELECT FROM b, eventplane_events e WHERE e.id = (b.v->>0)::uuid)
    RETURNING h."position" - $6 AS p0, cur.v, clock_timestamp() AS now,
              pg_notify('eventplane_events', '') AS bell
), ins AS (
    INSERT INTO eventplane_events (
        id, "position", tenant, kind, name, stream_version, type, category, actor,
        correlation_id, causation_id, generation, occurred_at, recorded_at, body)
    SELECT (b.v->>0)::uuid, h.p0 + b.n, $1, $2, $3, h.v + b.n, b.v->>1, b.v->>2, b.v->>3,
           (b.v->>4)::uuid, (b.v->>5)::uuid, (b.v->>6)::bigint, (b.v->>7)::timestamptz,
           h.now, b.v->8
      FROM h, b
)
SELECT 0::smallint, NULL::uuid, h.v + 1, h.p0 + 1, h.now FROM h
"""
# Past this size a batch goes straight to eventplane_append: the statement's cost is the
# data by then, and jsonb documents have a 256 MiB ceiling.
_BATCH_DOC_MAX_BYTES = 64 << 20
_FIRST_TRIES = (_APPEND_ONE_FIRST_TRY_SQL, _APPEND_BATCH_FIRST_TRY_SQL)

# Connection-level failures: the request may not have reached the server, or its answer
# was lost. Class 08 (connection exception) and 57P01-57P03 (terminated / shutting down).
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def _encode_jsonb(value: Any) -> bytes:
    # jsonb binary format = version byte 1 + JSON text; bodies arrive pre-encoded.
    return b"\x01" + (value if isinstance(value, bytes) else orjson.dumps(value))


def _decode_jsonb(value: bytes) -> Any:
    # Kept as the raw jsonb bytes: the row builder decodes the body inside
    # ``build_events``' collector pause, where a page of dicts costs no GC passes.
    return value


def _row_event(row: Sequence[Any]) -> Event:
    # Slicing copies the body once, yet orjson parses bytes faster than a memoryview's
    # buffer: 0.9 vs 1.1 µs for a 280-byte body.
    return event_from_row(row, orjson.loads(row[14][1:]))


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: skip asyncpg's default ``RESET ALL; UNLISTEN *; …`` round trip.

    Pooled connections never change session state (the tenant scope is a startup
    parameter, LISTEN uses its own connection, no advisory locks), and asyncpg still rolls
    back any open transaction before calling this. Saves a round trip per operation.
    """


def _unavailable(exc: BaseException, what: str) -> StoreUnavailableError:
    return StoreUnavailableError(f"PostgreSQL event store unreachable during {what}: {exc}")


def _translate(exc: BaseException, what: str) -> EventplaneError:
    """Map a driver exception to Eventplane's hierarchy (caller does ``raise ... from``)."""
    if isinstance(exc, EventplaneError):
        return exc
    if isinstance(exc, _CONNECTION_ERRORS):
        return _unavailable(exc, what)
    if isinstance(exc, asyncpg.exceptions.UndefinedTableError | asyncpg.UndefinedFunctionError):
        return StoreError(
            f"the event store schema is missing or outdated ({exc}); "
            "run `evtctl db migrate` against this database"
        )
    if isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError):
        return StoreError(f"{what} refused by PostgreSQL: {exc}")
    return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")


class PostgresEventStore(EventStore):
    """EventStore on PostgreSQL. Construct through ``open_store``; connects lazily."""

    def __init__(
        self,
        dsn: str,
        *,
        tenant: str | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        connect_timeout: float = 10.0,
        auto_migrate: bool = False,
    ) -> None:
        self.dsn = dsn
        self._auto_migrate = auto_migrate
        self.tenant = tenant
        self.max_event_bytes = max_event_bytes
        self._min_pool = min_pool_size
        self._max_pool = max_pool_size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._listened_before = False
        self._doorbell = asyncio.Event()
        self._closed = False
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writer: Any = None  # a pooled connection held for appends (group commit)
        self._sending = False  # a lone append is on the writer, sent by its caller
        self._writer_idle = asyncio.Event()  # cleared while that lone append is in flight
        self._writer_idle.set()
        self._has_append_many = False  # sqls/0002 applied: set-based group commits
        self._has_append_one = False  # sqls/0004 applied: scalar one-event appends

    # -- connections ----------------------------------------------------------------------

    @property
    def _scope(self) -> str:
        return self.tenant if self.tenant is not None else SYSTEM_SCOPE

    async def connect(self) -> None:
        """Open the pool and check the schema (called lazily by every operation)."""
        await self._get_pool()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise StoreError("the event store is closed; open a new one")
        async with self._pool_lock:
            if self._pool is None:
                if self._auto_migrate:
                    from eventplane.store.migrations import migrate

                    await migrate(self.dsn)
                try:
                    pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=self._min_pool,
                        max_size=self._max_pool,
                        init=_init_connection,
                        reset=_keep_session,
                        timeout=self._connect_timeout,
                        server_settings={"eventplane.tenant": self._scope},
                    )
                except Exception as exc:
                    raise _translate(exc, "connect") from exc
                try:
                    async with pool.acquire() as conn:
                        present, has_many, has_one = await conn.fetchrow(
                            "SELECT to_regprocedure('eventplane_append(text, text, text, "
                            "bigint, uuid[], text[], text[], text[], uuid[], uuid[], bigint[], "
                            "timestamptz[], jsonb[])') IS NOT NULL, "
                            "to_regprocedure('eventplane_append_many(text[], text[], text[], "
                            "bigint[], integer[], uuid[], text[], text[], text[], uuid[], "
                            "uuid[], bigint[], timestamptz[], jsonb[])') IS NOT NULL, "
                            "to_regprocedure('eventplane_append_one(text, text, text, bigint, "
                            "uuid, text, text, text, uuid, uuid, bigint, timestamptz, jsonb)') "
                            "IS NOT NULL"
                        )
                except Exception as exc:
                    await pool.close()
                    raise _translate(exc, "connect") from exc
                if not present:
                    await pool.close()
                    raise StoreError(
                        "the event store schema is missing in this database; "
                        "run `evtctl db migrate` (or open_store(..., migrate=True))"
                    )
                self._has_append_many = bool(has_many)
                self._has_append_one = bool(has_one)
                self._pool = pool
        assert self._pool is not None
        return self._pool

    async def _read(self, what: str, op: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        """Run a read-only operation, retrying on a lost connection (reads are safe to redo)."""
        delay = 0.05
        for attempt in range(_READ_ATTEMPTS):
            pool = await self._get_pool()
            try:
                async with pool.acquire() as conn:
                    return await op(conn)
            except _CONNECTION_ERRORS as exc:
                if attempt == _READ_ATTEMPTS - 1:
                    raise _unavailable(exc, what) from exc
                await asyncio.sleep(delay)
                delay *= 4
            except EventplaneError:
                raise
            except Exception as exc:
                raise _translate(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(self, what: str, op: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        pool = await self._get_pool()
        try:
            async with pool.acquire() as conn:
                return await op(conn)
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailableError(
                f"PostgreSQL connection lost during {what}: {exc}. The outcome is unknown; "
                "retrying with the same events is safe (appends are idempotent by event id)"
            ) from exc
        except EventplaneError:
            raise
        except Exception as exc:
            raise _translate(exc, what) from exc

    # -- append ---------------------------------------------------------------------------

    async def append(
        self, events: Sequence[Event], *, expected_version: ExpectedVersion
    ) -> list[Event]:
        expected = expected_as_int(expected_version)
        batch = prepare_batch(
            events, store_tenant=self.tenant, max_event_bytes=self.max_event_bytes
        )
        if not batch:
            return []
        evs = [v.event for v in batch]
        args = _append_args(batch, expected)
        if self._flusher is None and not self._sending:
            rows = await self._send_alone(args)
        else:
            rows = await self._submit(evs, args)
        return await self._appended(rows, evs, expected_version)

    async def _appended(
        self, rows: Sequence[Any], evs: list[Event], expected_version: ExpectedVersion
    ) -> list[Event]:
        """Interpret ``eventplane_append``'s rows: the recorded events, or raise."""
        first = evs[0]
        outcome = rows[0][0]
        if outcome == 0:
            self._doorbell.set()
            return _recorded(rows, evs)
        if outcome == 1:
            raise ConcurrencyError(
                stream_id(first.tenant, first.kind, first.name), expected_version, rows[0][2]
            )
        stored_ids = [r[1] for r in rows]
        stored = {e.id: e for e in await self._events_by_id(stored_ids)}
        return check_stored_batch(evs, stored, all_stored=outcome == 2)

    async def append_many(
        self, appends: Sequence[tuple[Sequence[Event], ExpectedVersion]]
    ) -> list[list[Event] | EventplaneError]:
        """Every append queued at once, so the group commit sends them in one statement
        (one transaction, one WAL flush, one round trip); each keeps its own outcome."""
        results: list[list[Event] | EventplaneError | None] = [None] * len(appends)
        work: list[tuple[int, list[Event], ExpectedVersion, asyncio.Future[list[Any]]]] = []
        for index, (events, expected_version) in enumerate(appends):
            try:
                expected = expected_as_int(expected_version)
                batch = prepare_batch(
                    events, store_tenant=self.tenant, max_event_bytes=self.max_event_bytes
                )
            except EventplaneError as exc:
                results[index] = exc
                continue
            if not batch:
                results[index] = []
                continue
            evs = [v.event for v in batch]
            future = self._submit(evs, _append_args(batch, expected))
            work.append((index, evs, expected_version, future))
        unavailable: UnavailableError | None = None
        for index, evs, expected_version, future in work:
            try:
                results[index] = await self._appended(await future, evs, expected_version)
            except UnavailableError as exc:
                unavailable = unavailable or exc  # keep awaiting: no future left unretrieved
            except EventplaneError as exc:
                results[index] = exc
        if unavailable is not None:
            raise unavailable
        return [r if r is not None else [] for r in results]

    # -- group commit -----------------------------------------------------------------------
    #
    # Appends are serialized store-wide by the head-row lock, each holding it across its
    # commit, so concurrent appends on separate connections only queue on that lock and pay
    # one WAL flush each. Instead every append of this store object goes through one
    # flusher task on one held connection: while a statement is in flight the next appends
    # queue up, and the flusher sends them all as ONE statement (eventplane_append once per
    # append, UNION ALL-ed) — one transaction, one flush, one round trip. Each call keeps
    # its own expected version and outcome (eventplane_append writes nothing for a conflict
    # or a duplicate, so the others still commit). An idle store sends a lone append at
    # once; a caller that is cancelled does not cancel the others' statement.

    def _submit(self, evs: list[Event], args: tuple[Any, ...]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(evs, args, future))
        if self._flusher is None and not self._sending:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return future

    async def _append_lone(self, args: tuple[Any, ...]) -> list[Any]:
        """One append on its own: first as one plain statement, then — only when that wrote
        nothing — through the append functions for the exact answer. One event travels as
        scalars (no arrays to decode and unnest server-side, ~70 µs less per call), several
        as one JSON document (first try) or as ``eventplane_append``'s column arrays."""
        if len(args[4]) == 1:
            scalars = (*args[:4], *(column[0] for column in args[4:]))
            rows = await self._on_writer("append", _APPEND_ONE_FIRST_TRY_SQL, scalars)
            if rows:
                return rows
            if self._has_append_one:
                return await self._on_writer("append", _APPEND_ONE_SQL, scalars)
        else:
            doc = _batch_doc(args)
            if doc is not None:
                first_try = (*args[:4], doc, len(args[4]))
                rows = await self._on_writer("append", _APPEND_BATCH_FIRST_TRY_SQL, first_try)
                if rows:
                    return rows
        return await self._on_writer("append", _APPEND_SQL, args)

    async def _send_alone(self, args: tuple[Any, ...]) -> list[Any]:
        """An idle store sends a lone append from the caller's own task: no flusher task,
        no future, two event-loop hops fewer. Appends arriving meanwhile queue up and the
        flusher takes them once this statement has left the writer connection."""
        self._sending = True
        self._writer_idle.clear()
        try:
            return await self._append_lone(args)
        finally:
            self._sending = False
            self._writer_idle.set()
            if self._queue and self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._queue:
                chunk = self._queue[:_MAX_APPENDS_PER_STATEMENT]
                del self._queue[:_MAX_APPENDS_PER_STATEMENT]
                try:
                    await self._send(chunk)
                except asyncio.CancelledError:
                    _fail(chunk, StoreUnavailableError(
                        "the event store was closed while appending; the outcome is unknown "
                        "and retrying with the same events is safe (idempotent by event id)"
                    ))  # fmt: skip
                    raise
                except Exception as exc:  # handed to every waiter
                    _fail(chunk, exc)
        finally:
            self._flusher = None
            if self._queue:  # only after a cancellation: nobody will send these
                _fail(self._queue, StoreUnavailableError("the event store was closed"))
                self._queue.clear()

    async def _send(self, chunk: list[_Pending]) -> None:
        params: Sequence[Any]
        if len(chunk) == 1:
            _resolve(chunk[0], await self._append_lone(chunk[0].args))
            return
        if self._has_append_many and _independent(chunk):
            sql, params = _APPEND_MANY_SQL, _append_many_args(chunk)
        else:
            sql, params = _append_many_sql(len(chunk)), [a for p in chunk for a in p.args]
        try:
            rows = await self._on_writer("append", sql, params)
        except (DuplicateEventError, ValidationError):
            if len(chunk) == 1:
                raise
            # One append's problem: send each on its own to pin it to its caller.
            for pending in chunk:
                try:
                    await self._send([pending])
                except Exception as exc:  # handed to its waiter
                    _fail([pending], exc)
            return
        per_append: list[list[Any]] = [[] for _ in chunk]
        for row in rows:
            per_append[row[0]].append(row[1:])
        for pending, own in zip(chunk, per_append, strict=True):
            _resolve(pending, own)

    async def _on_writer(self, what: str, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run an append statement on the held writer connection (no pool round trip)."""
        conn = self._writer
        if conn is None or conn.is_closed():
            pool = await self._get_pool()
            try:
                conn = await pool.acquire()
            except Exception as exc:
                raise _translate(exc, "connect") from exc
            try:
                # The first-try append statement is a prepared plan cached for the
                # connection's life: one planned while the table is small (any fresh
                # deployment, before autovacuum's first ANALYZE) would keep scanning the
                # whole table for its id and version probes. Appends are all this
                # connection runs, and every one of them is an index probe.
                await conn.execute("SET enable_seqscan = off")
            except Exception as exc:
                await pool.release(conn)
                raise _translate(exc, "connect") from exc
            self._writer = conn
        try:
            rows: list[Any] = await conn.fetch(sql, *params)
            return rows
        except _CONNECTION_ERRORS as exc:
            await self._drop_writer()
            raise StoreUnavailableError(
                f"PostgreSQL connection lost during {what}: {exc}. The outcome is unknown; "
                "retrying with the same events is safe (appends are idempotent by event id)"
            ) from exc
        except asyncpg.exceptions.UniqueViolationError as exc:
            if sql in _FIRST_TRIES:
                return []  # raced by a concurrent append: the append function decides
            # Otherwise only reachable for an id stored under a tenant this connection cannot
            # see (RLS hides it from the function's idempotency check).
            raise DuplicateEventError(_first_id(exc, _ids(sql, params))) from exc
        except asyncpg.exceptions.DataError as exc:
            if sql in _FIRST_TRIES:
                return []  # the append function raises it again, with its usual message
            if isinstance(exc, asyncpg.exceptions.UntranslatableCharacterError):
                raise ValidationError(
                    "an event cannot be stored",
                    [FieldError("data", str(exc), "remove NUL (\\u0000) characters")],
                ) from exc
            raise _translate(exc, what) from exc
        except EventplaneError:
            raise
        except Exception as exc:
            raise _translate(exc, what) from exc
        except asyncio.CancelledError:
            await self._drop_writer()  # mid-statement: the connection's state is unknown
            raise

    async def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and self._pool is not None:
            with contextlib.suppress(Exception):
                writer.terminate()
                await self._pool.release(writer)

    async def _events_by_id(self, ids: list[UUID]) -> list[Event]:
        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await _fetch(
                conn, f"SELECT {_COLUMNS} FROM eventplane_events WHERE id = ANY($1::uuid[])", ids
            )

        return build_events(await self._read("read", op), _row_event)

    # -- reads ----------------------------------------------------------------------------

    async def read_stream(
        self, tenant: str, kind: str, name: str, *, from_version: int = 0
    ) -> list[Event]:
        check_read_scope(self.tenant, tenant)

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await _fetch(
                conn,
                f"SELECT {_COLUMNS} FROM eventplane_events "
                "WHERE tenant = $1 AND kind = $2 AND name = $3 AND stream_version > $4 "
                "ORDER BY stream_version",
                tenant,
                kind,
                name,
                from_version,
            )

        return build_events(await self._read("read_stream", op), _row_event)

    async def read_all(
        self, *, after: int = 0, limit: int = 1000, filter: EventFilter | None = None
    ) -> list[Event]:
        flt = scoped_filter(self.tenant, filter)
        where = ['"position" > $1']
        params: list[Any] = [after]

        def add(column: str, values: tuple[str, ...]) -> None:
            if values:
                params.append(list(values))
                where.append(f"{column} = ANY(${len(params)}::text[])")

        if flt.tenant is not None:
            params.append(flt.tenant)
            where.append(f"tenant = ${len(params)}")
        add("kind", flt.kinds)
        add("name", flt.names)
        add("category", tuple(c.value for c in flt.categories))
        add("type", flt.types)
        add("actor", flt.actors)
        params.append(limit)
        sql = (
            f"SELECT {_COLUMNS} FROM eventplane_events WHERE {' AND '.join(where)} "
            f'ORDER BY "position" LIMIT ${len(params)}'
        )

        async def op(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await _fetch(conn, sql, *params)

        return build_events(await self._read("read_all", op), _row_event)

    async def last_position(self) -> int:
        async def op(conn: asyncpg.Connection) -> int:
            if self.tenant is None:
                value = await conn.fetchval('SELECT max("position") FROM eventplane_events')
            else:
                value = await conn.fetchval(
                    'SELECT max("position") FROM eventplane_events WHERE tenant = $1',
                    self.tenant,
                )
            return int(value or 0)

        return await self._read("last_position", op)

    async def get_event(self, event_id: object) -> Event | None:
        try:
            uid = event_id if isinstance(event_id, UUID) else UUID(str(event_id))
        except ValueError as exc:
            raise ValidationError(
                "bad event id", [FieldError("event_id", f"{event_id!r} is not a UUID")]
            ) from exc
        sql = f"SELECT {_COLUMNS} FROM eventplane_events WHERE id = $1"
        params: list[Any] = [uid]
        if self.tenant is not None:
            sql += " AND tenant = $2"
            params.append(self.tenant)

        async def op(conn: asyncpg.Connection) -> asyncpg.Record | None:
            return await conn.fetchrow(sql, *params)

        row = await self._read("get_event", op)
        return _row_event(row) if row is not None else None

    # -- followers ------------------------------------------------------------------------

    def _ring(self, *_: object) -> None:
        self._doorbell.set()

    def _on_listener_lost(self, *_: object) -> None:
        self._doorbell.set()  # wake the waiter: it re-reads, and the next wait re-listens

    async def _ensure_listener(self) -> bool:
        """Listen if not listening; True when a connection was (re)opened just now."""
        if self._listener is not None and not self._listener.is_closed():
            return False
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.terminate()
            self._listener = None
        conn = await asyncpg.connect(self.dsn, timeout=self._connect_timeout)
        await conn.add_listener(NOTIFY_CHANNEL, self._ring)
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        return True

    async def wait_for_append(self, timeout: float) -> bool:  # noqa: ASYNC109 (the port's signature)
        if self._doorbell.is_set():
            self._doorbell.clear()
            return True
        try:
            reconnected = await self._ensure_listener()
        except Exception:
            # Without a listener we can only poll: let the caller re-read after the timeout.
            await asyncio.sleep(timeout)
            return False
        if reconnected and self._listened_before:
            return True  # appends during the outage went unheard: report a possible miss
        self._listened_before = True
        try:
            await asyncio.wait_for(self._doorbell.wait(), timeout)
        except TimeoutError:
            return False
        self._doorbell.clear()
        return True

    async def load_checkpoint(self, name: str) -> int:
        async def op(conn: asyncpg.Connection) -> int:
            value = await conn.fetchval(
                'SELECT "position" FROM eventplane_checkpoints WHERE name = $1', name
            )
            return int(value or 0)

        return await self._read("load_checkpoint", op)

    async def save_checkpoint(self, name: str, position: int) -> None:
        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(
                'INSERT INTO eventplane_checkpoints (name, "position", updated_at) '
                "VALUES ($1, $2, clock_timestamp()) ON CONFLICT (name) DO UPDATE "
                'SET "position" = excluded."position", updated_at = excluded.updated_at',
                name,
                position,
            )

        await self._write("save_checkpoint", op)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        async def op(conn: asyncpg.Connection) -> bool:
            # The database clock decides expiry, so processes on different hosts agree.
            owner = await conn.fetchval(
                "INSERT INTO eventplane_leases (name, holder, expires_at) "
                "VALUES ($1, $2, clock_timestamp() + $3::interval) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                "WHERE eventplane_leases.holder = excluded.holder "
                "OR eventplane_leases.expires_at <= clock_timestamp() "
                "RETURNING holder",
                name,
                holder,
                timedelta(seconds=ttl),
            )
            return bool(owner == holder)

        return await self._write("acquire_lease", op)

    async def release_lease(self, name: str, holder: str) -> None:
        async def op(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DELETE FROM eventplane_leases WHERE name = $1 AND holder = $2", name, holder
            )

        await self._write("release_lease", op)

    async def close(self) -> None:
        self._closed = True
        if self._sending:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._writer_idle.wait(), 5)
        flusher = self._flusher
        if flusher is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(flusher), 5)
            if not flusher.done():
                flusher.cancel()
                with contextlib.suppress(BaseException):
                    await flusher
        writer, self._writer = self._writer, None
        if writer is not None and self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(writer)
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except Exception:
                pool.terminate()


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[Any]:
    rows: list[Any] = await conn.fetch(sql, *args)
    return rows


def _query(sql: str, args: Sequence[Any]) -> Callable[[asyncpg.Connection], Awaitable[list[Any]]]:
    async def op(conn: asyncpg.Connection) -> list[Any]:
        return await _fetch(conn, sql, *args)

    return op


_MAX_APPENDS_PER_STATEMENT = 1000  # 13 parameters each; PostgreSQL allows 32767


def _append_many_sql(count: int) -> str:
    """``eventplane_append`` ``count`` times in one statement, rows tagged with the call's
    index and ordered by (call, stream version) — asyncpg caches one statement per count."""
    calls = " UNION ALL ".join(
        f"SELECT {i} AS call, outcome, out_id, out_stream_version, out_position, "
        f"out_recorded_at FROM eventplane_append("
        + ", ".join(f"${i * 13 + k}" for k in range(1, 14))
        + ")"
        for i in range(count)
    )
    return f"{calls} ORDER BY 1, 4"


_APPEND_MANY_SQL = (
    "SELECT call, outcome, out_id, out_stream_version, out_position, out_recorded_at "
    "FROM eventplane_append_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)


def _independent(chunk: Sequence[_Pending]) -> bool:
    """True when no two appends share a stream or an event id: then one set-based
    ``eventplane_append_many`` call decides each exactly as sequential calls would."""
    streams = {p.args[:3] for p in chunk}
    if len(streams) != len(chunk):
        return False
    count = sum(len(p.args[4]) for p in chunk)
    return len({i for p in chunk for i in p.args[4]}) == count


def _append_many_args(chunk: Sequence[_Pending]) -> tuple[Any, ...]:
    """``eventplane_append_many``'s parameters: per-call columns, then per-event columns."""
    calls: list[int] = []
    columns: list[list[Any]] = [[] for _ in range(9)]
    for index, pending in enumerate(chunk):
        args = pending.args
        calls.extend([index] * len(args[4]))
        for column, values in zip(columns, args[4:], strict=True):
            column.extend(values)
    return (
        [p.args[0] for p in chunk],
        [p.args[1] for p in chunk],
        [p.args[2] for p in chunk],
        [p.args[3] for p in chunk],
        calls,
        *columns,
    )


def _append_args(batch: Sequence[EventValues], expected: int) -> tuple[Any, ...]:
    """``eventplane_append``'s parameters: the batch as column arrays."""
    first = batch[0].event
    evs = [v.event for v in batch]
    metas = [e.metadata for e in evs]
    return (
        first.tenant,
        first.kind,
        first.name,
        expected,
        [e.id for e in evs],
        [e.type for e in evs],
        [e.category.value for e in evs],
        [m.actor for m in metas],
        [m.correlation_id for m in metas],
        [m.causation_id for m in metas],
        [m.generation for m in metas],
        [m.occurred_at for m in metas],
        [_jsonb_exact(v.body) for v in batch],
    )


# jsonb keeps a number as numeric, which forgets how it was written: a float that orjson
# writes with an exponent (``1e+17``, from 1e16 up, where repr switches to one) is read
# back as the integer ``100000000000000000`` — for orjson an int up to 64 bits, past them
# a float again. So an event would not read back equal, and an honest retry of it would be
# refused as a DuplicateEventError. Those floats are written positionally with ``.0``
# instead: numeric then keeps a scale and prints it, and the value reads back a float.
# The scan is a substring test, then a regex pass, both in C; only a body that matches is
# decoded and re-encoded.
_EXPONENT_FLOAT = re.compile(rb"[0-9]e\+1[6-9](?![0-9])")


def _jsonb_exact(body: bytes) -> bytes:
    """``body`` as jsonb will give it back exactly (see _EXPONENT_FLOAT)."""
    if b"e+1" not in body or _EXPONENT_FLOAT.search(body) is None:  # memchr first: ~4x less
        return body
    return orjson.dumps(_positional_floats(orjson.loads(body)))


def _positional_floats(value: Any) -> Any:
    if isinstance(value, float):
        # Every float from 1e16 up is integral (2**53 < 1e16), so %d loses nothing.
        return orjson.Fragment(b"%d.0" % value) if 1e16 <= abs(value) < 1e20 else value
    if isinstance(value, dict):
        return {key: _positional_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_positional_floats(item) for item in value]
    return value


def _batch_doc(args: tuple[Any, ...]) -> bytes | None:
    """The batch in ``eventplane_append``'s parameters as the first try's JSON document:
    one array per event, in eventplane_append's column order, bodies embedded as encoded.
    None when orjson cannot write a value (a generation past 64 bits) or the
    document is too large: eventplane_append then takes the batch as typed arrays."""
    try:
        doc = orjson.dumps(
            [(*row[:8], orjson.Fragment(row[8])) for row in zip(*args[4:], strict=True)],
            option=orjson.OPT_NAIVE_UTC,
        )
    except orjson.JSONEncodeError:
        return None
    return doc if len(doc) <= _BATCH_DOC_MAX_BYTES else None


def _recorded(rows: Sequence[Any], evs: list[Event]) -> list[Event]:
    """The appended events as recorded, from an outcome-0 answer: a row per event
    (eventplane_append_many, sqls/0001) or one row for the batch (sqls/0004) carrying the
    first event's version and position, the others consecutive after it."""
    if len(rows) == len(evs):
        return [
            e.recorded(stream_version=r[2], position=r[3], recorded_at=r[4])
            for e, r in zip(evs, rows, strict=True)
        ]
    version, position, recorded_at = rows[0][2], rows[0][3], rows[0][4]
    return [
        e.recorded(stream_version=version + i, position=position + i, recorded_at=recorded_at)
        for i, e in enumerate(evs)
    ]


def _first_id(exc: BaseException, ids: Sequence[UUID]) -> object:
    detail = getattr(exc, "detail", "") or ""
    for event_id in ids:
        if str(event_id) in detail:
            return event_id
    return ids[0]


def _ids(sql: str, params: Sequence[Any]) -> list[UUID]:
    """The event ids in an append statement's parameters: ``eventplane_append_many``'s
    sixth column, else column 5 of every 13 (a UUID itself for ``eventplane_append_one``,
    an array of them for ``eventplane_append``)."""
    if sql is _APPEND_MANY_SQL:
        return list(params[5])
    ids: list[UUID] = []
    for k in range(4, len(params), 13):
        ids.extend([params[k]] if isinstance(params[k], UUID) else params[k])
    return ids


@dataclass(slots=True)
class _Pending:
    """One append waiting for the group commit."""

    events: list[Event]
    args: tuple[Any, ...]
    future: asyncio.Future[list[Any]]


def _resolve(pending: _Pending, rows: list[Any]) -> None:
    if not pending.future.done():
        pending.future.set_result(rows)


def _fail(chunk: Sequence[_Pending], exc: BaseException) -> None:
    for pending in chunk:
        if not pending.future.done():
            pending.future.set_exception(exc)
