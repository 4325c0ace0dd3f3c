"""Controllers: the Controller base, its decision values and the ControllerRuntime.

Above the event layer; the base is imported by ``apps/<domain>/controllers``, the runtime
by ``eventplane.runner`` / ``evtctl``. ``ControllerRuntime`` is loaded on first access:
it needs the store and the bus (and so their drivers), which domain code importing this
package for the Controller base must not pull in.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from eventplane.controller.runtime import ControllerRuntime

__all__ = [
    "ConditionPatch",
    "Controller",
    "ControllerDecision",
    "ControllerRuntime",
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


def __getattr__(name: str) -> Any:
    if name == "ControllerRuntime":
        from eventplane.controller.runtime import ControllerRuntime

        return ControllerRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
