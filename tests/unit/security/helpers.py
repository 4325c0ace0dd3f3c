"""Real intents for the security tests (EventFactory's job once it exists; built directly here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eventplane.event.model import Category, Event, EventMetadata
from eventplane.utils import uuid7

OCCURRED = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def intent(
    *,
    tenant: str = "acme",
    name: str = "acme-main",
    actor: str = "alice",
    spec: dict[str, Any] | None = None,
    category: Category = Category.INTENT,
    occurred_at: datetime = OCCURRED,
    labels: dict[str, str] | None = None,
) -> Event:
    return Event(
        id=uuid7(),
        tenant=tenant,
        kind="Organization",
        name=name,
        type="Organization.Requested",
        category=category,
        api_version="organization/v1",
        spec={"display_name": "Acme Inc.", "plan": "pro", "seats": 25} if spec is None else spec,
        metadata=EventMetadata(
            correlation_id=uuid7(),
            actor=actor,
            source="evtctl",
            labels=labels or {},
            occurred_at=occurred_at,
        ),
    )
