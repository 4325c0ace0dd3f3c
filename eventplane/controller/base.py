"""The Controller base class and the values a reconcile works with.

Sits above the pure event layer; subclassed by ``apps/<domain>/controllers`` and driven
by ``eventplane.controller.runtime``. ``ControllerDecision``, ``ReconcileContext``,
``TransientError`` and friends are defined in ``eventplane.event.decision`` (so the mutate
helpers below this layer can read them) and re-exported here, where controller authors
look for them.

Rules for a controller (the runtime and the replay tests rely on them):

- **Pure**: ``reconcile`` reads only its arguments. No network, database, filesystem,
  clock or randomness — ``ctx.now`` is the time and ``ctx.derive_id(...)`` makes ids.
- **Level-triggered**: decide from ``state`` (desired spec vs. recorded status, finalizers,
  facts already announced). ``event`` only says why you were woken; the same state must
  give the same decision whichever event woke you, and a converged resource must get
  ``ControllerDecision.nothing()``-equivalent output (the mutate helpers then write nothing).
- **Explicit outcomes**: return ``retry``/``failed`` decisions, or raise ``TransientError``
  / ``PermanentError``; any other exception is treated as transient and retried, bounded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from eventplane.event.decision import (
    ConditionPatch,
    ControllerDecision,
    EmitEvent,
    Outcome,
    PermanentError,
    ReconcileContext,
    ReconcileError,
    RetryPolicy,
    TransientError,
    condition,
    fact,
)
from eventplane.event.model import Category, Event
from eventplane.event.state import ResourceState
from eventplane.utils import is_kind

__all__ = [
    "ConditionPatch",
    "Controller",
    "ControllerDecision",
    "EmitEvent",
    "Outcome",
    "PermanentError",
    "ReconcileContext",
    "ReconcileError",
    "RetryPolicy",
    "TransientError",
    "Watch",
    "condition",
    "fact",
]


@dataclass(frozen=True, slots=True)
class Watch:
    """Which events wake a controller: all set filters must match (an empty tuple or
    None matches anything). ``types`` are full types, e.g. ``"Organization.Requested"``."""

    kind: str | None = None
    categories: tuple[Category, ...] = ()
    types: tuple[str, ...] = ()

    def matches(self, event: Event) -> bool:
        return (
            (self.kind is None or event.kind == self.kind)
            and (not self.categories or event.category in self.categories)
            and (not self.types or event.type in self.types)
        )


class Controller(ABC):
    """Reconciles one kind. Subclasses set ``KIND`` and implement ``reconcile``.

    ``WATCH`` defaults to the kind's intents; the runtime additionally wakes a controller
    for its own durable timers (``<Kind>.RequeueScheduled``) whatever ``WATCH`` says.
    """

    KIND: ClassVar[str] = ""
    WATCH: ClassVar[tuple[Watch, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.KIND and not is_kind(cls.KIND):
            raise TypeError(f"{cls.__name__}.KIND {cls.KIND!r} must be a PascalCase kind")

    @classmethod
    def watches(cls) -> tuple[Watch, ...]:
        return cls.WATCH or (Watch(kind=cls.KIND, categories=(Category.INTENT,)),)

    @classmethod
    def wants(cls, event: Event) -> bool:
        """Whether ``event`` should wake this controller."""
        return any(w.matches(event) for w in cls.watches())

    @abstractmethod
    def reconcile(
        self, event: Event, state: ResourceState, ctx: ReconcileContext
    ) -> ControllerDecision:
        """Decide, from ``state``, what should happen next. Must be pure and deterministic."""
