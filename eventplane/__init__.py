"""Eventplane: event-native, controller-driven orchestration.

This top-level package re-exports the pure API a domain author needs — events,
specs, controllers and decisions — and nothing that does I/O, so ``import
eventplane`` stays cheap and side-effect free. The infrastructure lives in its
subpackages: ``eventplane.store`` (EventStore backends), ``eventplane.bus`` (Bus
backends and the relay), ``eventplane.controller`` (the runtime),
``eventplane.projection`` (read models) and ``eventplane.config``.

The names are resolved on first access (PEP 562): ``import eventplane.errors`` — which
every ``evtctl`` invocation does, ``--help`` included — must not build the pydantic models
of the event layer.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventplane.controller.base import Controller, Watch
    from eventplane.errors import (
        AuthorizationError,
        ConcurrencyError,
        ConflictError,
        DuplicateEventError,
        EventplaneError,
        ManifestError,
        NotFoundError,
        SecretMaterialError,
        UnavailableError,
        UnknownKindError,
        ValidationError,
    )
    from eventplane.event import (
        Category,
        Condition,
        ConditionStatus,
        ControllerDecision,
        Event,
        EventFactory,
        EventMetadata,
        Outcome,
        PermanentError,
        ReconcileContext,
        ResourceState,
        ResourceStatus,
        TransientError,
        condition,
        fact,
        fold,
    )
    from eventplane.spec import Manifest, ResourceSpec

__all__ = [
    "AuthorizationError",
    "Category",
    "ConcurrencyError",
    "Condition",
    "ConditionStatus",
    "ConflictError",
    "Controller",
    "ControllerDecision",
    "DuplicateEventError",
    "Event",
    "EventFactory",
    "EventMetadata",
    "EventplaneError",
    "Manifest",
    "ManifestError",
    "NotFoundError",
    "Outcome",
    "PermanentError",
    "ReconcileContext",
    "ResourceSpec",
    "ResourceState",
    "ResourceStatus",
    "SecretMaterialError",
    "TransientError",
    "UnavailableError",
    "UnknownKindError",
    "ValidationError",
    "Watch",
    "condition",
    "fact",
    "fold",
]

_EXPORTS: dict[str, str] = {
    "AuthorizationError": "eventplane.errors",
    "Category": "eventplane.event",
    "ConcurrencyError": "eventplane.errors",
    "Condition": "eventplane.event",
    "ConditionStatus": "eventplane.event",
    "ConflictError": "eventplane.errors",
    "Controller": "eventplane.controller.base",
    "ControllerDecision": "eventplane.event",
    "DuplicateEventError": "eventplane.errors",
    "Event": "eventplane.event",
    "EventFactory": "eventplane.event",
    "EventMetadata": "eventplane.event",
    "EventplaneError": "eventplane.errors",
    "Manifest": "eventplane.spec",
    "ManifestError": "eventplane.errors",
    "NotFoundError": "eventplane.errors",
    "Outcome": "eventplane.event",
    "PermanentError": "eventplane.event",
    "ReconcileContext": "eventplane.event",
    "ResourceSpec": "eventplane.spec",
    "ResourceState": "eventplane.event",
    "ResourceStatus": "eventplane.event",
    "SecretMaterialError": "eventplane.errors",
    "TransientError": "eventplane.event",
    "UnavailableError": "eventplane.errors",
    "UnknownKindError": "eventplane.errors",
    "ValidationError": "eventplane.errors",
    "Watch": "eventplane.controller.base",
    "condition": "eventplane.event",
    "fact": "eventplane.event",
    "fold": "eventplane.event",
}


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
