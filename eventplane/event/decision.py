"""What a controller decides, and the context it decides in — pure values, no behaviour.

Pure layer. Controllers (``eventplane.controller.base``, which re-exports every name
here) return a ``ControllerDecision`` from ``reconcile(event, state, ctx)``; the mutate
helpers (``eventplane.event.mutate``) turn it into events; the runtime only moves those
events to the store. The types live in the event layer rather than in
``eventplane.controller`` because the layer rule lets ``mutate`` import only downwards.

Determinism: a ``ReconcileContext`` carries everything a controller might otherwise take
from the outside world — the time (``now``) and fresh ids (``derive_id``) — so that the
same ``(event, state, ctx)`` always yields the same decision, on replay too.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventplane.event.model import Category, ConditionStatus, Event

__all__ = [
    "RESERVED_REASONS",
    "ConditionPatch",
    "ControllerDecision",
    "EmitEvent",
    "Outcome",
    "PermanentError",
    "ReconcileContext",
    "ReconcileError",
    "RetryPolicy",
    "TransientError",
    "condition",
    "fact",
]

# Reasons the runtime's own bookkeeping uses (see eventplane.event.mutate); a controller
# may not emit events with these reasons, so the stream's meaning cannot be forged.
RESERVED_REASONS = frozenset(
    {
        "Requested",
        "DeletionRequested",
        "StatusUpdated",
        "FinalizersUpdated",
        "RequeueScheduled",
        "RequeueCleared",
        "IntentRejected",
        "ReconcileFailed",
        "Deleted",
    }
)

_MAX_FINALIZER = 253


def _check_reason(value: str, what: str) -> None:
    if not value or not value[0].isupper() or not value.isalnum():
        raise ValueError(f"{what} {value!r} must be CamelCase alphanumerics, e.g. 'Provisioned'")


def _check_finalizer(value: str) -> None:
    # Kubernetes wants domain-qualified finalizers ("example.com/cleanup") so that two
    # controllers never remove each other's; we require the same.
    prefix, slash, rest = value.partition("/")
    if not slash or not prefix or not rest or len(value) > _MAX_FINALIZER or " " in value:
        raise ValueError(
            f"finalizer {value!r} must be domain-qualified, "
            "e.g. 'organization.eventplane.io/cleanup'"
        )


class Outcome(StrEnum):
    """How a reconcile ended. The runtime's only branching input besides the events."""

    DONE = "done"  # converged (or made progress); nothing more to do until the next event
    REQUEUE = "requeue"  # fine, but look again after ``requeue_after`` (polling)
    RETRY = "retry"  # transient failure: back off and try again (bounded)
    FAILED = "failed"  # permanent failure: record it, stop retrying until the spec changes


@dataclass(frozen=True, slots=True)
class EmitEvent:
    """An event the controller wants recorded: ``<Kind>.<reason>`` with ``data``."""

    reason: str
    data: dict[str, Any] = field(default_factory=dict)
    category: Category = Category.FACT

    def __post_init__(self) -> None:
        _check_reason(self.reason, "event reason")
        if self.reason in RESERVED_REASONS:
            raise ValueError(
                f"event reason {self.reason!r} is reserved for the runtime; pick another reason"
            )
        if self.category is Category.INTENT:
            raise ValueError("controllers emit internal or fact events, never intents")


@dataclass(frozen=True, slots=True)
class ConditionPatch:
    """Set one condition. The mutate helpers add ``observed_generation`` and keep
    ``last_transition_time`` unless ``status`` actually moves."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""

    def __post_init__(self) -> None:
        _check_reason(self.type, "condition type")
        _check_reason(self.reason, "condition reason")


def fact(reason: str, /, **data: Any) -> EmitEvent:
    """``fact("Provisioned", seats=5)`` — the common case in one call."""
    return EmitEvent(reason, dict(data), Category.FACT)


def condition(
    type_: str, status: bool | ConditionStatus, reason: str, message: str = ""
) -> ConditionPatch:
    """``condition("Ready", True, "Provisioned")``; a bool maps to True/False."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    return ConditionPatch(type_, status, reason, message)


@dataclass(frozen=True, slots=True)
class ControllerDecision:
    """A controller's answer: what to record and what should happen next.

    Build one with the named constructors: ``nothing()``, ``done(...)``,
    ``requeue(after=...)``, ``retry(reason, message)``, ``failed(reason, message)``.
    """

    events: tuple[EmitEvent, ...] = ()
    conditions: tuple[ConditionPatch, ...] = ()
    phase: str | None = None  # None leaves the recorded phase unchanged
    message: str | None = None  # None leaves the recorded message unchanged
    add_finalizers: tuple[str, ...] = ()
    remove_finalizers: tuple[str, ...] = ()
    requeue_after: timedelta | None = None
    outcome: Outcome = Outcome.DONE
    reason: str | None = None  # CamelCase, for RETRY / FAILED
    error: str | None = None  # human-readable message, for RETRY / FAILED

    def __post_init__(self) -> None:
        for fin in (*self.add_finalizers, *self.remove_finalizers):
            _check_finalizer(fin)
        both = set(self.add_finalizers) & set(self.remove_finalizers)
        if both:
            raise ValueError(f"finalizers {sorted(both)} are both added and removed; choose one")
        types = [c.type for c in self.conditions]
        if len(types) != len(set(types)):
            raise ValueError(f"condition types must be unique in one decision, got {types}")
        if self.requeue_after is not None and self.requeue_after <= timedelta(0):
            raise ValueError("requeue_after must be positive; omit it for no requeue")
        if self.outcome is Outcome.REQUEUE and self.requeue_after is None:
            raise ValueError("a REQUEUE decision needs requeue_after")
        if self.outcome in (Outcome.RETRY, Outcome.FAILED):
            if self.reason is None or self.error is None:
                raise ValueError(f"a {self.outcome.value} decision needs a reason and a message")
            _check_reason(self.reason, "failure reason")

    # -- named constructors ---------------------------------------------------------------

    @classmethod
    def nothing(cls) -> ControllerDecision:
        """Converged: record nothing, schedule nothing."""
        return _NOTHING

    @classmethod
    def done(
        cls,
        *events: EmitEvent,
        conditions: tuple[ConditionPatch, ...] | list[ConditionPatch] = (),
        phase: str | None = None,
        message: str | None = None,
        add_finalizers: tuple[str, ...] | list[str] = (),
        remove_finalizers: tuple[str, ...] | list[str] = (),
    ) -> ControllerDecision:
        return cls(
            events=tuple(events),
            conditions=tuple(conditions),
            phase=phase,
            message=message,
            add_finalizers=tuple(add_finalizers),
            remove_finalizers=tuple(remove_finalizers),
        )

    @classmethod
    def requeue(
        cls,
        *events: EmitEvent,
        after: timedelta,
        conditions: tuple[ConditionPatch, ...] | list[ConditionPatch] = (),
        phase: str | None = None,
        message: str | None = None,
        add_finalizers: tuple[str, ...] | list[str] = (),
        remove_finalizers: tuple[str, ...] | list[str] = (),
    ) -> ControllerDecision:
        """Record what is given and reconcile again after ``after`` (durably)."""
        decided = cls.done(
            *events,
            conditions=conditions,
            phase=phase,
            message=message,
            add_finalizers=add_finalizers,
            remove_finalizers=remove_finalizers,
        )
        return replace(decided, requeue_after=after, outcome=Outcome.REQUEUE)

    @classmethod
    def retry(
        cls, reason: str, message: str, *, after: timedelta | None = None
    ) -> ControllerDecision:
        """A transient failure: back off (``after`` or the retry policy) and try again."""
        return cls(outcome=Outcome.RETRY, reason=reason, error=message, requeue_after=after)

    @classmethod
    def failed(cls, reason: str, message: str) -> ControllerDecision:
        """A permanent failure: ``Ready=False`` plus a ``<Kind>.ReconcileFailed`` fact."""
        return cls(outcome=Outcome.FAILED, reason=reason, error=message)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ControllerDecision:
        """The decision the runtime records when ``reconcile`` raised instead of returning.

        ``TransientError`` → retry, ``PermanentError`` → failed, anything else is treated as
        transient (a bug may be fixed by a deploy; retries are bounded anyway).
        """
        if isinstance(exc, TransientError):
            return cls.retry(exc.reason, exc.message, after=exc.delay)
        if isinstance(exc, PermanentError):
            return cls.failed(exc.reason, exc.message)
        return cls.retry("ReconcileError", f"{type(exc).__name__}: {exc}")


_NOTHING = ControllerDecision()


class ReconcileError(Exception):
    """Base for the exceptions a controller may raise to pick an explicit outcome."""

    def __init__(self, message: str, *, reason: str) -> None:
        _check_reason(reason, "failure reason")
        super().__init__(message)
        self.message = message
        self.reason = reason


class TransientError(ReconcileError):
    """Try again later: after ``delay`` if given, else after the retry policy's backoff."""

    def __init__(
        self,
        message: str,
        *,
        delay: timedelta | float | None = None,
        reason: str = "TransientError",
    ) -> None:
        super().__init__(message, reason=reason)
        if isinstance(delay, int | float):
            delay = timedelta(seconds=delay)
        if delay is not None and delay <= timedelta(0):
            raise ValueError("TransientError delay must be positive")
        self.delay: timedelta | None = delay


class PermanentError(ReconcileError):
    """Retrying cannot help (bad input, forbidden action); fail until the spec changes."""

    def __init__(self, message: str, *, reason: str = "PermanentError") -> None:
        super().__init__(message, reason=reason)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff: ``base * 2**(attempt-1)`` capped at ``cap``, with a
    deterministic ±10% jitter derived from a seed (the trigger id) so replays agree."""

    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(seconds=60)
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError("RetryPolicy needs 0 < base <= cap")
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    def delay(self, attempt: int, seed: bytes = b"") -> timedelta:
        """Backoff before retry number ``attempt`` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 62)
        raw = min(self.base.total_seconds() * math.pow(2, exponent), self.cap.total_seconds())
        digest = hashlib.sha256(seed + attempt.to_bytes(8, "big")).digest()
        jitter = 0.9 + 0.2 * (int.from_bytes(digest[:4], "big") / 0xFFFFFFFF)
        return timedelta(seconds=min(raw * jitter, self.cap.total_seconds()))


@dataclass(frozen=True, slots=True)
class ReconcileContext:
    """Everything a pure reconcile may know about the outside world.

    ``now`` is taken from the trigger (or, for a fired timer, its due time) — never from
    the clock — and ``derive_id`` makes fresh ids as a function of the trigger, so a
    replay of the same history reproduces the same decisions and the same events.
    """

    now: datetime
    trigger_id: UUID
    attempt: int = 1  # 1 for the first try at the current state, 2 after one retry, ...
    retry: RetryPolicy = RetryPolicy()
    actor: str = "eventplane-runtime"
    source: str = "urn:eventplane:runtime"

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("ReconcileContext.now must be timezone-aware (UTC)")
        if self.attempt < 1:
            raise ValueError("ReconcileContext.attempt is 1-based")

    @classmethod
    def for_trigger(
        cls,
        trigger: Event,
        *,
        now: datetime | None = None,
        attempt: int = 1,
        retry: RetryPolicy | None = None,
        actor: str = "eventplane-runtime",
    ) -> ReconcileContext:
        """The context for reconciling because of ``trigger``; ``now`` defaults to its
        ``occurred_at``."""
        return cls(
            now=now if now is not None else trigger.metadata.occurred_at,
            trigger_id=trigger.id,
            attempt=attempt,
            retry=retry if retry is not None else RetryPolicy(),
            actor=actor,
        )

    def derive_id(self, *parts: object) -> UUID:
        """A deterministic UUIDv7-shaped id: the 48-bit time is ``now`` in ms (ids still
        sort by time), the remaining bits a SHA-256 of the trigger id and ``parts``."""
        digest = hashlib.sha256(
            self.trigger_id.bytes + "\x1f".join(repr(p) for p in parts).encode()
        ).digest()
        ms = int(self.now.astimezone(UTC).timestamp() * 1000) & ((1 << 48) - 1)
        rand = int.from_bytes(digest[:10], "big")  # 80 bits, we use 74
        value = ms << 80
        value |= 0x7 << 76
        value |= ((rand >> 62) & 0xFFF) << 64
        value |= 0b10 << 62
        value |= rand & ((1 << 62) - 1)
        return UUID(int=value)
