"""Eventplane: event-native, controller-driven orchestration.

This top-level package re-exports the pure API a domain author needs — events,
specs, controllers and decisions — and nothing that does I/O, so ``import
eventplane`` stays cheap and side-effect free. The infrastructure lives in its
subpackages: ``eventplane.store`` (EventStore backends), ``eventplane.bus`` (Bus
backends and the relay), ``eventplane.controller`` (the runtime),
``eventplane.projection`` (read models) and ``eventplane.config``.
"""

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
