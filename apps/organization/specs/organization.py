"""OrganizationSpec: the desired state of an Organization (kind ``Organization``).

Validated by ``EventFactory.from_intent`` and manifest loading; the field descriptions
are what ``evtctl apply`` prompts with and what ``evtctl specs show`` prints.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from apps.organization.models.plans import Plan
from eventplane.security.secrets import SecretRef
from eventplane.spec import ResourceSpec

__all__ = ["OrganizationSpec"]

# Deliberately simple: one '@', no spaces, a dot in the domain. Full RFC 5322 checking
# belongs to the mail system, not to an orchestration spec.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def _email(value: str) -> str:
    if not _EMAIL_RE.match(value) or len(value) > 254:
        raise ValueError(f"{value!r} is not an e-mail address, e.g. 'ada@example.com'")
    return value.lower()


def _unique(values: list[str]) -> list[str]:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"owners are listed twice: {', '.join(dupes)}; list each once")
    return values


Email = Annotated[str, AfterValidator(_email)]


class OrganizationSpec(ResourceSpec):
    """A customer organization: who owns it and which plan it is on."""

    KIND: ClassVar[str] = "Organization"
    API_VERSION: ClassVar[str] = "organization/v1"

    display_name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=128,
            description="Human-readable name shown in dashboards, e.g. 'Acme Corp'",
        ),
    ]
    plan: Annotated[
        Plan, Field(description="Billing plan: free (3 seats), pro (25) or enterprise (1000)")
    ]
    owners: Annotated[
        list[Email],
        AfterValidator(_unique),
        Field(
            min_length=1,
            max_length=1000,
            description="E-mail addresses of the owners (at least one; comma-separated "
            "when prompted)",
        ),
    ]
    billing_account: Annotated[
        SecretRef | None,
        Field(description="Opaque billing handle, e.g. 'secretref://billing/acme' (optional)"),
    ] = None
