"""``open_store(url)``: the one constructor callers use to get an EventStore.

Part of ``eventplane.store``; called by the CLI, the runtime, workers, tests and
benchmarks. Picks the backend from the URL scheme (see ``url.py``). The store connects
lazily on first use, so this is a plain function usable in ``async with``::

    async with open_store("sqlite:///.eventplane/eventplane.db", tenant="acme") as store:
        await store.append([...], expected_version=NO_STREAM)
"""

from __future__ import annotations

from eventplane.errors import ConfigError
from eventplane.store._common import DEFAULT_MAX_EVENT_BYTES
from eventplane.store.base import EventStore
from eventplane.store.postgres import PostgresEventStore
from eventplane.store.sqlite import SqliteEventStore
from eventplane.store.url import parse_store_url
from eventplane.utils import is_dns_label

__all__ = ["open_store"]


def open_store(
    url: str,
    *,
    tenant: str | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    migrate: bool = False,
    max_pool_size: int = 10,
) -> EventStore:
    """An EventStore for ``url``.

    ``tenant``: confine the store to one tenant (reads and appends of any other tenant
    raise AuthorizationError); ``None`` is the system scope used by the runtime, relay and
    projection workers. ``max_event_bytes``: the per-event size limit (CloudEvents wire
    size; default 1 MiB, NATS' default max_payload). ``migrate``: on PostgreSQL, apply
    pending ``sqls/`` migrations on first connect (SQLite always creates its schema).
    """
    if tenant is not None and not is_dns_label(tenant):
        raise ConfigError(
            f"tenant {tenant!r} is not a DNS-1123 label; use lowercase letters, digits and '-'"
        )
    if max_event_bytes <= 0:
        raise ConfigError(f"max_event_bytes must be positive, got {max_event_bytes}")
    target = parse_store_url(url)
    if target.backend == "sqlite":
        return SqliteEventStore(target.path, tenant=tenant, max_event_bytes=max_event_bytes)
    return PostgresEventStore(
        target.dsn,
        tenant=tenant,
        max_event_bytes=max_event_bytes,
        max_pool_size=max_pool_size,
        auto_migrate=migrate,
    )
