"""Test-wide fixtures.

Server fixtures live in ``tests/fixtures/`` (one module per server) and are loaded
as plugins here. A test that needs a server gets a real one — the configured
``EVENTPLANE_TEST_*_URL`` or a throwaway one started from a PyPI package — or fails;
nothing is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

pytest_plugins: list[str] = ["tests.fixtures.nats", "tests.fixtures.postgres"]


@pytest_asyncio.fixture(autouse=True)
async def _no_stray_asyncio_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running on its loop (kopf's hygiene rule)."""
    yield
    await asyncio.sleep(0)  # let tasks that are already finishing finish
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in pending:
        task.cancel()
    assert not pending, f"unattended asyncio tasks left by the test: {pending!r}"
