"""The event store: append-only, gap-safe, idempotent — SQLite (embedded) and PostgreSQL.

Callers (controller runtime, relay, projection workers, CLI) use ``open_store(url)`` and
the ``EventStore`` interface only; the backends, tables and migrations are importable for
tooling, tests and benchmarks. See ARCHITECTURE.md "Event store".
"""

from eventplane.store.base import (
    ANY,
    NO_STREAM,
    EventFilter,
    EventStore,
    ExpectedVersion,
    StreamState,
)
from eventplane.store.factory import open_store
from eventplane.store.migrations import MigrationStatus, migrate, status
from eventplane.store.postgres import PostgresEventStore
from eventplane.store.sqlite import SqliteEventStore, connect_sqlite
from eventplane.store.url import DEFAULT_SQLITE_URL, StoreURL, parse_store_url, sqlalchemy_url

__all__ = [
    "ANY",
    "DEFAULT_SQLITE_URL",
    "NO_STREAM",
    "EventFilter",
    "EventStore",
    "ExpectedVersion",
    "MigrationStatus",
    "PostgresEventStore",
    "SqliteEventStore",
    "StoreURL",
    "StreamState",
    "connect_sqlite",
    "migrate",
    "open_store",
    "parse_store_url",
    "sqlalchemy_url",
    "status",
]
