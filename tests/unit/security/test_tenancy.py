"""Tenancy at the bus boundary: the subject a message arrived on must match its event."""

from __future__ import annotations

import pytest

from eventplane.errors import AuthorizationError
from eventplane.event.model import Category
from eventplane.security import SubjectMismatchError, check_subject_tenant, parse_subject
from tests.unit.security.helpers import intent


def test_event_on_its_own_subject_passes() -> None:
    parts = check_subject_tenant("eventplane.acme.organization.intent", intent(tenant="acme"))

    assert (parts.tenant, parts.kind, parts.category) == ("acme", "organization", Category.INTENT)


def test_event_claiming_another_tenant_than_its_subject_is_rejected() -> None:
    with pytest.raises(SubjectMismatchError) as info:
        check_subject_tenant("eventplane.acme.organization.intent", intent(tenant="globex"))

    assert info.value.field == "tenant"
    assert isinstance(info.value, AuthorizationError)
    assert "claims tenant 'globex'" in str(info.value)


def test_event_of_another_kind_than_its_subject_is_rejected() -> None:
    with pytest.raises(SubjectMismatchError) as info:
        check_subject_tenant("eventplane.acme.project.intent", intent(tenant="acme"))

    assert info.value.field == "kind"


def test_event_of_another_category_than_its_subject_is_rejected() -> None:
    with pytest.raises(SubjectMismatchError) as info:
        check_subject_tenant("eventplane.acme.organization.fact", intent(tenant="acme"))

    assert info.value.field == "category"


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "eventplane",
        "eventplane.acme.organization",
        "eventplane.acme.organization.intent.extra",
        "other.acme.organization.intent",
        "eventplane.ACME.organization.intent",
        "eventplane.acme.Organization.intent",
        "eventplane.*.organization.intent",
        "eventplane.acme.>.intent",
        "eventplane.acme.organization.command",
    ],
)
def test_malformed_subject_is_rejected(subject: str) -> None:
    with pytest.raises(SubjectMismatchError) as info:
        parse_subject(subject)

    assert info.value.field == "subject"
