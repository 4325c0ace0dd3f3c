"""The event bus: one async interface, three backends behind a URL, and the relay.

Callers (the controller runtime, projection workers, the CLI) use ``open_bus(url)``
and the ``Bus`` / ``Subscription`` / ``Delivery`` interface from ``base``; the relay
(``Relay``) moves stored internal and fact events from the store onto the bus.

    nats://host:4222 (or tls://…, comma-separated for a cluster) -> NatsBus (JetStream)
    sqlite:///relative/path.db, sqlite:////absolute/path.db      -> EmbeddedBus
    memory://                                                    -> InMemoryBus (tests)
"""

from __future__ import annotations

from typing import Any

from eventplane.bus.base import (
    SUBJECT_PREFIX,
    Bus,
    ConsumerConfig,
    DeliverPolicy,
    Delivery,
    Subscription,
    subject_filter,
    subject_for,
)
from eventplane.bus.memory import InMemoryBus
from eventplane.bus.relay import Relay
from eventplane.errors import ConfigError

__all__ = [
    "SUBJECT_PREFIX",
    "Bus",
    "ConsumerConfig",
    "DeliverPolicy",
    "Delivery",
    "InMemoryBus",
    "Relay",
    "Subscription",
    "open_bus",
    "sqlite_path_from_url",
    "subject_filter",
    "subject_for",
]


def sqlite_path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``
    (SQLAlchemy's convention, so the store and bus URLs for one file look alike)."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix) :].split("?", 1)[0]
            if path:
                return path
    raise ConfigError(
        f"bus URL {url!r} names no database file; use sqlite:///path/to/eventplane.db"
    )


async def open_bus(url: str, **options: Any) -> Bus:
    """Open the bus a URL names. ``options`` go to the backend's constructor
    (e.g. ``duplicate_window=`` for NATS, ``poll_interval=`` for the embedded bus).

    Raises ConfigError for a URL no backend understands, BusUnavailableError when the
    backend cannot be reached.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("nats", "tls", "ws", "wss"):
        from eventplane.bus.nats import NatsBus  # only pay for nats-py when it is used

        return await NatsBus.connect(url, **options)
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        from eventplane.bus.embedded import EmbeddedBus

        return await EmbeddedBus.open(sqlite_path_from_url(url), **options)
    if scheme == "memory":
        if options:
            raise ConfigError(f"memory:// bus takes no options, got {sorted(options)}")
        return InMemoryBus()
    raise ConfigError(
        f"bus URL {url!r} is not supported; use nats://host:4222 (JetStream), "
        "sqlite:///path/to/eventplane.db (embedded) or memory:// (tests)"
    )
