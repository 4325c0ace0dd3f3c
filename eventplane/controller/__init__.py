"""Controllers: the Controller base, its decision values and (later) the runtime.

Above the event layer; imported by ``apps/<domain>/controllers`` and the runtime.
"""

from eventplane.controller.base import (
    ConditionPatch,
    Controller,
    ControllerDecision,
    EmitEvent,
    Outcome,
    PermanentError,
    ReconcileContext,
    ReconcileError,
    RetryPolicy,
    TransientError,
    Watch,
    condition,
    fact,
)

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
