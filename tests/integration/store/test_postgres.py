"""PostgreSQL-only guarantees: append-only at the SQL level, row-level security as the
application role, lost connections, migrations and the schema's agreement with tables.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from eventplane.errors import (
    ConcurrencyError,
    DuplicateEventError,
    StoreUnavailableError,
    ValidationError,
)
from eventplane.event.model import Event
from eventplane.projection.worker import create_read_model_engine
from eventplane.store import (
    ANY,
    NO_STREAM,
    EventFilter,
    EventStore,
    migrate,
    open_store,
    status,
)
from eventplane.store._common import prepare_batch
from eventplane.store.migrations import default_sqls_dir
from eventplane.store.postgres import _append_args
from eventplane.store.tables import store_tables
from tests.fixtures.postgres import migrated_database, with_database

from .conftest import EventMaker

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[EventStore]:
    async with open_store(postgres_url) as opened:
        yield opened


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the session's database (bypasses RLS, not triggers)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE eventplane_events SET type = 'Organization.Forged' WHERE tenant = $1",
        "DELETE FROM eventplane_events WHERE tenant = $1",
        "TRUNCATE eventplane_events",
    ],
)
async def test_update_delete_and_truncate_of_events_fail_even_for_a_superuser(
    pg_store: EventStore,
    admin: asyncpg.Connection,
    make_event: EventMaker,
    tenant: str,
    statement: str,
) -> None:
    [stored] = await pg_store.append([make_event()], expected_version=0)
    args = [tenant] if "$1" in statement else []
    with pytest.raises(asyncpg.PostgresError, match="append-only") as caught:
        await admin.execute(statement, *args)
    assert caught.value.sqlstate == "EP403"
    assert await pg_store.read_stream(tenant, "Organization", "acme") == [stored]


async def test_the_application_role_may_only_insert_and_select_events(
    pg_store: EventStore, admin: asyncpg.Connection, make_event: EventMaker, tenant: str
) -> None:
    await pg_store.append([make_event()], expected_version=0)
    for statement in (
        "UPDATE eventplane_events SET type = 'Organization.Forged'",
        "DELETE FROM eventplane_events",
        "TRUNCATE eventplane_events",
    ):
        async with admin.transaction():
            await admin.execute("SET LOCAL ROLE eventplane_app")
            await admin.execute("SELECT set_config('eventplane.tenant', $1, true)", tenant)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await admin.execute(statement)


async def test_row_level_security_confines_the_application_role_to_its_tenant(
    pg_store: EventStore, admin: asyncpg.Connection, make_event: EventMaker, tenant: str
) -> None:
    other = f"{tenant}-other"
    await pg_store.append([make_event()], expected_version=0)
    await pg_store.append([make_event(tenant=other)], expected_version=0)
    count_sql = "SELECT count(*) FROM eventplane_events WHERE tenant = ANY($1::text[])"
    both = [tenant, other]

    async def count_as(scope: str | None) -> int:
        async with admin.transaction():
            await admin.execute("SET LOCAL ROLE eventplane_app")
            if scope is not None:
                await admin.execute("SELECT set_config('eventplane.tenant', $1, true)", scope)
            return int(await admin.fetchval(count_sql, both))

    assert await count_as(tenant) == 1
    assert await count_as(other) == 1
    assert await count_as("*") == 2  # the system scope of workers
    assert await count_as(None) == 0  # no declared scope: nothing at all
    assert await admin.fetchval(count_sql, both) == 2  # superuser bypasses RLS

    # Writing another tenant's row through the append function is refused by the policy.
    async with admin.transaction():
        await admin.execute("SET LOCAL ROLE eventplane_app")
        await admin.execute("SELECT set_config('eventplane.tenant', $1, true)", tenant)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await admin.execute(
                "SELECT * FROM eventplane_append($1, 'Organization', 'x', -1, "
                "ARRAY[gen_random_uuid()], ARRAY['Organization.Requested'], ARRAY['intent'], "
                "ARRAY['mallory'], ARRAY[gen_random_uuid()], ARRAY[NULL::uuid], ARRAY[0::bigint], "
                "ARRAY[now()], ARRAY['{}'::jsonb])",
                other,
            )


@pytest.fixture
async def app_role_url(
    postgres_url: str, admin: asyncpg.Connection, tenant: str
) -> AsyncIterator[str]:
    """The database's URL as a login role that is a member of eventplane_app: what
    production connects as (row-level security applies; superusers bypass it)."""
    login = f"ep_{tenant.replace('-', '_')}"
    await admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE eventplane_app")
    try:
        await admin.execute(f"ALTER ROLE {login} SET role = 'eventplane_app'")
        yield postgres_url.replace("postgresql://postgres@", f"postgresql://{login}@")
    finally:
        await admin.execute(f"DROP OWNED BY {login}")
        await admin.execute(f"DROP ROLE {login}")


async def test_a_tenant_store_works_when_connected_as_the_application_role(
    app_role_url: str, make_event: EventMaker, tenant: str
) -> None:
    async with open_store(app_role_url, tenant=tenant) as scoped:
        [stored] = await scoped.append([make_event()], expected_version=0)
        assert await scoped.read_all() == [stored]
        await scoped.save_checkpoint(f"relay-{tenant}", 1)
        assert await scoped.acquire_lease(f"relay-{tenant}", "me", ttl=60)


async def test_an_id_stored_under_another_tenant_is_a_duplicate_alone_and_in_a_group_commit(
    app_role_url: str, pg_store: EventStore, make_event: EventMaker, tenant: str
) -> None:
    """Row-level security hides the other tenant's row from the idempotency probe, so only
    the primary key catches the id; the error must still name it and pin it to its caller."""
    [theirs] = await pg_store.append([make_event(tenant=f"{tenant}-other")], expected_version=0)
    async with open_store(app_role_url, tenant=tenant) as scoped:
        stolen = make_event("stolen", id=theirs.id)
        with pytest.raises(DuplicateEventError) as alone:
            await scoped.append([stolen], expected_version=0)
        assert alone.value.event_id == theirs.id
        # One append in flight, the next two queue and go out as one group statement.
        first, grouped, honest = await asyncio.gather(
            scoped.append([make_event("first")], expected_version=0),
            scoped.append([stolen], expected_version=0),
            scoped.append([make_event("honest")], expected_version=0),
            return_exceptions=True,
        )
        assert isinstance(grouped, DuplicateEventError)
        assert grouped.event_id == theirs.id
        assert isinstance(first, list)
        assert isinstance(honest, list)
        assert [e.name for e in await scoped.read_all()] == ["first", "honest"]


# A lone append of one event and one of several take different first-try statements.
batch_sizes = pytest.mark.parametrize("size", [1, 3], ids=["one event", "three events"])


@batch_sizes
async def test_a_nul_character_is_refused_as_a_validation_error(
    pg_store: EventStore, make_event: EventMaker, size: int
) -> None:
    events = [make_event() for _ in range(size - 1)] + [make_event(data={"bad": "a\u0000b"})]
    with pytest.raises(ValidationError, match="NUL"):
        await pg_store.append(events, expected_version=0)
    assert await pg_store.read_stream(*events[0].stream) == []


async def _backend_waiting_on_a_lock(admin: asyncpg.Connection, task: asyncio.Task[Any]) -> int:
    """The pid of the session of this database blocked on a lock (polls until there is one)."""
    while True:
        if task.done():
            raise AssertionError(f"expected {task!r} to block on a lock, but it finished")
        # Activity views are snapshotted per transaction: drop the snapshot to poll.
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() LIMIT 1"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)


async def test_a_read_survives_its_connection_being_terminated(
    pg_store: EventStore, admin: asyncpg.Connection, make_event: EventMaker, tenant: str
) -> None:
    [stored] = await pg_store.append([make_event()], expected_version=0)
    async with admin.transaction():
        # Park the read on a lock and kill its backend there. (The dying backend only
        # lets go of its socket once our lock is released, so the retry runs after this.)
        await admin.execute("LOCK TABLE eventplane_events IN ACCESS EXCLUSIVE MODE")
        read = asyncio.create_task(pg_store.read_stream(tenant, "Organization", "acme"))
        victim = await _backend_waiting_on_a_lock(admin, read)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
    assert await read == [stored]


async def test_an_append_whose_connection_is_terminated_raises_store_unavailable(
    pg_store: EventStore, admin: asyncpg.Connection, make_event: EventMaker
) -> None:
    event = make_event()
    async with admin.transaction():
        await admin.execute("SELECT 1 FROM eventplane_head WHERE id = 1 FOR UPDATE")
        append = asyncio.create_task(pg_store.append([event], expected_version=0))
        victim = await _backend_waiting_on_a_lock(admin, append)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
    with pytest.raises(StoreUnavailableError, match="retrying with the same events is safe"):
        await append
    # The advice holds: the retry is idempotent, and here it is the first real write.
    [stored] = await pg_store.append([event], expected_version=0)
    assert await pg_store.append([event], expected_version=0) == [stored]


async def test_migrate_is_idempotent_and_status_lists_applied_migrations(
    postgres_url: str,
) -> None:
    assert await migrate(postgres_url) == []
    states = await status(postgres_url)
    assert [(s.version, s.name, s.state) for s in states] == [
        (1, "event_store", "applied"),
        (2, "append_many", "applied"),
        (3, "append_many_generic_plan", "applied"),
        (4, "append_one_statement", "applied"),
        (5, "append_one_lock_by_update", "applied"),
    ]
    assert states[0].applied_at is not None


async def test_concurrent_migrations_on_a_fresh_database_apply_each_file_once(
    postgres_admin_url: str,
) -> None:

    name = f"eventplane_mig_{uuid.uuid4().hex[:10]}"
    root = await asyncpg.connect(postgres_admin_url)
    await root.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(postgres_admin_url, name)
        files = len(list(default_sqls_dir().glob("[0-9]*.sql")))
        results = await asyncio.gather(migrate(url), migrate(url), migrate(url))
        assert sorted(len(r) for r in results) == [0, 0, files]
        assert [s.state for s in await status(url)] == ["applied"] * files
    finally:
        await root.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await root.close()


async def test_the_migrated_schema_matches_the_sqlmodel_tables(
    admin: asyncpg.Connection,
) -> None:
    for table in store_tables():
        rows = await admin.fetch(
            "SELECT column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = $1",
            table.name,
        )
        actual = {r["column_name"]: r["is_nullable"] == "YES" for r in rows}
        expected = {c.name: bool(c.nullable) for c in table.columns}
        assert actual == expected, table.name


async def test_append_functions_never_keep_a_sequential_scan_plan(postgres_url: str) -> None:
    """PL/pgSQL caches plans per connection; one made on a nearly empty table must not
    keep scanning the whole table as it grows (sqls/0004)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            "SELECT proname, proconfig FROM pg_proc WHERE proname LIKE 'eventplane_append%'"
        )
    finally:
        await conn.close()
    settings = {row["proname"]: row["proconfig"] or [] for row in rows}
    assert set(settings) == {"eventplane_append", "eventplane_append_one", "eventplane_append_many"}
    assert all("enable_seqscan=off" in config for config in settings.values())


async def test_a_batch_is_recorded_with_consecutive_positions_and_versions(
    pg_store: EventStore, make_event: EventMaker
) -> None:
    [first] = await pg_store.append([make_event()], expected_version=0)
    batch = [make_event() for _ in range(5)]
    recorded = await pg_store.append(batch, expected_version=1)
    assert [e.metadata.stream_version for e in recorded] == [2, 3, 4, 5, 6]
    start = first.metadata.position
    assert start is not None
    assert [e.metadata.position for e in recorded] == list(range(start + 1, start + 6))
    assert len({e.metadata.recorded_at for e in recorded}) == 1
    assert recorded == await pg_store.read_stream(*batch[0].stream, from_version=1)


async def test_read_model_writers_commit_asynchronously_and_readers_do_not_change(
    postgres_url: str,
) -> None:
    """Read models are derived data: their writers skip waiting for the WAL flush (a crash
    only re-applies whole batches); the store's own connections keep synchronous commit."""
    for write, expected in ((True, "off"), (False, "on")):
        engine = create_read_model_engine(postgres_url, write=write)
        try:
            async with engine.connect() as conn:
                assert (await conn.scalar(text("SHOW synchronous_commit"))) == expected
        finally:
            await engine.dispose()


async def test_a_refused_lone_append_leaves_no_hole_in_the_positions(
    pg_store: EventStore, make_event: EventMaker
) -> None:
    """eventplane_append_one advances the head to take its lock and moves it back when the
    append is refused (sqls/0005): the next append gets the very next position."""
    [first] = await pg_store.append([make_event()], expected_version=0)
    with pytest.raises(ConcurrencyError):
        await pg_store.append([make_event()], expected_version=0)  # stale: the stream has 1
    assert await pg_store.append([first], expected_version=0) == [first]  # idempotent
    [second] = await pg_store.append([make_event()], expected_version=1)
    assert first.metadata.position is not None
    assert second.metadata.position == first.metadata.position + 1
    assert await pg_store.last_position() == second.metadata.position


async def _append_in_transaction(admin: asyncpg.Connection, events: list[Event]) -> None:
    """Append ``events`` from ``admin``'s open transaction (the head lock is held to COMMIT)."""
    batch = prepare_batch(events, store_tenant=None, max_event_bytes=1 << 20)
    args = _append_args(batch, -1)
    outcome = await admin.fetchval(
        "SELECT outcome FROM eventplane_append("
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text[]::jsonb[])",
        *args[:12],
        [v.body.decode() for v in batch],
    )
    assert outcome == 0


@batch_sizes
async def test_an_append_overtaken_while_it_waits_for_the_position_lock_goes_on_top(
    pg_store: EventStore, admin: asyncpg.Connection, make_event: EventMaker, size: int
) -> None:
    """The one-statement first try reads the stream before the lock is granted; the
    overtaking event takes its version, and the append is decided again on fresh data."""
    mine, theirs = [make_event() for _ in range(size)], make_event()
    async with admin.transaction():
        await _append_in_transaction(admin, [theirs])
        append = asyncio.create_task(pg_store.append(mine, expected_version=ANY))
        await _backend_waiting_on_a_lock(admin, append)
    recorded = await append
    assert [e.metadata.stream_version for e in recorded] == list(range(2, size + 2))
    stream = await pg_store.read_stream(*theirs.stream)
    assert [e.id for e in stream] == [theirs.id, *(e.id for e in mine)]
    assert await pg_store.last_position() == stream[-1].metadata.position


@batch_sizes
async def test_an_overtaken_append_with_a_now_stale_version_raises_conflict(
    pg_store: EventStore, admin: asyncpg.Connection, make_event: EventMaker, size: int
) -> None:
    mine, theirs = [make_event() for _ in range(size)], make_event()
    async with admin.transaction():
        await _append_in_transaction(admin, [theirs])
        append = asyncio.create_task(pg_store.append(mine, expected_version=NO_STREAM))
        await _backend_waiting_on_a_lock(admin, append)
    with pytest.raises(ConcurrencyError) as caught:
        await append
    assert caught.value.actual == 1
    assert [e.id for e in await pg_store.read_stream(*theirs.stream)] == [theirs.id]


@batch_sizes
async def test_an_append_overtaken_by_the_same_events_returns_the_stored_records(
    pg_store: EventStore, admin: asyncpg.Connection, make_event: EventMaker, size: int
) -> None:
    events = [make_event() for _ in range(size)]
    async with admin.transaction():
        await _append_in_transaction(admin, events)
        append = asyncio.create_task(pg_store.append(events, expected_version=NO_STREAM))
        await _backend_waiting_on_a_lock(admin, append)
    assert await append == await pg_store.read_stream(*events[0].stream)


async def test_appends_never_scan_the_events_table_even_when_planned_on_a_small_one(
    postgres_admin_url: str, make_event: EventMaker
) -> None:
    """The statements are prepared once per connection; planned while ANALYZE says the
    table is tiny, they must still probe the indexes (else each append reads it whole)."""
    async with migrated_database(postgres_admin_url, "eventplane_plan") as url:
        async with open_store(url) as early:
            for index in range(60):
                await early.append([make_event(f"early-{index}")], expected_version=NO_STREAM)
        admin = await asyncpg.connect(url)
        try:
            await admin.execute("ANALYZE eventplane_events")
            before = await _sequential_scans(admin)
            async with open_store(url) as store:
                for index in range(20):
                    await store.append([make_event(f"late-{index}")], expected_version=NO_STREAM)
                    batch = [make_event(f"late-batch-{index}") for _ in range(3)]
                    await store.append(batch, expected_version=NO_STREAM)
            assert await _sequential_scans(admin) == before
        finally:
            await admin.close()


async def test_reads_on_a_large_history_touch_only_the_rows_they_return(
    postgres_admin_url: str, make_event: EventMaker, tenant: str
) -> None:
    """20,000 events: the tenant's one stream first, then 199 streams of another tenant.
    Every read the store offers must be an index probe or an ordered index range that
    stops at its rows — none may wade through the other tenant's history."""
    other = f"{tenant}-other"
    async with migrated_database(postgres_admin_url, "eventplane_reads") as url:
        async with open_store(url) as store:
            mine = await store.append([make_event("mine") for _ in range(100)], expected_version=0)
            for index in range(199):
                batch = [make_event(f"s-{index}", tenant=other) for _ in range(100)]
                await store.append(batch, expected_version=NO_STREAM)
        admin = await asyncpg.connect(url)
        try:
            await admin.execute("ANALYZE eventplane_events")
            scans_before, rows_before = await _table_reads(admin)
            async with open_store(url) as system, open_store(url, tenant=tenant) as scoped:
                stream = await system.read_stream(tenant, "Organization", "mine", from_version=50)
                assert stream == mine[50:]
                assert len(await system.read_all(after=12_345, limit=100)) == 100
                assert await scoped.read_all(after=50, limit=100) == mine[50:]
                requested = EventFilter(types=("Organization.Requested",))
                assert await scoped.read_all(after=0, limit=10, filter=requested) == mine[:10]
                assert await system.last_position() == 20_000
                assert await scoped.last_position() == 100
                assert await scoped.get_event(mine[7].id) == mine[7]
            scans, rows = await _table_reads(admin)
            assert scans == scans_before
            # The reads return 271 rows; reading through the other tenant would be ~40,000.
            assert rows - rows_before < 1_000
        finally:
            await admin.close()


async def _table_reads(admin: asyncpg.Connection) -> tuple[int, int]:
    """(sequential scans, rows read by scans and index fetches) of the events table."""
    scans = await _sequential_scans(admin)
    rows = await admin.fetchval(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
        "WHERE relname = 'eventplane_events'"
    )
    return scans, int(rows)


async def _sequential_scans(admin: asyncpg.Connection) -> int:
    """Sequential scans of the events table so far, once every other session has ended
    (a backend flushes its statistics when it exits)."""
    for _ in range(100):
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        others = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if others == 0:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the store's sessions did not end")
    return int(
        await admin.fetchval(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'eventplane_events'"
        )
    )
