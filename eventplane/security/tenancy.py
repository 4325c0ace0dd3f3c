"""Tenancy at the bus boundary: a message's subject must agree with the event it carries.

Pure security layer. The controller runtime (and any consumer of bus deliveries) calls
``check_subject_tenant`` on every delivery before it trusts the event: NATS permissions decide
who may publish on ``eventplane.<tenant>.…``, so the subject is the authenticated tenant, and
an event claiming another tenant, kind or category than its subject is a forgery (tenant
``acme`` publishing on its own subject an event for ``globex``). The subject layout is the
bus's (``eventplane.bus.base.subject_for``); it is parsed here, below the bus, so the check
does not depend on a bus backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventplane.errors import AuthorizationError
from eventplane.event.model import Category, Event
from eventplane.utils import DNS_LABEL_RE

__all__ = [
    "SUBJECT_PREFIX",
    "SubjectMismatchError",
    "SubjectParts",
    "check_subject_tenant",
    "parse_subject",
]

SUBJECT_PREFIX = "eventplane"
_CATEGORIES = frozenset(c.value for c in Category)


class SubjectMismatchError(AuthorizationError):
    """A bus subject is malformed or names another tenant/kind/category than its event."""

    def __init__(self, subject: str, field: str, message: str) -> None:
        self.subject = subject
        self.field = field  # "subject", "tenant", "kind" or "category"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SubjectParts:
    tenant: str
    kind: str  # lowercased, as on the wire
    category: Category


def parse_subject(subject: str) -> SubjectParts:
    """Split ``eventplane.<tenant>.<kind>.<category>``; ``SubjectMismatchError`` if malformed."""
    tokens = subject.split(".") if isinstance(subject, str) else []
    if (
        len(tokens) != 4
        or tokens[0] != SUBJECT_PREFIX
        or not DNS_LABEL_RE.match(tokens[1])
        or not tokens[2].isascii()
        or not tokens[2].isalnum()
        or tokens[2] != tokens[2].lower()
        or tokens[3] not in _CATEGORIES
    ):
        raise SubjectMismatchError(
            str(subject),
            "subject",
            f"subject {subject!r} is not eventplane.<tenant>.<kind>.<intent|internal|fact>",
        )
    return SubjectParts(tokens[1], tokens[2], Category(tokens[3]))


def check_subject_tenant(subject: str, event: Event) -> SubjectParts:
    """Reject an event whose tenant, kind or category differs from its subject's."""
    parts = parse_subject(subject)
    if parts.tenant != event.tenant:
        raise SubjectMismatchError(
            subject,
            "tenant",
            f"event {event.id} claims tenant {event.tenant!r} but arrived on {subject!r} "
            f"(tenant {parts.tenant!r}); a tenant may only send events for itself",
        )
    if parts.kind != event.kind.lower():
        raise SubjectMismatchError(
            subject,
            "kind",
            f"event {event.id} is a {event.kind} event but arrived on {subject!r} "
            f"(kind {parts.kind!r})",
        )
    if parts.category is not event.category:
        raise SubjectMismatchError(
            subject,
            "category",
            f"event {event.id} is a {event.category.value} event but arrived on {subject!r} "
            f"(category {parts.category.value!r})",
        )
    return parts
