"""Eventplane's exception hierarchy — the only errors callers need to know.

Sits at the bottom of the layer stack: every other module raises these, and the
store and bus backends translate driver exceptions into them at their boundary
(``raise StoreUnavailableError(...) from exc``), so code above never sees an
asyncpg, aiosqlite or nats exception. ``evtctl`` maps each branch to an exit code.

    EventplaneError
    ├── ValidationError            bad input; names the field path and the fix
    │   ├── ManifestError          a manifest document could not be used
    │   ├── SecretMaterialError    a payload carries secret material
    │   └── PayloadTooLargeError   an event or manifest exceeds a size limit
    ├── UnknownKindError           no ResourceSpec registered for a kind
    ├── NotFoundError              a resource / projection that does not exist
    ├── AuthorizationError         tenant or policy forbids the action
    ├── ConflictError
    │   ├── ConcurrencyError       expected_version did not match (nothing written)
    │   └── DuplicateEventError    same event id, different content
    ├── UnavailableError           a backend cannot be reached (retry later)
    │   ├── StoreUnavailableError
    │   └── BusUnavailableError
    ├── StoreError                 any other store failure
    ├── BusError                   any other bus failure
    ├── ConfigError                unreadable or invalid configuration
    ├── WaitTimeoutError           a bounded wait ran out
    └── ResourceFailedError        a waited-for resource ended Ready=False / Failed
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AuthorizationError",
    "BusError",
    "BusUnavailableError",
    "ConcurrencyError",
    "ConfigError",
    "ConflictError",
    "DuplicateEventError",
    "EventplaneError",
    "FieldError",
    "ManifestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ResourceFailedError",
    "SecretMaterialError",
    "StoreError",
    "StoreUnavailableError",
    "UnavailableError",
    "UnknownKindError",
    "ValidationError",
    "WaitTimeoutError",
]


class EventplaneError(Exception):
    """Base of every error Eventplane raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field: where it is, what is wrong, how to fix it."""

    path: str  # dotted path, e.g. "spec.owners[0]"; "" for the whole document
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        hint = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}{self.message}{hint}"


class ValidationError(EventplaneError):
    """Input that cannot be accepted. Carries every field problem found, not just the first."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        detail = "; ".join(str(e) for e in self.errors)
        super().__init__(f"{message}: {detail}" if detail else message)
        self.message = message


class ManifestError(ValidationError):
    """A manifest document (YAML/JSON) is malformed or does not match its spec."""

    def __init__(
        self, message: str, errors: Sequence[FieldError] = (), *, document: int | None = None
    ) -> None:
        self.document = document  # 0-based index in a multi-document stream
        prefix = f"document {document + 1}: " if document is not None else ""
        super().__init__(prefix + message, errors)


class SecretMaterialError(ValidationError):
    """A spec or payload carries what looks like a credential instead of a secretref:// handle."""


class PayloadTooLargeError(ValidationError):
    """An event or manifest is over the configured size limit."""


class UnknownKindError(EventplaneError):
    """No ResourceSpec is registered for the requested kind."""

    def __init__(self, kind: str, known: Sequence[str] = ()) -> None:
        self.kind = kind
        self.known = tuple(known)
        hint = f"; known kinds: {', '.join(self.known)}" if self.known else ""
        super().__init__(f"unknown kind {kind!r}{hint}")


class NotFoundError(EventplaneError):
    """The named resource, projection or migration does not exist."""


class AuthorizationError(EventplaneError):
    """The caller's tenant or policy does not allow this action."""


class ConflictError(EventplaneError):
    """A write conflicts with what is already stored."""


class ConcurrencyError(ConflictError):
    """``append`` found a stream version other than the expected one; nothing was written."""

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream}: expected version {expected}, actual version {actual}; "
            "reload the stream and decide again"
        )


class DuplicateEventError(ConflictError):
    """An event id is already stored with different content (ids are idempotency keys)."""

    def __init__(self, event_id: object) -> None:
        self.event_id = event_id
        super().__init__(
            f"event {event_id} is already stored with different content; "
            "an event id may only be re-used for the identical event"
        )


class UnavailableError(EventplaneError):
    """A backend cannot be reached right now; the operation may be retried."""


class StoreUnavailableError(UnavailableError):
    """The event store's database cannot be reached."""


class BusUnavailableError(UnavailableError):
    """The event bus cannot be reached."""


class StoreError(EventplaneError):
    """Any other event-store failure (schema missing, driver error)."""


class BusError(EventplaneError):
    """Any other bus failure."""


class ConfigError(EventplaneError):
    """Configuration could not be read or is invalid."""


class WaitTimeoutError(EventplaneError):
    """A bounded wait (``--wait``, shutdown) ran out before the condition held."""


class ResourceFailedError(EventplaneError):
    """A resource someone waited for (``evtctl apply --wait``) reached a failing terminal
    condition — ``Ready=False`` for its generation, or ``Failed`` — instead of Ready."""
