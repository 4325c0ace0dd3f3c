"""Unit-test fixtures: every test gets a freshly discovered default registry (kopf's
pattern), so a test that registers a kind cannot leak it into the next one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventplane.registry import Registry, set_default_registry


@pytest.fixture(autouse=True)
def registry() -> Iterator[Registry]:
    fresh = Registry().discover()
    set_default_registry(fresh)
    yield fresh
    set_default_registry(None)
