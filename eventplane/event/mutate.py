"""The mutate helpers: the only code that turns decisions and intents into events to store.

Pure layer. The controller runtime calls, per delivery:

    admit_intent(state, intent, ctx)               -> [stored intent] | [IntentRejected fact]
    apply_decision(state, trigger, decision, ctx)  -> events to append (maybe none)

and ``reject_intent`` when its own checks (authorization, spec validation) refuse an
intent. Everything the runtime persists comes from here, so a replay of the same
``(state, trigger, decision, ctx)`` yields identical events: ids come from
``ctx.derive_id(state.version, index)``, times from ``ctx.now``.

Bookkeeping event types the helpers write (reasons reserved; see ``RESERVED_REASONS``):

    <Kind>.FinalizersUpdated  internal  ``finalizers`` = the full new list
    <Kind>.StatusUpdated      internal  ``status`` = the full new ResourceStatus
    <Kind>.RequeueScheduled   internal  data {"due_at", "reason"}: a durable timer
    <Kind>.RequeueCleared     internal  the pending timer is no longer wanted
    <Kind>.ReconcileFailed    fact      data {"reason", "message", "attempts", "generation"}
    <Kind>.IntentRejected     fact      data {"intent_id", "intent_type", "actor", "reason",
                                              "message", "signature"}; metadata.actor is
                                              the rejected intent's (claimed) actor, so
                                              ``events --actor X`` finds X's refusals too
    <Kind>.Deleted            fact      deletion requested and no finalizers left

Order within one decision: finalizer additions (so cleanup is guaranteed before anything
is provisioned), the controller's own events, ReconcileFailed, StatusUpdated, finalizer
removals (after the cleanup facts they guard), the requeue timer, Deleted.
A converged resource — nothing would change — produces no events at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventplane.event.decision import (
    ConditionPatch,
    ControllerDecision,
    Outcome,
    ReconcileContext,
)
from eventplane.event.model import (
    Category,
    Condition,
    ConditionStatus,
    Event,
    EventMetadata,
    ResourceStatus,
    copy_trusted,
)
from eventplane.event.state import ResourceState
from eventplane.utils import format_time

__all__ = [
    "FAILED_PHASE",
    "admit_intent",
    "apply_conditions",
    "apply_decision",
    "record_exception",
    "reject_intent",
    "rejection_id",
]

FAILED_PHASE = "Failed"
_SYNCED = "Synced"
_READY = "Ready"


def apply_conditions(
    conditions: tuple[Condition, ...],
    patches: tuple[ConditionPatch, ...],
    *,
    generation: int,
    now: datetime,
) -> tuple[Condition, ...]:
    """Kubernetes ``SetStatusCondition``: replace by type, keep order, append new types;
    ``last_transition_time`` moves only when ``status`` moves."""
    result = list(conditions)
    for patch in patches:
        index = next((i for i, c in enumerate(result) if c.type == patch.type), None)
        previous = result[index] if index is not None else None
        cond = Condition(
            type=patch.type,
            status=patch.status,
            reason=patch.reason,
            message=patch.message,
            observed_generation=generation,
            last_transition_time=now
            if previous is None or previous.status != patch.status
            else previous.last_transition_time,
        )
        if index is None:
            result.append(cond)
        else:
            result[index] = cond
    return tuple(result)


class _Emitter:
    """Stamps the common fields on each new event of one decision."""

    def __init__(self, state: ResourceState, trigger: Event, ctx: ReconcileContext) -> None:
        self.state = state
        self.trigger = trigger
        self.ctx = ctx
        self.events: list[Event] = []
        self.api_version = state.api_version or trigger.api_version

    def emit(
        self,
        reason: str,
        category: Category,
        data: dict[str, Any] | None = None,
        *,
        status: ResourceStatus | None = None,
        finalizers: tuple[str, ...] | None = None,
    ) -> None:
        state, ctx = self.state, self.ctx
        self.events.append(
            Event(
                id=ctx.derive_id(state.version, len(self.events)),
                tenant=state.tenant,
                kind=state.kind,
                name=state.name,
                type=f"{state.kind}.{reason}",
                category=category,
                api_version=self.api_version,
                data=data or {},
                metadata=EventMetadata(
                    generation=state.generation,
                    correlation_id=self.trigger.metadata.correlation_id,
                    causation_id=self.trigger.id,
                    actor=ctx.actor,
                    source=ctx.source,
                    occurred_at=ctx.now,
                ),
                status=status,
                finalizers=finalizers,
            )
        )


def _failure_status(
    state: ResourceState,
    status: ResourceStatus,
    reason: str,
    message: str,
    ctx: ReconcileContext,
    attempts: int,
) -> ResourceStatus:
    conditions = apply_conditions(
        status.conditions,
        (ConditionPatch(_READY, ConditionStatus.FALSE, reason, message),),
        generation=state.generation,
        now=ctx.now,
    )
    return status.model_copy(
        update={
            "phase": FAILED_PHASE,
            "message": message,
            "conditions": conditions,
            "observed_generation": state.generation,
            "attempts": attempts,
            "last_error": message,
        }
    )


def apply_decision(
    state: ResourceState,
    trigger: Event,
    decision: ControllerDecision,
    ctx: ReconcileContext,
) -> list[Event]:
    """The events that record ``decision`` for ``state`` (woken by ``trigger``).

    Nothing for a resource that does not exist (never created, or already deleted).
    """
    if not state.exists:
        return []
    out = _Emitter(state, trigger, ctx)
    old = state.status

    # Finalizers: additions keep the existing order and append; removals drop.
    finalizers = tuple(f for f in state.finalizers if f not in decision.remove_finalizers)
    added = tuple(f for f in decision.add_finalizers if f not in finalizers)
    finalizers += added
    finalizers_changed = finalizers != state.finalizers

    # Status: the decision's own patch first, then the outcome's bookkeeping.
    status = old.model_copy(
        update={
            "conditions": apply_conditions(
                old.conditions, decision.conditions, generation=state.generation, now=ctx.now
            ),
            **({"phase": decision.phase} if decision.phase is not None else {}),
            **({"message": decision.message} if decision.message is not None else {}),
        }
    )
    requeue_at: datetime | None = None
    requeue_reason = "Requested"
    failure: tuple[str, str, int] | None = None
    if decision.outcome in (Outcome.DONE, Outcome.REQUEUE):
        synced = status.condition(_SYNCED)
        conditions = status.conditions
        if synced is not None and synced.status is not ConditionStatus.TRUE:
            conditions = apply_conditions(
                conditions,
                (ConditionPatch(_SYNCED, ConditionStatus.TRUE, "ReconcileSuccess"),),
                generation=state.generation,
                now=ctx.now,
            )
        status = status.model_copy(
            update={
                "conditions": conditions,
                "observed_generation": state.generation,
                "attempts": 0,
                "last_error": None,
            }
        )
        if decision.requeue_after is not None:
            requeue_at = ctx.now + decision.requeue_after
    elif decision.outcome is Outcome.RETRY:
        assert decision.reason is not None
        assert decision.error is not None
        attempts = old.attempts + 1
        if attempts >= ctx.retry.max_attempts:
            failure = (
                decision.reason,
                f"{decision.error} (gave up after {attempts} attempts)",
                attempts,
            )
        else:
            status = status.model_copy(
                update={
                    "conditions": apply_conditions(
                        status.conditions,
                        (
                            ConditionPatch(
                                _SYNCED, ConditionStatus.FALSE, decision.reason, decision.error
                            ),
                        ),
                        generation=state.generation,
                        now=ctx.now,
                    ),
                    "attempts": attempts,
                    "last_error": decision.error,
                }
            )
            delay = decision.requeue_after or ctx.retry.delay(attempts, trigger.id.bytes)
            requeue_at = ctx.now + delay
            requeue_reason = "Retry"
    else:  # Outcome.FAILED
        assert decision.reason is not None
        assert decision.error is not None
        failure = (decision.reason, decision.error, old.attempts)
    if failure is not None:
        reason, message, attempts = failure
        status = _failure_status(state, status, reason, message, ctx, attempts)

    deleting = state.deletion_requested_at is not None and not finalizers
    if deleting:
        requeue_at = None  # a deleted resource has nothing left to look at

    if finalizers_changed and added:
        out.emit("FinalizersUpdated", Category.INTERNAL, finalizers=finalizers)
    for event in decision.events:
        out.emit(event.reason, event.category, dict(event.data))
    if failure is not None and status != old:
        reason, message, attempts = failure
        out.emit(
            "ReconcileFailed",
            Category.FACT,
            {
                "reason": reason,
                "message": message,
                "attempts": attempts,
                "generation": state.generation,
            },
        )
    if status != old:
        out.emit("StatusUpdated", Category.INTERNAL, status=status)
    if finalizers_changed and not added:
        out.emit("FinalizersUpdated", Category.INTERNAL, finalizers=finalizers)
    if requeue_at is not None and requeue_at != state.requeue_at:
        out.emit(
            "RequeueScheduled",
            Category.INTERNAL,
            {"due_at": format_time(requeue_at), "reason": requeue_reason},
        )
    elif requeue_at is None and state.requeue_at is not None and not deleting:
        out.emit("RequeueCleared", Category.INTERNAL)
    if deleting:
        out.emit(
            "Deleted",
            Category.FACT,
            {
                "generation": state.generation,
                "deletion_requested_at": format_time(state.deletion_requested_at)
                if state.deletion_requested_at
                else None,
            },
        )
    return out.events


def record_exception(
    state: ResourceState, trigger: Event, exc: BaseException, ctx: ReconcileContext
) -> list[Event]:
    """The events recording that ``reconcile`` raised ``exc`` (retry or failure)."""
    return apply_decision(state, trigger, ControllerDecision.from_exception(exc), ctx)


def rejection_id(intent: Event) -> UUID:
    """The id of the IntentRejected fact for ``intent`` — fixed, so a redelivered intent
    that is rejected again de-duplicates in the store instead of piling up facts."""
    return ReconcileContext.for_trigger(intent).derive_id("IntentRejected")


def reject_intent(
    state: ResourceState,
    intent: Event,
    reason: str,
    message: str,
    ctx: ReconcileContext,
) -> list[Event]:
    """A ``<Kind>.IntentRejected`` fact explaining why ``intent`` is not stored."""
    _check_intent(state, intent)
    if not reason or not reason[0].isupper() or not reason.isalnum():
        raise ValueError(f"rejection reason {reason!r} must be CamelCase, e.g. 'Forbidden'")
    return [
        Event(
            id=rejection_id(intent),
            tenant=state.tenant,
            kind=state.kind,
            name=state.name,
            type=f"{state.kind}.IntentRejected",
            category=Category.FACT,
            api_version=state.api_version or intent.api_version,
            data={
                "intent_id": str(intent.id),
                "intent_type": intent.type,
                "actor": intent.metadata.actor,
                "reason": reason,
                "message": message,
                # Audit evidence: the refused intent is not stored, its signature is.
                "signature": intent.metadata.signature,
            },
            metadata=EventMetadata(
                generation=state.generation,
                correlation_id=intent.metadata.correlation_id,
                causation_id=intent.id,
                actor=intent.metadata.actor,
                source=ctx.source,
                occurred_at=intent.metadata.occurred_at,
            ),
        )
    ]


def _check_intent(state: ResourceState, intent: Event) -> None:
    if intent.category is not Category.INTENT:
        raise ValueError(f"event {intent.id} is a {intent.category.value} event, not an intent")
    if intent.stream != (state.tenant, state.kind, state.name):
        raise ValueError(
            f"intent {intent.id} targets {'/'.join(intent.stream)}, "
            f"not {state.tenant}/{state.kind}/{state.name}"
        )


def admit_intent(state: ResourceState, intent: Event, ctx: ReconcileContext) -> list[Event]:
    """The intent as it is stored — or, if the stream cannot accept it, the rejection.

    ``<Kind>.Requested`` gets ``generation + 1`` when it (re)creates the resource or
    changes the spec, else the current generation (re-applying is harmless). It is
    rejected while a deletion is in progress. ``<Kind>.DeletionRequested`` sets
    ``deletion_requested_at`` (kept if already set: it can never move) and is rejected
    for a resource that does not exist.

    The runtime checks ``store.get_event(intent.id)`` first: an intent is admitted once.
    """
    _check_intent(state, intent)
    # Copies without validation (the values are the store's Nones and our own ints): the
    # runtime admits one intent per turn, and model_copy cost 3% of a busy runtime's CPU.
    meta = copy_trusted(
        intent.metadata, {"stream_version": None, "position": None, "recorded_at": None}
    )
    if intent.reason == "Requested":
        if intent.spec is None:
            return reject_intent(
                state, intent, "SpecMissing", "a Requested intent must carry a spec", ctx
            )
        if state.being_deleted:
            return reject_intent(
                state,
                intent,
                "DeletionInProgress",
                f"{state.kind} {state.name!r} is being deleted; apply again once it is gone",
                ctx,
            )
        changed = not state.exists or state.spec != intent.spec
        generation = state.generation + 1 if changed else state.generation
        return [copy_trusted(intent, {"metadata": copy_trusted(meta, {"generation": generation})})]
    if intent.reason == "DeletionRequested":
        if not state.exists:
            return reject_intent(
                state,
                intent,
                "NotFound",
                f"{state.kind} {state.name!r} does not exist in tenant {state.tenant!r}",
                ctx,
            )
        return [
            copy_trusted(
                intent,
                {
                    "metadata": copy_trusted(meta, {"generation": state.generation}),
                    "deletion_requested_at": state.deletion_requested_at
                    or intent.metadata.occurred_at,
                },
            )
        ]
    return reject_intent(
        state,
        intent,
        "UnknownIntent",
        f"intent type {intent.type!r} is neither {state.kind}.Requested "
        f"nor {state.kind}.DeletionRequested",
        ctx,
    )
