"""Harness for the runtime's multi-process tests on a real PostgreSQL and nats-server.

Each test gets its own tenant: its subjects (``eventplane.<tenant>.…``), its durable
consumers (``eventplane-runtime-<tenant>-…``) and its rows are its own on shared servers;
teardown deletes the durables and purges the subjects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventplane.bus import open_bus
from eventplane.bus.nats import STREAM_NAME, NatsBus
from eventplane.event import Event
from eventplane.store import EventFilter, EventStore, open_store
from eventplane.utils import uuid7

ROOT = Path(__file__).resolve().parents[3]


class RuntimeProcesses:
    """Starts ``runtime_process`` children and stops (or kills) them."""

    def __init__(self, store_url: str, nats_url: str, tenant: str, logs: Path) -> None:
        self.store_url = store_url
        self.nats_url = nats_url
        self.tenant = tenant
        self.logs = logs
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, **options: object) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "tests.integration.runtime.runtime_process",
            "--store",
            self.store_url,
            "--bus",
            self.nats_url,
            "--tenant",
            self.tenant,
        ]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        with (self.logs / f"runtime-{len(self.children)}.log").open("wb") as log:
            child = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.children.append(child)
        return child

    def kill(self, child: subprocess.Popen[bytes]) -> None:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)

    def stop(self, child: subprocess.Popen[bytes]) -> int:
        """SIGTERM, then the exit code; a child that does not exit in 30 s fails the test."""
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
            raise AssertionError(
                f"runtime process ignored SIGTERM for 30 s:\n{self.log_text()}"
            ) from None

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.glob("*.log"))
        )

    def cleanup(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)


@pytest.fixture
def tenant() -> str:
    return f"rt{uuid7().hex[-12:]}"


@pytest.fixture
def processes(
    postgres_url: str, nats_url: str, tenant: str, tmp_path: Path
) -> Iterator[RuntimeProcesses]:
    procs = RuntimeProcesses(postgres_url, nats_url, tenant, tmp_path)
    try:
        yield procs
    finally:
        procs.cleanup()


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[EventStore]:
    async with open_store(postgres_url) as store:
        yield store


@pytest.fixture
async def nats_bus(nats_url: str, tenant: str) -> AsyncIterator[NatsBus]:
    bus = await open_bus(nats_url)
    assert isinstance(bus, NatsBus)
    try:
        yield bus
    finally:
        await bus.delete_consumer(f"eventplane-runtime-{tenant}-intents")
        await bus.jetstream.purge_stream(STREAM_NAME, subject=f"eventplane.{tenant}.>")
        await bus.close()


async def count_by_name(store: EventStore, tenant: str, event_type: str) -> Counter[str]:
    events = await store.read_all(
        limit=1_000_000, filter=EventFilter(tenant=tenant, types=(event_type,))
    )
    return Counter(e.name for e in events)


async def tenant_events(store: EventStore, tenant: str) -> list[Event]:
    return await store.read_all(limit=1_000_000, filter=EventFilter(tenant=tenant))


def environment_note() -> str:
    return f"pid {os.getpid()}"
