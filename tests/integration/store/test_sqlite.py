"""SQLite-only behaviour: append-only triggers, URL paths, schema on first use."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from eventplane.errors import ConfigError
from eventplane.store import EventStore, SqliteEventStore, migrate, open_store, status

from .conftest import EventMaker


async def test_update_and_delete_of_events_fail_on_sqlite(
    tmp_path: Path, make_event: EventMaker
) -> None:
    path = tmp_path / "ep.db"
    async with open_store(f"sqlite:///{path}") as store:
        await store.append([make_event()], expected_version=0)
    with sqlite3.connect(path) as conn:
        for statement in (
            "UPDATE eventplane_events SET type = 'x'",
            "DELETE FROM eventplane_events",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM eventplane_events").fetchone() == (1,)


async def test_a_relative_sqlite_url_is_relative_to_the_working_directory_and_creates_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_event: EventMaker
) -> None:
    monkeypatch.chdir(tmp_path)
    store: EventStore = open_store("sqlite:///.eventplane/nested/eventplane.db")
    assert isinstance(store, SqliteEventStore)
    async with store:
        await store.append([make_event()], expected_version=0)
    assert (tmp_path / ".eventplane" / "nested" / "eventplane.db").is_file()


async def test_migrate_and_status_report_the_embedded_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ep.db"
    assert [s.state for s in await status(url)] == ["pending"]
    assert [s.state for s in await migrate(url)] == ["applied"]
    assert await migrate(url) == []
    assert [s.state for s in await status(url)] == ["applied"]


@pytest.mark.parametrize(
    "url",
    ["mysql://u:secret@h/db", "sqlite://relative.db", "sqlite:///:memory:", "", "nonsense"],
)
def test_open_store_refuses_an_unsupported_url_with_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert "secret" not in str(caught.value)


def test_open_store_refuses_a_tenant_that_is_not_a_dns_label() -> None:
    with pytest.raises(ConfigError, match="DNS-1123"):
        open_store("sqlite:///x.db", tenant="Not A Tenant")


async def test_cancelled_appends_never_leave_the_writer_inside_a_transaction(
    tmp_path: Path, make_event: EventMaker
) -> None:
    """aiosqlite statements finish on their thread even when the awaiting task is cancelled;
    the store must still end every transaction, so later writes keep working."""
    async with open_store(f"sqlite:///{tmp_path}/ep.db") as store:
        for round_ in range(20):
            task = asyncio.create_task(
                store.append([make_event(f"org-{round_}")], expected_version=0)
            )
            for _ in range(round_ % 4):  # cancel at a different await point each time
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        recorded = await store.append([make_event("after")], expected_version=0)
        assert recorded[0].metadata.stream_version == 1
        stored = await store.read_all(limit=100)
        assert {e.name for e in stored} <= {f"org-{i}" for i in range(20)} | {"after"}
        assert [e.metadata.position for e in stored] == sorted(
            e.metadata.position for e in stored if e.metadata.position is not None
        )


async def test_a_store_cancelled_while_connecting_can_connect_again(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/ep.db")
    task = asyncio.create_task(store.last_position())
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await store.last_position() == 0
    await store.close()
