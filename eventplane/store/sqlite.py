"""SQLite EventStore (aiosqlite): the embedded default, ``.eventplane/eventplane.db``.

Part of ``eventplane.store``; built by ``open_store("sqlite:///…")``. The embedded SQL bus
(``eventplane.bus``) lives in the same database file and reuses ``connect_sqlite`` so both
open the file the same way (WAL, busy timeout).

Design points:

- **Several processes on one file.** WAL lets readers run beside one writer; every write
  transaction starts with ``BEGIN IMMEDIATE`` so it takes the file's write lock up front
  (no lock upgrades, no SQLITE_BUSY mid-transaction), and ``busy_timeout`` makes a second
  writer wait its turn instead of failing.
- **Global order without skips.** Positions are ``max(position) + 1`` computed inside that
  write transaction, so only one transaction assigns positions at a time and it commits
  before the next can start: positions become visible strictly in order.
- **Two connections per store.** One writer (transactions guarded by an asyncio lock, as a
  connection has one transaction at a time) and one reader in autocommit mode: every
  SELECT sees only committed data, never the writer's open transaction.
- **Schema on first use** from ``tables.py`` (``PRAGMA user_version`` records it).
- Encoding matches SQLAlchemy's SQLite types (see ``tables.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import aiosqlite
import orjson

from eventplane.errors import (
    ConcurrencyError,
    EventplaneError,
    FieldError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from eventplane.event.model import Event, stream_id
from eventplane.store._common import (
    DEFAULT_MAX_EVENT_BYTES,
    build_events,
    check_read_scope,
    check_stored_batch,
    event_from_row,
    expected_as_int,
    prepare_batch,
    scoped_filter,
)
from eventplane.store.base import EventFilter, EventStore, ExpectedVersion
from eventplane.store.tables import sqlite_schema
from eventplane.utils import utcnow

__all__ = ["SCHEMA_VERSION", "SqliteEventStore", "connect_sqlite", "ensure_sqlite_schema"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")

_POLL_INTERVAL = 0.05  # how often wait_for_append looks for other processes' commits

_COLUMNS = (
    "id, tenant, kind, name, stream_version, position, type, category, actor, "
    "correlation_id, causation_id, generation, occurred_at, recorded_at, body"
)
_INSERT = (
    "INSERT INTO eventplane_events (id, tenant, kind, name, stream_version, position, type, "
    "category, actor, correlation_id, causation_id, generation, occurred_at, recorded_at, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _time(value: datetime) -> str:
    # SQLAlchemy's SQLite DateTime storage format, in UTC.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _row_event(row: Any) -> Event:
    causation = row[10]
    return event_from_row(
        (
            UUID(hex=row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
            UUID(hex=row[9]), UUID(hex=causation) if causation is not None else None,
            row[11], _parse(row[12]), _parse(row[13]), None,
        ),
        orjson.loads(row[14]),
    )  # fmt: skip


async def connect_sqlite(path: str | Path) -> aiosqlite.Connection:
    """Open ``path`` the way every Eventplane component must: autocommit (callers issue
    ``BEGIN IMMEDIATE`` for writes), WAL, a long busy timeout, NORMAL sync (durable across
    process crashes; WAL keeps the file consistent on power loss). Creates parent dirs."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = await aiosqlite.connect(str(target), isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot open SQLite database {target}: {exc}") from exc
    try:
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        await conn.close()
        raise StoreUnavailableError(f"cannot configure SQLite database {target}: {exc}") from exc
    return conn


async def ensure_sqlite_schema(conn: aiosqlite.Connection) -> int:
    """Create the store's tables if missing; returns the schema version. Safe to race."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        rows = list(await conn.execute_fetchall("PRAGMA user_version"))
        version = int(rows[0][0])
        if version < SCHEMA_VERSION:
            for statement in sqlite_schema():
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        await conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    return version


async def _to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` so that cancelling the caller cannot interrupt it half-way.

    aiosqlite executes each statement on its own thread; cancelling the awaiting task
    does not stop the statement. A cancellation landing between ``BEGIN IMMEDIATE`` and
    ``COMMIT``/``ROLLBACK`` would leave the shared writer inside an open transaction (every
    later write then fails), and one landing inside ``connect`` would leak the connection's
    thread. So transactions and connects always run to their end; the caller's
    cancellation is re-raised once they have.
    """
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


def _translate(exc: BaseException, what: str) -> EventplaneError:
    if isinstance(exc, EventplaneError):
        return exc
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StoreUnavailableError(
            f"SQLite database stayed locked by another process for {BUSY_TIMEOUT_MS} ms "
            f"during {what}; retry, or check for a stuck process holding a write transaction"
        )
    return StoreError(f"{what} failed: {type(exc).__name__}: {exc}")


class SqliteEventStore(EventStore):
    """EventStore on one SQLite file. Construct through ``open_store``; connects lazily."""

    def __init__(
        self,
        path: str | Path,
        *,
        tenant: str | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.path = Path(path)
        self.tenant = tenant
        self.max_event_bytes = max_event_bytes
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._doorbell = asyncio.Event()
        self._data_version: int | None = None
        self._closed = False

    async def connect(self) -> None:
        """Open both connections and create the schema if needed (done lazily otherwise)."""
        await self._connections()

    async def _connections(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        if self._writer is not None and self._reader is not None:
            return self._writer, self._reader
        if self._closed:
            raise StoreError("the event store is closed; open a new one")
        async with self._connect_lock:
            if self._writer is None or self._reader is None:
                await _to_completion(self._open_connections())
        assert self._writer is not None
        assert self._reader is not None
        return self._writer, self._reader

    async def _open_connections(self) -> None:
        # Assigns the connections itself: a caller cancelled meanwhile must not drop them.
        writer = await connect_sqlite(self.path)
        try:
            await ensure_sqlite_schema(writer)
            reader = await connect_sqlite(self.path)
        except BaseException as exc:
            await writer.close()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, "schema creation") from exc
            raise
        self._writer, self._reader = writer, reader

    async def _fetch(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        _, reader = await self._connections()
        try:
            return list(await reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
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
        first = batch[0].event
        evs = [v.event for v in batch]
        writer, _ = await self._connections()

        async def transaction() -> list[Event] | int:
            async with self._write_lock:
                try:
                    await writer.execute("BEGIN IMMEDIATE")
                    try:
                        return await self._append_locked(writer, batch, evs, first, expected)
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            await writer.execute("ROLLBACK")
                        raise
                except sqlite3.Error as exc:
                    raise _translate(exc, "append") from exc

        result = await _to_completion(transaction())
        if isinstance(result, int):
            raise ConcurrencyError(
                stream_id(first.tenant, first.kind, first.name), expected_version, result
            )
        self._doorbell.set()
        return result

    async def _append_locked(
        self,
        conn: aiosqlite.Connection,
        batch: Sequence[Any],
        evs: list[Event],
        first: Event,
        expected: int,
    ) -> list[Event] | int:
        """Inside BEGIN IMMEDIATE. Returns the recorded events, or the actual version on a
        conflict (after rolling back). Commits on success."""
        marks = ", ".join("?" * len(evs))
        stored_rows = list(
            await conn.execute_fetchall(
                f"SELECT {_COLUMNS} FROM eventplane_events WHERE id IN ({marks})",
                [e.id.hex for e in evs],
            )
        )
        if stored_rows:
            await conn.execute("ROLLBACK")
            stored = {e.id: e for e in map(_row_event, stored_rows)}
            return check_stored_batch(evs, stored, all_stored=len(stored) == len(evs))
        rows = list(
            await conn.execute_fetchall(
                "SELECT coalesce(max(stream_version), 0) FROM eventplane_events "
                "WHERE tenant = ? AND kind = ? AND name = ?",
                (first.tenant, first.kind, first.name),
            )
        )
        current = int(rows[0][0])
        if expected >= 0 and expected != current:
            await conn.execute("ROLLBACK")
            return current
        head_rows = list(
            await conn.execute_fetchall("SELECT coalesce(max(position), 0) FROM eventplane_events")
        )
        head = int(head_rows[0][0])
        now = utcnow()
        now_text = _time(now)
        params = []
        for offset, value in enumerate(batch, start=1):
            e = value.event
            m = e.metadata
            params.append(
                (
                    e.id.hex,
                    e.tenant,
                    e.kind,
                    e.name,
                    current + offset,
                    head + offset,
                    e.type,
                    e.category.value,
                    m.actor,
                    m.correlation_id.hex,
                    m.causation_id.hex if m.causation_id is not None else None,
                    m.generation,
                    _time(m.occurred_at),
                    now_text,
                    value.body.decode(),
                )
            )
        await conn.executemany(_INSERT, params)
        await conn.execute("COMMIT")
        return [
            e.recorded(stream_version=current + i, position=head + i, recorded_at=now)
            for i, e in enumerate(evs, start=1)
        ]

    # -- reads ----------------------------------------------------------------------------

    async def read_stream(
        self, tenant: str, kind: str, name: str, *, from_version: int = 0
    ) -> list[Event]:
        check_read_scope(self.tenant, tenant)
        rows = await self._fetch(
            "read_stream",
            f"SELECT {_COLUMNS} FROM eventplane_events WHERE tenant = ? AND kind = ? "
            "AND name = ? AND stream_version > ? ORDER BY stream_version",
            (tenant, kind, name, from_version),
        )
        return build_events(rows, _row_event)

    async def read_all(
        self, *, after: int = 0, limit: int = 1000, filter: EventFilter | None = None
    ) -> list[Event]:
        flt = scoped_filter(self.tenant, filter)
        where = ["position > ?"]
        params: list[Any] = [after]

        def add(column: str, values: Sequence[str]) -> None:
            if values:
                where.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)

        if flt.tenant is not None:
            where.append("tenant = ?")
            params.append(flt.tenant)
        add("kind", flt.kinds)
        add("name", flt.names)
        add("category", [c.value for c in flt.categories])
        add("type", flt.types)
        add("actor", flt.actors)
        params.append(limit)
        rows = await self._fetch(
            "read_all",
            f"SELECT {_COLUMNS} FROM eventplane_events WHERE {' AND '.join(where)} "
            "ORDER BY position LIMIT ?",
            params,
        )
        return build_events(rows, _row_event)

    async def last_position(self) -> int:
        if self.tenant is None:
            rows = await self._fetch("last_position", "SELECT max(position) FROM eventplane_events")
        else:
            rows = await self._fetch(
                "last_position",
                "SELECT max(position) FROM eventplane_events WHERE tenant = ?",
                (self.tenant,),
            )
        return int(rows[0][0] or 0)

    async def get_event(self, event_id: object) -> Event | None:
        try:
            uid = event_id if isinstance(event_id, UUID) else UUID(str(event_id))
        except ValueError as exc:
            raise ValidationError(
                "bad event id", [FieldError("event_id", f"{event_id!r} is not a UUID")]
            ) from exc
        sql = f"SELECT {_COLUMNS} FROM eventplane_events WHERE id = ?"
        params: list[Any] = [uid.hex]
        if self.tenant is not None:
            sql += " AND tenant = ?"
            params.append(self.tenant)
        rows = await self._fetch("get_event", sql, params)
        return _row_event(rows[0]) if rows else None

    # -- followers ------------------------------------------------------------------------

    async def _current_data_version(self) -> int:
        rows = await self._fetch("wait_for_append", "PRAGMA data_version")
        return int(rows[0][0])

    async def wait_for_append(self, timeout: float) -> bool:  # noqa: ASYNC109 (the port's signature)
        # In-process appends ring the doorbell; other processes' commits show up as a
        # change of the reader connection's PRAGMA data_version, which is polled.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._data_version is None:
            self._data_version = await self._current_data_version()
        while True:
            if self._doorbell.is_set():
                self._doorbell.clear()
                self._data_version = await self._current_data_version()
                return True
            version = await self._current_data_version()
            if version != self._data_version:
                self._data_version = version
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._doorbell.wait(), min(_POLL_INTERVAL, remaining))

    async def load_checkpoint(self, name: str) -> int:
        rows = await self._fetch(
            "load_checkpoint", "SELECT position FROM eventplane_checkpoints WHERE name = ?", (name,)
        )
        return int(rows[0][0]) if rows else 0

    async def _write_one(self, what: str, sql: str, params: Sequence[Any]) -> int:
        """One write statement in its own IMMEDIATE transaction; returns rows changed."""
        writer, _ = await self._connections()

        async def transaction() -> int:
            async with self._write_lock:
                try:
                    await writer.execute("BEGIN IMMEDIATE")
                    try:
                        cursor = await writer.execute(sql, params)
                        changed = cursor.rowcount
                        await cursor.close()
                        await writer.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            await writer.execute("ROLLBACK")
                        raise
                except sqlite3.Error as exc:
                    raise _translate(exc, what) from exc
            return changed

        return await _to_completion(transaction())

    async def save_checkpoint(self, name: str, position: int) -> None:
        await self._write_one(
            "save_checkpoint",
            "INSERT INTO eventplane_checkpoints (name, position, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
            "updated_at = excluded.updated_at",
            (name, position, _time(utcnow())),
        )

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        # One machine shares the file, so the local clock is the common clock.
        now = utcnow()
        changed = await self._write_one(
            "acquire_lease",
            "INSERT INTO eventplane_leases (name, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "expires_at = excluded.expires_at "
            "WHERE eventplane_leases.holder = excluded.holder "
            "OR eventplane_leases.expires_at <= ?",
            (name, holder, _time(now + timedelta(seconds=ttl)), _time(now)),
        )
        return changed > 0

    async def release_lease(self, name: str, holder: str) -> None:
        await self._write_one(
            "release_lease",
            "DELETE FROM eventplane_leases WHERE name = ? AND holder = ?",
            (name, holder),
        )

    async def close(self) -> None:
        self._closed = True
        for attr in ("_reader", "_writer"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
