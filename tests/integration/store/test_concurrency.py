"""Concurrent writers never make a follower miss, repeat or reorder an event.

The follower loops ``read_all(after=last_seen)`` while 8 in-process writers (and, in the
second test, 2 more writer processes) append to one shared stream and to streams of their
own. Whatever interleaving happens, the follower must end with exactly the committed
events, each once, in position order — the same sequence a full read returns afterwards.
A store whose positions became visible out of order would make the follower step past a
lower position that commits later, and the final comparison would catch it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from uuid import UUID

from eventplane.event.model import Event
from eventplane.store import EventFilter, EventStore, open_store
from eventplane.utils import json_loads

from .conftest import EventMaker
from .writer_process import append_retrying

_REPO = Path(__file__).resolve().parents[3]
_TASKS = 8
_PER_TASK = 24
_PER_PROCESS = 20


async def _writer(url: str, index: int, make_event: EventMaker) -> list[UUID]:
    committed: list[UUID] = []
    async with open_store(url) as own:
        version = 0
        for i in range(_PER_TASK // 3):
            if index % 2 == 0:
                # Overlapping: everyone fights over one stream, retrying on conflicts.
                for _ in range(3):
                    stored = await append_retrying(own, make_event("shared", data={"i": i}))
                    committed.append(stored.id)
            else:
                # Disjoint: a stream of its own, 3 events per batch.
                batch = [make_event(f"own-{index}", data={"i": i}) for _ in range(3)]
                stored_batch = await own.append(batch, expected_version=version)
                version += 3
                committed += [e.id for e in stored_batch]
    return committed


async def _follow(
    store: EventStore, tenant: str, start: int, writers_done: asyncio.Event
) -> list[Event]:
    seen: list[Event] = []
    after = start
    flt = EventFilter(tenant=tenant)
    while True:
        finished = writers_done.is_set()  # read the flag BEFORE reading the store
        batch = await store.read_all(after=after, limit=7, filter=flt)
        if batch:
            seen += batch
            after = batch[-1].metadata.position or after
        elif finished:
            return seen
        else:
            await store.wait_for_append(0.05)


def _check(seen: list[Event], committed: list[UUID], full: list[Event]) -> None:
    positions = [e.metadata.position or 0 for e in seen]
    assert positions == sorted(set(positions)), "follower saw positions repeated or out of order"
    assert [e.id for e in seen] == [e.id for e in full], "follower skipped or invented events"
    assert sorted(e.id for e in seen) == sorted(committed)
    by_stream: dict[str, list[int]] = {}
    for event in full:
        by_stream.setdefault(event.name, []).append(event.metadata.stream_version or 0)
    for versions in by_stream.values():
        assert versions == list(range(1, len(versions) + 1))


async def test_eight_concurrent_writers_and_a_follower_see_every_event_once_in_order(
    store_url: str, store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    start = await store.last_position()
    done = asyncio.Event()
    follower = asyncio.create_task(_follow(store, tenant, start, done))
    try:
        results = await asyncio.gather(*(_writer(store_url, i, make_event) for i in range(_TASKS)))
    finally:
        done.set()
    seen = await follower

    committed = [event_id for ids in results for event_id in ids]
    assert len(committed) == _TASKS * _PER_TASK
    full = await store.read_all(after=start, limit=10_000, filter=EventFilter(tenant=tenant))
    _check(seen, committed, full)


async def test_writer_processes_and_tasks_together_never_make_the_follower_skip(
    store_url: str, store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    start = await store.last_position()
    done = asyncio.Event()
    follower = asyncio.create_task(_follow(store, tenant, start, done))
    try:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.integration.store.writer_process",
                store_url,
                tenant,
                f"proc-{n}",
                str(_PER_PROCESS),
                cwd=_REPO,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for n in range(2)
        ]
        in_process = asyncio.gather(*(_writer(store_url, i, make_event) for i in range(_TASKS)))
        outputs = [await p.communicate() for p in procs]
        results = await in_process
    finally:
        done.set()
    seen = await follower

    committed = [event_id for ids in results for event_id in ids]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        committed += [UUID(i) for i in json_loads(out)]
    assert len(committed) == _TASKS * _PER_TASK + 2 * _PER_PROCESS
    full = await store.read_all(after=start, limit=10_000, filter=EventFilter(tenant=tenant))
    _check(seen, committed, full)
