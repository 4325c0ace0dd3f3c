"""A minimal async SQLite connection: one worker thread, one hop per transaction.

Lives in ``eventplane.store`` because only this package may touch SQL drivers. Its
caller is the embedded SQL bus (``eventplane.bus.embedded``), which keeps its messages
and consumer state in the store's database file and must not import a driver itself.

Why not one ``await`` per statement (aiosqlite's shape): a bus fetch or publish runs
several statements inside one ``BEGIN IMMEDIATE`` transaction, and each thread hop
costs more than the statement. ``run(fn)`` ships the whole transaction body to the
connection's thread instead, so the write lock is held for the shortest possible time
— which is what lets several processes share the file.

Driver errors never leave this module: "database is locked/busy" and unopenable files
become ``StoreUnavailableError`` (retry later), anything else ``StoreError``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from eventplane.errors import StoreError, StoreUnavailableError

__all__ = ["SqliteConnection", "SqliteTx"]

T = TypeVar("T")
Params = Sequence[Any]


class SqliteTx:
    """The statements available inside ``SqliteConnection.run`` (runs in the worker thread)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        return self._conn.executemany(sql, rows).rowcount

    def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        return row

    def executescript(self, sql: str) -> None:
        self._conn.executescript(sql)


def _translate(exc: sqlite3.Error, path: str) -> StoreError | StoreUnavailableError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and (
        "locked" in text or "busy" in text or "unable to open" in text
    ):
        return StoreUnavailableError(f"SQLite database {path}: {text}; retry later")
    return StoreError(f"SQLite database {path}: {text}")


class SqliteConnection:
    """One SQLite connection owned by one worker thread; calls are serialized."""

    def __init__(self, path: str, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout: float = 30.0) -> Self:
        """Open (creating the file and its directory) in WAL mode.

        ``busy_timeout`` is how long a writer waits for another process's write lock
        before giving up with StoreUnavailableError.
        """
        path_str = str(path)
        if path_str != ":memory:":
            Path(path_str).parent.mkdir(parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventplane-sqlite")

        def connect() -> sqlite3.Connection:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so the Python
            # module never opens an implicit transaction behind our back.
            conn = sqlite3.connect(path_str, timeout=busy_timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            return conn

        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, connect)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise _translate(exc, path_str) from exc
        return cls(path_str, executor, conn)

    async def run(self, fn: Callable[[SqliteTx], T], *, write: bool = True) -> T:
        """Run ``fn(tx)`` in one transaction in the worker thread and return its result.

        ``write=True`` takes the write lock up front (``BEGIN IMMEDIATE``) so a
        read-then-write body cannot fail half way with SQLITE_BUSY. An exception from
        ``fn`` rolls back and propagates (driver errors translated).
        """
        if self._closed:
            raise StoreUnavailableError(f"SQLite database {self.path}: connection is closed")
        conn = self._conn

        def body() -> T:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(SqliteTx(conn))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, body)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    async def script(self, sql: str) -> None:
        """Run a DDL script outside any explicit transaction (schema setup)."""
        conn = self._conn
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, conn.executescript, sql)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=True)
