"""The ``organizations`` projection: one row per live Organization, per tenant.

Read model of the Organization kind (``evtctl get Organization``), kept current by a
``ProjectionWorker`` and rebuilt by ``evtctl projections rebuild organizations``. Every
column comes from the Organization stream's events, times from their ``occurred_at``, so a
rebuild reproduces the table row for row:

    Organization.Requested          (intent)   creates the row / takes the desired spec,
                                               generation and labels
    Organization.DeletionRequested  (intent)   deletion_requested_at
    any event carrying ``status``   (StatusUpdated)  phase, observed generation, conditions
    Organization.Provisioned / Updated / PlanChanged (facts)  seats (the quota provisioned)
    Organization.Deleted            (fact)     removes the row

Desired fields (display name, plan, owners) come from the stored intent's spec — the same
spec the controller reconciled; ``seats`` is what the controller announced it provisioned,
so it stays empty while, e.g., the seat limit blocks provisioning.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Column, DateTime, Table, Text, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from eventplane.event.model import Category, Event
from eventplane.projection.base import Projection, ProjectionWatch
from eventplane.utils import format_time

__all__ = ["OrganizationRow", "OrganizationsProjection"]

_KIND = "Organization"
_SEAT_FACTS = ("Provisioned", "Updated", "PlanChanged")


class OrganizationRow(SQLModel, table=True):
    """One Organization as the read model shows it."""

    __tablename__ = "projection_organizations"

    tenant: str = Field(sa_column=Column(Text(), primary_key=True, nullable=False))
    name: str = Field(sa_column=Column(Text(), primary_key=True, nullable=False))
    api_version: str = Field(sa_column=Column(Text(), nullable=False))
    display_name: str = Field(sa_column=Column(Text(), nullable=False))
    plan: str = Field(sa_column=Column(Text(), nullable=False))
    owners: list[str] = Field(sa_column=Column(JSON(), nullable=False))
    billing_account: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    labels: dict[str, str] = Field(sa_column=Column(JSON(), nullable=False))
    seats: int | None = Field(default=None, sa_column=Column(BigInteger(), nullable=True))
    generation: int = Field(sa_column=Column(BigInteger(), nullable=False))
    observed_generation: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False))
    phase: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    ready_status: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    ready_reason: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    ready_message: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    # Every condition, JSON-ready (type, status, reason, message, observedGeneration,
    # lastTransitionTime), in the order the status lists them.
    conditions: list[dict[str, Any]] = Field(sa_column=Column(JSON(), nullable=False))
    deletion_requested_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    stream_version: int = Field(sa_column=Column(BigInteger(), nullable=False))
    position: int = Field(sa_column=Column(BigInteger(), nullable=False))


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands DateTime columns back naive; they were written in UTC.
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _time(value: datetime | None) -> str | None:
    stamp = _utc(value)
    return format_time(stamp) if stamp is not None else None


class OrganizationsProjection(Projection):
    """Maintains ``projection_organizations``."""

    NAME: ClassVar[str] = "organizations"
    WATCH: ClassVar[ProjectionWatch] = ProjectionWatch(kinds=(_KIND,), categories=())
    TABLES: ClassVar[tuple[type[SQLModel], ...]] = (OrganizationRow,)
    SERVES: ClassVar[str | None] = _KIND
    TABLE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "name",
        "display_name",
        "plan",
        "seats",
        "owners",
        "ready",
        "reason",
        "generation",
        "age",
    )

    async def apply(self, event: Event, session: AsyncSession) -> None:
        await self.apply_batch([event], session)

    async def apply_batch(self, events: Sequence[Event], session: AsyncSession) -> None:
        # One SELECT for every row the batch touches, the changes made to plain dicts, then
        # one DELETE and one multi-row upsert: three statements per batch whatever its size.
        # (ORM objects cost ~10% of a busy worker's CPU in benchmarks/e2e.py: identity map,
        # attribute instrumentation and unit-of-work flush for rows written once per batch.)
        table = _TABLE
        keys = sorted({(e.tenant, e.name) for e in events})
        rows: dict[tuple[str, str], dict[str, Any] | None] = dict.fromkeys(keys)
        query = select(table).where(tuple_(table.c.tenant, table.c.name).in_(keys))
        for found in (await session.execute(query)).mappings():
            rows[(found["tenant"], found["name"])] = dict(found)
        existed = {key for key, row in rows.items() if row is not None}
        changed: set[tuple[str, str]] = set()
        for event in events:
            if _apply_one(event, rows):
                changed.add((event.tenant, event.name))
        gone = [key for key in changed if rows[key] is None and key in existed]
        if gone:
            await session.execute(
                delete(table).where(tuple_(table.c.tenant, table.c.name).in_(sorted(gone)))
            )
        upserts = [row for key in sorted(changed) if (row := rows[key]) is not None]
        if upserts:
            await session.execute(_upsert(session, table), upserts)

    # -- reading --------------------------------------------------------------------------

    async def objects(
        self, session: AsyncSession, *, tenant: str, name: str | None = None
    ) -> list[dict[str, Any]]:
        query = select(OrganizationRow).where(OrganizationRow.tenant == tenant)  # type: ignore[arg-type]
        if name is not None:
            query = query.where(OrganizationRow.name == name)  # type: ignore[arg-type]
        query = query.order_by(OrganizationRow.name)
        rows = (await session.execute(query)).scalars().all()
        return [self.to_object(row) for row in rows]

    @staticmethod
    def to_object(row: OrganizationRow) -> dict[str, Any]:
        """The Kubernetes-like object for one row."""
        metadata: dict[str, Any] = {
            "name": row.name,
            "tenant": row.tenant,
            "generation": row.generation,
            "labels": dict(row.labels),
            "creationTimestamp": _time(row.created_at),
            "updateTimestamp": _time(row.updated_at),
            "resourceVersion": str(row.stream_version),
        }
        if row.deletion_requested_at is not None:
            metadata["deletionTimestamp"] = _time(row.deletion_requested_at)
        spec: dict[str, Any] = {
            "display_name": row.display_name,
            "plan": row.plan,
            "owners": list(row.owners),
        }
        if row.billing_account is not None:
            spec["billing_account"] = row.billing_account
        return {
            "apiVersion": row.api_version,
            "kind": _KIND,
            "metadata": metadata,
            "spec": spec,
            "status": {
                "observedGeneration": row.observed_generation,
                "phase": row.phase,
                "seats": row.seats,
                "conditions": [dict(c) for c in row.conditions],
            },
        }

    def table_row(self, obj: dict[str, Any]) -> dict[str, Any]:
        metadata, spec, status = obj["metadata"], obj["spec"], obj["status"]
        ready = next((c for c in status["conditions"] if c["type"] == "Ready"), None)
        return {
            "name": metadata["name"],
            "display_name": spec["display_name"],
            "plan": spec["plan"],
            "seats": status["seats"],
            "owners": len(spec["owners"]),
            "ready": ready["status"] if ready else "Unknown",
            "reason": ready["reason"] if ready else "",
            "generation": f"{status['observedGeneration']}/{metadata['generation']}",
            "age": metadata["creationTimestamp"],
        }


_TABLE: Table = OrganizationRow.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(column.name for column in _TABLE.columns)
_KEY = ("tenant", "name")


def _upsert(session: AsyncSession, table: Table) -> Any:
    """INSERT … ON CONFLICT (tenant, name) DO UPDATE every column, in the session's dialect.
    Built once per dialect: constructing it (21 ``excluded`` column proxies) cost more than
    the worker's own Python work per batch."""
    dialect = session.get_bind().dialect.name
    statement = _UPSERTS.get(dialect)
    if statement is None:
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        base = insert(table)
        statement = _UPSERTS[dialect] = base.on_conflict_do_update(
            index_elements=[table.c.tenant, table.c.name],
            set_={name: base.excluded[name] for name in _COLUMNS if name not in _KEY},
        )
    return statement


_UPSERTS: dict[str, Any] = {}


def _new_row(event: Event) -> dict[str, Any]:
    meta = event.metadata
    return {
        "tenant": event.tenant,
        "name": event.name,
        "api_version": event.api_version,
        "display_name": "",
        "plan": "",
        "owners": [],
        "billing_account": None,
        "labels": {},
        "seats": None,
        "generation": 0,
        "observed_generation": 0,
        "phase": None,
        "ready_status": None,
        "ready_reason": None,
        "ready_message": None,
        "conditions": [],
        "deletion_requested_at": None,
        "created_at": meta.occurred_at,
        "updated_at": meta.occurred_at,
        "stream_version": meta.stream_version,
        "position": meta.position,
    }


def _apply_one(event: Event, rows: dict[tuple[str, str], dict[str, Any] | None]) -> bool:
    """Apply one event to the batch's rows (None: no row); True if it changed them."""
    meta = event.metadata
    assert meta.position is not None
    assert meta.stream_version is not None
    key = (event.tenant, event.name)
    row = rows.get(key)
    reason = event.reason

    if event.category is Category.FACT and reason == "Deleted":
        rows[key] = None
        return row is not None

    if event.category is Category.INTENT and reason == "Requested":
        spec = event.spec or {}
        if row is None:
            row = rows[key] = _new_row(event)
        row["api_version"] = event.api_version
        row["display_name"] = str(spec.get("display_name", ""))
        row["plan"] = str(spec.get("plan", ""))
        row["owners"] = [str(o) for o in spec.get("owners") or []]  # type: ignore[union-attr]
        account = spec.get("billing_account")
        row["billing_account"] = str(account) if account is not None else None
        row["labels"] = dict(meta.labels)
        row["generation"] = max(meta.generation, row["generation"])

    if row is None:
        return False  # e.g. IntentRejected for a resource that never existed

    if (
        event.category is Category.INTENT
        and reason == "DeletionRequested"
        and row["deletion_requested_at"] is None
    ):
        row["deletion_requested_at"] = event.deletion_requested_at or meta.occurred_at
    if event.category is Category.FACT and reason in _SEAT_FACTS:
        seats = event.data.get("seats")
        if isinstance(seats, int):
            row["seats"] = seats
    if event.status is not None:
        status = event.status
        row["phase"] = status.phase
        row["observed_generation"] = status.observed_generation
        ready = status.condition("Ready")
        row["ready_status"] = ready.status.value if ready is not None else None
        row["ready_reason"] = ready.reason if ready is not None else None
        row["ready_message"] = ready.message if ready is not None else None
        row["conditions"] = [
            {
                "type": c.type,
                "status": c.status.value,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": c.observed_generation,
                "lastTransitionTime": format_time(c.last_transition_time),
            }
            for c in status.conditions
        ]
    row["updated_at"] = meta.occurred_at
    row["stream_version"] = meta.stream_version
    row["position"] = meta.position
    return True
