"""Store URLs: which backend a URL names, and how other libraries should spell it.

Part of ``eventplane.store``; used by ``open_store``, the migrations and the projection
worker (which opens SQLAlchemy async sessions on the store's database through
``sqlalchemy_url``). Pure string handling, no I/O.

Accepted forms:
    sqlite:///relative/path.db     relative to the current working directory
    sqlite:////absolute/path.db
    postgresql://user:pass@host:port/db?…   (also postgres://, postgresql+asyncpg://)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from eventplane.errors import ConfigError

__all__ = ["DEFAULT_SQLITE_URL", "StoreURL", "parse_store_url", "sqlalchemy_url"]

DEFAULT_SQLITE_URL = "sqlite:///.eventplane/eventplane.db"
_PASSWORD_RE = re.compile(r"(://[^:/@]+:)[^@]*@")


@dataclass(frozen=True, slots=True)
class StoreURL:
    backend: Literal["sqlite", "postgresql"]
    url: str
    dsn: str = ""  # what asyncpg connects with (postgresql)
    path: Path = Path()  # the database file, absolute (sqlite)

    @property
    def redacted(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return _PASSWORD_RE.sub(r"\1***@", self.url)


def parse_store_url(url: str) -> StoreURL:
    """Classify ``url``; ConfigError naming the accepted forms for anything else."""
    if not isinstance(url, str) or not url:
        raise ConfigError(
            "store URL is empty; set EVENTPLANE_STORE_URL, e.g. " + DEFAULT_SQLITE_URL
        )
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("sqlite", "sqlite+aiosqlite"):
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"store URL {url!r}: a SQLite URL needs a file path, e.g. "
                "sqlite:///.eventplane/eventplane.db (relative) or sqlite:////var/lib/ep.db"
            )
        raw = rest[1:].split("?", 1)[0]
        if raw in (":memory:", ""):
            raise ConfigError(
                f"store URL {url!r}: in-memory SQLite cannot be shared between connections; "
                "use a file path"
            )
        return StoreURL("sqlite", url, path=Path(raw).expanduser().absolute())
    if sep and scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return StoreURL("postgresql", url, dsn="postgresql://" + rest)
    shown = _PASSWORD_RE.sub(r"\1***@", url)
    raise ConfigError(
        f"store URL {shown!r} is not supported; use "
        "sqlite:///path/to/file.db or postgresql://user@host:5432/database"
    )


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy *async* URL for the same database (``postgresql+asyncpg://…`` or
    ``sqlite+aiosqlite:////abs/path``), for ``create_async_engine`` in projection workers."""
    target = parse_store_url(url)
    if target.backend == "sqlite":
        return f"sqlite+aiosqlite:///{target.path}"
    return "postgresql+asyncpg://" + target.dsn.partition("://")[2]
