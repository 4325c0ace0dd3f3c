"""SQLModel definitions of the event store's tables: the source of truth for their shape.

Part of ``eventplane.store``. The SQLite backend creates its schema from these models
(``sqlite_schema()``); the PostgreSQL schema lives in ``sqls/0001_event_store.sql``
(it adds what SQLAlchemy does not model: the append function, triggers, RLS, grants),
and a contract test checks that the two agree column by column. Projection code that
opens SQLAlchemy sessions on the same database may import these models to query events
read-only; the hot paths in ``sqlite.py``/``postgres.py`` talk to the drivers directly.

Column encoding on SQLite follows SQLAlchemy's own conventions (``Uuid`` as 32 hex
digits, ``DateTime`` as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, JSON as text), so rows
written by the store read back correctly through these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import Field, SQLModel

__all__ = [
    "CheckpointRow",
    "EventRow",
    "HeadRow",
    "LeaseRow",
    "sqlite_schema",
    "store_tables",
]

_BODY_TYPE = JSON().with_variant(postgresql.JSONB(), "postgresql")


class EventRow(SQLModel, table=True):
    """One stored event: key columns for indexes and filters, the rest in ``body``.

    ``body`` holds ``api_version, source, labels, signature, spec, data, status,
    finalizers, deletion_requested_at`` (times as RFC 3339 strings).
    """

    __tablename__ = "eventplane_events"
    __table_args__ = (
        UniqueConstraint("position", name="eventplane_events_position_key"),
        UniqueConstraint(
            "tenant", "kind", "name", "stream_version", name="eventplane_events_stream_key"
        ),
        CheckConstraint("stream_version >= 1", name="eventplane_events_stream_version_check"),
        CheckConstraint("position >= 1", name="eventplane_events_position_check"),
        CheckConstraint(
            "category IN ('intent', 'internal', 'fact')", name="eventplane_events_category_check"
        ),
        Index("eventplane_events_tenant_position_idx", "tenant", "position"),
    )

    id: UUID = Field(sa_column=Column(Uuid(), primary_key=True, nullable=False))
    position: int = Field(sa_column=Column(BigInteger(), nullable=False))
    tenant: str = Field(sa_column=Column(Text(), nullable=False))
    kind: str = Field(sa_column=Column(Text(), nullable=False))
    name: str = Field(sa_column=Column(Text(), nullable=False))
    stream_version: int = Field(sa_column=Column(BigInteger(), nullable=False))
    type: str = Field(sa_column=Column(Text(), nullable=False))
    category: str = Field(sa_column=Column(Text(), nullable=False))
    actor: str = Field(sa_column=Column(Text(), nullable=False))
    correlation_id: UUID = Field(sa_column=Column(Uuid(), nullable=False))
    causation_id: UUID | None = Field(default=None, sa_column=Column(Uuid(), nullable=True))
    generation: int = Field(sa_column=Column(BigInteger(), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    body: dict[str, Any] = Field(sa_column=Column(_BODY_TYPE, nullable=False))


class HeadRow(SQLModel, table=True):
    """PostgreSQL only: the single row whose lock serializes position assignment."""

    __tablename__ = "eventplane_head"
    __table_args__ = (CheckConstraint("id = 1", name="eventplane_head_singleton"),)

    id: int = Field(sa_column=Column(SmallInteger(), primary_key=True, nullable=False))
    position: int = Field(sa_column=Column(BigInteger(), nullable=False))


class CheckpointRow(SQLModel, table=True):
    """How far a named follower (relay, …) got in the global order."""

    __tablename__ = "eventplane_checkpoints"

    name: str = Field(sa_column=Column(Text(), primary_key=True, nullable=False))
    position: int = Field(sa_column=Column(BigInteger(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class LeaseRow(SQLModel, table=True):
    """A named, expiring lease (one active relay per store)."""

    __tablename__ = "eventplane_leases"

    name: str = Field(sa_column=Column(Text(), primary_key=True, nullable=False))
    holder: str = Field(sa_column=Column(Text(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


def store_tables() -> tuple[Table, ...]:
    """The store's tables (for ``metadata.create_all(tables=...)`` or comparisons)."""
    tables: list[Table] = []
    for model in (EventRow, HeadRow, CheckpointRow, LeaseRow):
        table = getattr(model, "__table__")  # noqa: B009 (set by SQLModel's metaclass)
        assert isinstance(table, Table)
        tables.append(table)
    return tuple(tables)


# SQLite keeps the append-only guarantee too (no roles there, so triggers are the wall).
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER IF NOT EXISTS eventplane_events_no_update
    BEFORE UPDATE ON eventplane_events
    BEGIN SELECT RAISE(ABORT, 'eventplane_events is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER IF NOT EXISTS eventplane_events_no_delete
    BEFORE DELETE ON eventplane_events
    BEGIN SELECT RAISE(ABORT, 'eventplane_events is append-only: DELETE is not allowed'); END""",
)


def sqlite_schema() -> list[str]:
    """DDL statements creating the SQLite schema from the models (idempotent)."""
    dialect = sqlite.dialect()
    statements: list[str] = []
    for table in store_tables():
        if table.name == "eventplane_head":
            continue  # SQLite serializes writers itself (BEGIN IMMEDIATE)
        ddl = str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip()
        statements.append(ddl)
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(
                str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)).strip()
            )
    statements.extend(_SQLITE_TRIGGERS)
    return statements
