"""EventFactory: how intents are born (validated, stamped, never half-built)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.organization.specs import OrganizationSpec
from eventplane.errors import ManifestError, UnknownKindError, ValidationError
from eventplane.event import Category, EventFactory
from eventplane.registry import Registry
from eventplane.spec import load_manifests
from tests.unit.simulate import T0, event_id, org_spec


def test_from_intent_with_a_dict_validates_and_stamps_the_intent() -> None:
    intent = EventFactory.from_intent(
        org_spec(plan="free"), kind="Organization", tenant="acme-co", name="acme", actor="user:ada"
    )
    assert intent.type == "Organization.Requested"
    assert intent.category is Category.INTENT
    assert intent.api_version == "organization/v1"
    assert intent.id.version == 7
    assert intent.metadata.correlation_id == intent.id
    assert intent.metadata.causation_id is None
    assert intent.metadata.generation == 0
    assert intent.metadata.occurred_at.tzinfo is not None
    assert intent.spec == {
        "display_name": "Acme Corp",
        "plan": "free",
        "owners": ["ada@acme.example"],
        "billing_account": None,
    }


def test_from_intent_with_a_spec_instance_needs_no_kind() -> None:
    spec = OrganizationSpec.model_validate(org_spec())
    intent = EventFactory.from_intent(
        spec, tenant="default", name="acme", actor="a", now=T0, event_id=event_id(7)
    )
    assert intent.kind == "Organization"
    assert intent.id == event_id(7)
    assert intent.metadata.occurred_at == T0


def test_from_intent_is_reproducible_with_given_time_and_id() -> None:
    def build() -> object:
        return EventFactory.from_intent(
            org_spec(),
            kind="Organization",
            tenant="default",
            name="acme",
            actor="a",
            now=T0,
            event_id=event_id(1),
        )

    assert build() == build()


def test_from_intent_keeps_a_given_correlation_id_and_labels() -> None:
    intent = EventFactory.from_intent(
        org_spec(),
        kind="Organization",
        tenant="default",
        name="acme",
        actor="a",
        correlation_id=event_id(99),
        labels={"team": "core"},
    )
    assert intent.metadata.correlation_id == event_id(99)
    assert intent.metadata.labels == {"team": "core"}


def test_an_invalid_spec_names_every_bad_field() -> None:
    with pytest.raises(ValidationError) as info:
        EventFactory.from_intent(
            {"plan": "gold", "owners": [], "extra": 1},
            kind="Organization",
            tenant="default",
            name="acme",
            actor="a",
        )
    assert sorted(e.path for e in info.value.errors) == [
        "spec.display_name",
        "spec.extra",
        "spec.owners",
        "spec.plan",
    ]


def test_a_constructed_but_invalid_spec_instance_is_revalidated() -> None:
    sneaky = OrganizationSpec.model_construct(
        display_name="", plan="pro", owners=["x"], billing_account="4111"
    )
    with pytest.raises(ValidationError, match="invalid spec"):
        EventFactory.from_intent(sneaky, tenant="default", name="acme", actor="a")


def test_bad_names_and_missing_kind_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match=r"metadata\.name"):
        EventFactory.from_intent(
            org_spec(), kind="Organization", tenant="default", name="Acme!", actor="a"
        )
    with pytest.raises(ValidationError, match=r"metadata\.tenant"):
        EventFactory.from_intent(org_spec(), kind="Organization", tenant="", name="acme", actor="a")
    with pytest.raises(ValidationError, match="kind"):
        EventFactory.from_intent(org_spec(), tenant="default", name="acme", actor="a")
    with pytest.raises(ValidationError, match="naive"):
        EventFactory.from_intent(
            org_spec(),
            kind="Organization",
            tenant="default",
            name="acme",
            actor="a",
            now=datetime(2026, 1, 1),
        )


def test_an_unknown_kind_is_refused_and_a_passed_registry_is_used() -> None:
    with pytest.raises(UnknownKindError):
        EventFactory.from_intent({}, kind="Galaxy", tenant="default", name="a", actor="a")
    with pytest.raises(UnknownKindError):
        EventFactory.from_intent(
            org_spec(),
            kind="Organization",
            tenant="default",
            name="a",
            actor="a",
            registry=Registry(),
        )


def test_delete_intent_has_no_spec_and_the_deletion_type() -> None:
    intent = EventFactory.delete_intent(
        "Organization",
        tenant="default",
        name="acme",
        actor="a",
        now=datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert intent.type == "Organization.DeletionRequested"
    assert intent.spec is None
    assert intent.category is Category.INTENT
    assert intent.api_version == "organization/v1"


def test_from_manifests_shares_one_correlation_and_honours_manifest_tenants() -> None:
    text = (
        "apiVersion: organization/v1\nkind: Organization\nmetadata: {name: a}\n"
        "spec: {display_name: A, plan: free, owners: [a@x.example]}\n---\n"
        "apiVersion: organization/v1\nkind: Organization\nmetadata: {name: b, tenant: other}\n"
        "spec: {display_name: B, plan: free, owners: [b@x.example]}\n"
    )
    intents = EventFactory.from_manifests(load_manifests(text), actor="a", tenant="default")
    assert [(i.tenant, i.name) for i in intents] == [("default", "a"), ("other", "b")]
    assert intents[1].metadata.correlation_id == intents[0].id
    with pytest.raises(ManifestError, match="selected tenant is 'default'") as info:
        EventFactory.from_manifests(
            load_manifests(text), actor="a", tenant="default", tenant_pinned=True
        )
    assert info.value.document == 1
