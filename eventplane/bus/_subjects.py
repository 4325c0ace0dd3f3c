"""Subject filters for the backends that match subjects themselves (memory, embedded).

Private to ``eventplane.bus``. NATS matches filters on the server; the in-memory and
embedded SQL buses parse a filter once into a ``SubjectFilter`` with NATS semantics
(``*`` = exactly one token, ``>`` = one or more trailing tokens) restricted to the only
subjects Eventplane publishes: ``eventplane.<tenant>.<kind>.<category>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventplane.bus.base import SUBJECT_PREFIX
from eventplane.errors import FieldError, ValidationError

__all__ = ["SubjectFilter", "parse_filter", "split_subject"]

_TOKENS = ("tenant", "kind", "category")


@dataclass(frozen=True, slots=True)
class SubjectFilter:
    """One consumer filter: None in a slot means "any value"."""

    tenant: str | None
    kind: str | None  # lowercased, as it appears in subjects
    category: str | None

    def matches(self, tenant: str, kind: str, category: str) -> bool:
        return (
            (self.tenant is None or self.tenant == tenant)
            and (self.kind is None or self.kind == kind)
            and (self.category is None or self.category == category)
        )


def parse_filter(subject: str) -> SubjectFilter:
    """Parse a consumer filter such as ``eventplane.acme.*.fact`` or ``eventplane.acme.>``.

    Raises ValidationError naming ``filter_subject`` for a filter that can never match an
    Eventplane subject, so a typo fails at subscribe time instead of silently starving.
    """
    tokens = subject.split(".")
    problem = ""
    if tokens[0] != SUBJECT_PREFIX:
        problem = f"must start with '{SUBJECT_PREFIX}.'"
    elif any(not t for t in tokens):
        problem = "has an empty token"
    elif ">" in tokens[:-1]:
        problem = "'>' may only be the last token"
    elif len(tokens) > 4 or (len(tokens) < 4 and tokens[-1] != ">"):
        problem = "must have 4 tokens (eventplane.<tenant>.<kind>.<category>) or end in '>'"
    elif len(tokens) > 2 and tokens[2] != tokens[2].lower():
        problem = "names the kind in upper case; subjects carry it lowercased"
    if problem:
        raise ValidationError(
            "bad subject filter",
            [
                FieldError(
                    "filter_subject",
                    f"{subject!r} {problem}",
                    "use subject_filter(tenant, kind, category), e.g. 'eventplane.*.*.fact'",
                )
            ],
        )
    slots: list[str | None] = [None, None, None]
    for i, token in enumerate(tokens[1:]):
        if token == ">":
            break
        if token != "*":
            slots[i] = token
    return SubjectFilter(tenant=slots[0], kind=slots[1], category=slots[2])


def split_subject(subject: str) -> tuple[str, str, str]:
    """``eventplane.acme.organization.fact`` -> ``("acme", "organization", "fact")``."""
    _, tenant, kind, category = subject.split(".")
    return tenant, kind, category
