"""Schema migrations: apply the numbered ``sqls/NNNN_name.sql`` files, idempotently.

Part of ``eventplane.store``. Called by ``evtctl db migrate`` / ``evtctl db status``
(thin wrappers), by ``open_store(url, migrate=True)`` and by the test fixtures.

PostgreSQL: every pending file runs in its own transaction and is recorded in
``eventplane_migrations`` (version, name, sha256, applied_at) in that same transaction,
all under a session advisory lock so concurrent ``migrate`` calls (several workers
starting at once) apply each file exactly once. An applied file whose content changed
since is reported as ``modified`` by ``status`` and never re-run.

SQLite: the schema is created from ``tables.py`` on first use (``PRAGMA user_version``);
``migrate`` just does that now and ``status`` reports it as one entry.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiosqlite
import asyncpg

from eventplane.errors import ConfigError, EventplaneError, StoreError, StoreUnavailableError
from eventplane.store.url import StoreURL, parse_store_url

__all__ = [
    "Migration",
    "MigrationStatus",
    "default_sqls_dir",
    "load_migrations",
    "migrate",
    "status",
]

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Arbitrary constant shared by every Eventplane migrator ("evpl" in ASCII).
_ADVISORY_LOCK_KEY = 0x6576706C
_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS eventplane_migrations (
    version     integer     NOT NULL PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One line of ``evtctl db status``: ``state`` is applied, pending or modified."""

    version: int
    name: str
    state: str
    applied_at: datetime | None = None


def default_sqls_dir() -> Path:
    """``EVENTPLANE_SQLS_DIR`` if set, else the repository's ``sqls/``."""
    override = os.environ.get("EVENTPLANE_SQLS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "sqls"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The numbered migrations in ``directory``, in order (gaps and duplicates refused)."""
    folder = directory or default_sqls_dir()
    if not folder.is_dir():
        raise ConfigError(
            f"migrations directory {folder} not found; set EVENTPLANE_SQLS_DIR to the sqls/ folder"
        )
    found: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ConfigError(f"{path.name}: migration files must be named NNNN_lowercase_name.sql")
        found.append(Migration(int(match[1]), match[2], path, path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ConfigError(
                f"{migration.path.name}: expected migration number {expected:04d}; "
                "migrations are numbered 0001, 0002, … without gaps"
            )
    return found


async def _user_version(conn: aiosqlite.Connection) -> int:
    rows = list(await conn.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def _pg_connect(target: StoreURL) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(target.dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise StoreUnavailableError(f"cannot connect to {target.redacted}: {exc}") from exc


async def migrate(url: str, *, directory: Path | None = None) -> list[MigrationStatus]:
    """Apply pending migrations; returns the ones applied now (empty when up to date)."""
    target = parse_store_url(url)
    if target.backend == "sqlite":
        from eventplane.store.sqlite import connect_sqlite, ensure_sqlite_schema

        conn = await connect_sqlite(target.path)
        try:
            before = await _user_version(conn)
            after = await ensure_sqlite_schema(conn)
        finally:
            await conn.close()
        return [MigrationStatus(after, "embedded_schema", "applied")] if after != before else []

    migrations = load_migrations(directory)
    conn = await _pg_connect(target)
    applied_now: list[MigrationStatus] = []
    current = "bootstrap"
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        try:
            await conn.execute(_BOOTSTRAP)
            done = {
                r["version"] for r in await conn.fetch("SELECT version FROM eventplane_migrations")
            }
            for migration in migrations:
                if migration.version in done:
                    continue
                current = migration.path.name
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    at = await conn.fetchval(
                        "INSERT INTO eventplane_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3) RETURNING applied_at",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(
                    MigrationStatus(migration.version, migration.name, "applied", at)
                )
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    except EventplaneError:
        raise
    except (OSError, asyncpg.exceptions.PostgresConnectionError) as exc:
        raise StoreUnavailableError(f"lost {target.redacted} while migrating: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migration {current} failed and was rolled back: {exc}") from exc
    finally:
        await conn.close()
    return applied_now


async def status(url: str, *, directory: Path | None = None) -> list[MigrationStatus]:
    """Every known migration with its state (applied / pending / modified)."""
    target = parse_store_url(url)
    if target.backend == "sqlite":
        from eventplane.store.sqlite import SCHEMA_VERSION

        version = 0
        if target.path.exists():
            async with aiosqlite.connect(str(target.path)) as conn:
                version = await _user_version(conn)
        state = "applied" if version >= SCHEMA_VERSION else "pending"
        return [MigrationStatus(SCHEMA_VERSION, "embedded_schema", state)]

    migrations = load_migrations(directory)
    conn = await _pg_connect(target)
    try:
        exists = await conn.fetchval("SELECT to_regclass('eventplane_migrations') IS NOT NULL")
        rows = (
            await conn.fetch("SELECT version, checksum, applied_at FROM eventplane_migrations")
            if exists
            else []
        )
    except asyncpg.PostgresError as exc:
        raise StoreError(f"cannot read migration status: {exc}") from exc
    finally:
        await conn.close()
    recorded = {r["version"]: r for r in rows}
    result: list[MigrationStatus] = []
    for migration in migrations:
        row = recorded.get(migration.version)
        if row is None:
            result.append(MigrationStatus(migration.version, migration.name, "pending"))
        else:
            state = "applied" if row["checksum"] == migration.checksum else "modified"
            result.append(
                MigrationStatus(migration.version, migration.name, state, row["applied_at"])
            )
    return result
