"""A competing consumer in its own process, for the embedded bus's multi-process test.

Run as ``python -m tests.integration.bus.embedded_worker DB DURABLE FILTER``: subscribes,
prints ``ready``, waits for a line on stdin, then fetches and acks until the bus stays
empty for a second, and prints the event ids it processed as one JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys

from eventplane.bus import ConsumerConfig
from eventplane.bus.embedded import EmbeddedBus


async def main(db: str, durable: str, filter_subject: str) -> None:
    bus = await EmbeddedBus.open(db)
    try:
        sub = await bus.subscribe(
            ConsumerConfig(durable=durable, filter_subject=filter_subject, ack_wait=30)
        )
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        seen: list[str] = []
        while True:
            batch = await sub.fetch(batch=5, timeout=1.0)
            if not batch:
                break
            for delivery in batch:
                await delivery.ack()
                seen.append(str(delivery.event.id))
            await asyncio.sleep(0.01)  # some "work", so the other worker gets a turn
        await sub.close()
    finally:
        await bus.close()
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
