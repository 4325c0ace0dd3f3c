"""A separate writer process for the concurrent-writers test (run with ``python -m``).

Usage: ``python -m tests.integration.store.writer_process URL TENANT PREFIX COUNT``.
Appends COUNT single-event batches, alternating between a stream shared with the other
writers (``shared``) and one of its own (``PREFIX``), retrying on version conflicts as the
runtime does, and prints the ids it committed as one JSON list on stdout.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from eventplane.errors import ConcurrencyError
from eventplane.event.model import Category, Event, EventMetadata
from eventplane.store import EventStore, open_store
from eventplane.utils import json_dumps, uuid7


def _event(tenant: str, name: str, index: int) -> Event:
    return Event(
        id=uuid7(),
        tenant=tenant,
        kind="Organization",
        name=name,
        type="Organization.Counted",
        category=Category.FACT,
        api_version="organization/v1",
        data={"index": index},
        metadata=EventMetadata(
            correlation_id=uuid7(), actor="writer", source="test", occurred_at=datetime.now(UTC)
        ),
    )


async def append_retrying(store: EventStore, event: Event) -> Event:
    """Append at the stream's current version; on a conflict re-read and try again."""
    while True:
        version = len(await store.read_stream(event.tenant, event.kind, event.name))
        try:
            [stored] = await store.append([event], expected_version=version)
            return stored
        except ConcurrencyError:
            continue


async def main(url: str, tenant: str, prefix: str, count: int) -> None:
    committed = []
    async with open_store(url) as store:
        for i in range(count):
            name = "shared" if i % 2 == 0 else prefix
            stored = await append_retrying(store, _event(tenant, name, i))
            committed.append(str(stored.id))
    sys.stdout.buffer.write(json_dumps(committed) + b"\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
