"""Test-wide fixtures.

Server fixtures live in ``tests/fixtures/`` (one module per server) and are loaded
as plugins here. A test that needs a server gets a real one — the configured
``EVENTPLANE_TEST_*_URL`` or a throwaway one started from a PyPI package — or fails;
nothing is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

pytest_plugins: list[str] = []


@pytest.fixture(autouse=True)
def _no_stray_asyncio_tasks() -> Iterator[None]:
    """Fail a test that leaves asyncio tasks running on its loop (kopf's hygiene rule)."""
    yield
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    pending = [t for t in asyncio.all_tasks(loop) if not t.done() and t is not asyncio.current_task()]
    assert not pending, f"unattended asyncio tasks: {pending!r}"
