"""The pure event layer: the Event model, how intents are born, how streams fold into
state and how decisions become events. No I/O anywhere below this package.

Callers: the store and bus (``Event``, CloudEvents codec), the controller runtime
(``fold``/``evolve``, the mutate helpers), ``evtctl`` (``EventFactory``, ``encode``).
"""

from eventplane.event.cloudevents import CONTENT_TYPE, decode, encode, to_cloudevent
from eventplane.event.decision import (
    RESERVED_REASONS,
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
from eventplane.event.factory import DEFAULT_SOURCE, EventFactory
from eventplane.event.model import (
    Category,
    Condition,
    ConditionStatus,
    Event,
    EventMetadata,
    ResourceStatus,
    stream_id,
)
from eventplane.event.mutate import (
    admit_intent,
    apply_conditions,
    apply_decision,
    record_exception,
    reject_intent,
    rejection_id,
)
from eventplane.event.state import ResourceState, evolve, fold, state_summary

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_SOURCE",
    "RESERVED_REASONS",
    "Category",
    "Condition",
    "ConditionPatch",
    "ConditionStatus",
    "ControllerDecision",
    "EmitEvent",
    "Event",
    "EventFactory",
    "EventMetadata",
    "Outcome",
    "PermanentError",
    "ReconcileContext",
    "ReconcileError",
    "ResourceState",
    "ResourceStatus",
    "RetryPolicy",
    "TransientError",
    "admit_intent",
    "apply_conditions",
    "apply_decision",
    "condition",
    "decode",
    "encode",
    "evolve",
    "fact",
    "fold",
    "record_exception",
    "reject_intent",
    "rejection_id",
    "state_summary",
    "stream_id",
    "to_cloudevent",
]
