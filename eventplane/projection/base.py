"""The Projection base class: what a read model watches, its tables, how it applies an event.

Sits above the pure event layer, beside the controller base; subclassed by
``apps/<domain>/projections`` and driven by ``eventplane.projection.worker``. It imports
no store, bus or driver: a domain module that imports this stays inside the layers the
import contracts allow (SQLModel/SQLAlchemy are the read model's own vocabulary).

Rules for a projection (the worker and the rebuild test rely on them):

- **Deterministic from events**: ``apply`` writes only what the event (and rows written
  by earlier events) say. Times come from ``event.metadata.occurred_at``, never the wall
  clock, so ``rebuild`` reproduces the live read model row for row.
- **Inside the worker's transaction**: ``apply`` uses the ``AsyncSession`` it is given
  and never commits, rolls back or opens another connection. The worker commits the
  writes of a whole batch together with the projection's checkpoint.
- **Tolerant**: an event for a row that does not exist (e.g. a fact for a resource the
  projection never saw created) is ignored, not an error — a projection that raises
  stalls itself at that event until the code is fixed.
- **Own tables only**: ``TABLES`` lists every SQLModel table class the projection
  writes; ``rebuild`` deletes their rows, and the worker creates them on start.

A projection that is the read model of a kind sets ``SERVES = "<Kind>"`` and implements
``objects`` (and ``table_row``): that is what ``evtctl get <Kind>`` prints.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from eventplane.event.model import Category, Event
from eventplane.utils import is_kind

__all__ = ["PROJECTION_NAME_RE", "Projection", "ProjectionWatch", "checkpoint_name"]

# Projection names become durable consumer names and checkpoint keys: keep them tame.
PROJECTION_NAME_RE = r"^[a-z][a-z0-9-]{0,62}$"


def checkpoint_name(projection: str) -> str:
    """The key of a projection's checkpoint in the store's checkpoint table."""
    return f"projection:{projection}"


@dataclass(frozen=True, slots=True)
class ProjectionWatch:
    """Which stored events a projection applies: every set field must match, a tuple
    means "any of these", an empty tuple matches anything — the same semantics as the
    store's ``EventFilter`` (the worker turns this into one), without the tenant: a
    projection serves every tenant and keeps the tenant in its rows."""

    kinds: tuple[str, ...] = ()
    categories: tuple[Category, ...] = (Category.FACT,)
    types: tuple[str, ...] = ()

    def matches(self, event: Event) -> bool:
        return (
            (not self.kinds or event.kind in self.kinds)
            and (not self.categories or event.category in self.categories)
            and (not self.types or event.type in self.types)
        )


class Projection(ABC):
    """A read model built from the event log. Subclasses set ``NAME``, ``WATCH`` and
    ``TABLES`` and implement ``apply``."""

    NAME: ClassVar[str] = ""
    WATCH: ClassVar[ProjectionWatch] = ProjectionWatch()
    TABLES: ClassVar[tuple[type[SQLModel], ...]] = ()
    #: The kind whose read model this is (``evtctl get KIND``), if any.
    SERVES: ClassVar[str | None] = None
    #: Columns of ``evtctl get KIND`` as a table (keys of ``table_row``).
    TABLE_COLUMNS: ClassVar[tuple[str, ...]] = ("name",)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.NAME and not re.match(PROJECTION_NAME_RE, cls.NAME):
            raise TypeError(
                f"{cls.__name__}.NAME {cls.NAME!r} must be lowercase letters, digits and '-' "
                "(it names the checkpoint and the bus consumer)"
            )
        if cls.SERVES is not None and not is_kind(cls.SERVES):
            raise TypeError(f"{cls.__name__}.SERVES {cls.SERVES!r} is not a Kind")
        for kind in cls.WATCH.kinds:
            if not is_kind(kind):
                raise TypeError(f"{cls.__name__}.WATCH names {kind!r}, which is not a Kind")
        for table in cls.TABLES:
            if getattr(table, "__table__", None) is None:
                raise TypeError(
                    f"{cls.__name__}.TABLES lists {table.__name__}, which is not a SQLModel "
                    "table class (declare it with table=True)"
                )

    @classmethod
    def wants(cls, event: Event) -> bool:
        """Whether ``event`` is one this projection applies."""
        return cls.WATCH.matches(event)

    @abstractmethod
    async def apply(self, event: Event, session: AsyncSession) -> None:
        """Apply one stored event (``position`` set) to the read model through ``session``."""

    async def apply_batch(self, events: Sequence[Event], session: AsyncSession) -> None:
        """Apply consecutive stored events in position order (the worker calls this).

        The default applies them one by one. Override it to load the rows a batch touches
        with one query and write them with one flush — per-event round trips are what
        bounds a projection's throughput. The result must equal applying one by one.
        """
        for event in events:
            await self.apply(event, session)

    # -- reading (``evtctl get``) -------------------------------------------------------------

    async def objects(
        self, session: AsyncSession, *, tenant: str, name: str | None = None
    ) -> list[dict[str, Any]]:
        """The Kubernetes-like objects (``apiVersion``, ``kind``, ``metadata``, ``spec``,
        ``status``) of ``tenant`` — one named resource, or all of them ordered by name.
        Only projections that set ``SERVES`` implement it."""
        raise NotImplementedError(f"projection {self.NAME!r} does not serve objects")

    def table_row(self, obj: dict[str, Any]) -> dict[str, Any]:
        """One object flattened to ``TABLE_COLUMNS`` for table output."""
        return {"name": obj.get("metadata", {}).get("name")}
