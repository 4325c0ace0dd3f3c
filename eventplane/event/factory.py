"""EventFactory: the only way an intent is born.

Pure layer, at the edge where agents speak: ``evtctl apply``/``delete``, scripts and
LLM tools call ``EventFactory.from_intent`` / ``from_manifest`` / ``delete_intent``;
the runtime later stores the intent through ``mutate.admit_intent``, which assigns the
real generation. Intents are validated against the kind's registered ``ResourceSpec``
(the default registry unless one is passed), stamped with a UUIDv7 id, a correlation id
(the intent's own id unless the caller continues a conversation), ``occurred_at`` and the
spec's ``api_version``, and refused (``SecretMaterialError`` naming the field) when the
spec or labels carry secret material. This is an edge: it may read the clock and make
random ids; pass ``now``/``event_id`` for reproducible output.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import pydantic

from eventplane.errors import FieldError, ManifestError, ValidationError
from eventplane.event.model import Category, Event, EventMetadata
from eventplane.security.secrets import ensure_event_has_no_secret_material
from eventplane.spec import Manifest, ResourceSpec, SpecLookup, validation_errors
from eventplane.utils import DNS_LABEL_RE, is_dns_label, utcnow, uuid7

__all__ = ["DEFAULT_SOURCE", "EventFactory"]

DEFAULT_SOURCE = "urn:eventplane:api"


def _lookup(registry: SpecLookup | None) -> SpecLookup:
    if registry is not None:
        return registry
    from eventplane.registry import get_default_registry

    return get_default_registry()


def _check_names(tenant: str, name: str, actor: str) -> None:
    problems = []
    for path, value in (("metadata.tenant", tenant), ("metadata.name", name)):
        if not isinstance(value, str) or not is_dns_label(value):
            problems.append(
                FieldError(
                    path,
                    f"{value!r} is not a DNS-1123 label",
                    f"use 1-63 lowercase letters, digits and '-' ({DNS_LABEL_RE.pattern})",
                )
            )
    if not actor or len(actor) > 256:
        problems.append(FieldError("actor", "must be 1-256 characters", "say who is asking"))
    if problems:
        raise ValidationError("cannot build the intent", problems)


class EventFactory:
    """Builds intent events. Stateless; every method is a classmethod."""

    @classmethod
    def from_intent(
        cls,
        spec: ResourceSpec | Mapping[str, Any],
        *,
        tenant: str,
        name: str,
        actor: str,
        kind: str | None = None,
        source: str = DEFAULT_SOURCE,
        labels: Mapping[str, str] | None = None,
        correlation_id: UUID | None = None,
        now: datetime | None = None,
        event_id: UUID | None = None,
        registry: SpecLookup | None = None,
    ) -> Event:
        """A ``<Kind>.Requested`` intent for ``spec`` (a ResourceSpec, or a dict plus ``kind``).

        Raises ``ValidationError`` naming each bad field (paths start with ``spec.``) and
        ``UnknownKindError`` for an unregistered kind.
        """
        if isinstance(spec, ResourceSpec):
            kind = kind or spec.KIND
            if kind != spec.KIND:
                raise ValidationError(
                    "cannot build the intent",
                    [
                        FieldError(
                            "kind",
                            f"{kind!r} does not match the spec's kind {spec.KIND!r}",
                            "drop kind=",
                        )
                    ],
                )
            raw: Mapping[str, Any] = spec.model_dump(mode="json", warnings=False)
        else:
            if kind is None:
                raise ValidationError(
                    "cannot build the intent",
                    [
                        FieldError(
                            "kind",
                            "required when the spec is a plain dict",
                            "pass kind='Organization'",
                        )
                    ],
                )
            raw = spec
        spec_cls = _lookup(registry).spec_for(kind)
        _check_names(tenant, name, actor)
        # Re-validate even a ResourceSpec instance: it might be an unregistered look-alike
        # class or have been built with model_construct.
        try:
            validated = spec_cls.model_validate(dict(raw))
        except pydantic.ValidationError as exc:
            raise ValidationError(
                f"{kind} {name!r} has an invalid spec", validation_errors(spec_cls, exc)
            ) from exc
        return cls._build(
            kind=kind,
            reason="Requested",
            api_version=spec_cls.API_VERSION,
            spec=validated.to_spec_dict(),
            tenant=tenant,
            name=name,
            actor=actor,
            source=source,
            labels=labels,
            correlation_id=correlation_id,
            now=now,
            event_id=event_id,
        )

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        *,
        actor: str,
        tenant: str,
        source: str = DEFAULT_SOURCE,
        correlation_id: UUID | None = None,
        now: datetime | None = None,
        event_id: UUID | None = None,
        registry: SpecLookup | None = None,
    ) -> Event:
        """The intent for one loaded manifest; ``tenant`` is used unless the manifest names
        one (callers that pin a tenant check the two agree before calling)."""
        return cls.from_intent(
            manifest.spec,
            tenant=manifest.tenant or tenant,
            name=manifest.name,
            actor=actor,
            kind=manifest.kind,
            source=source,
            labels=manifest.labels,
            correlation_id=correlation_id,
            now=now,
            event_id=event_id,
            registry=registry,
        )

    @classmethod
    def from_manifests(
        cls,
        manifests: list[Manifest],
        *,
        actor: str,
        tenant: str,
        tenant_pinned: bool = False,
        source: str = DEFAULT_SOURCE,
        now: datetime | None = None,
        registry: SpecLookup | None = None,
    ) -> list[Event]:
        """One intent per manifest, all sharing one correlation id (one ``apply``).

        With ``tenant_pinned`` (the caller chose the tenant explicitly) a manifest naming
        another tenant is an error rather than silently moving the resource.
        """
        if tenant_pinned:
            for manifest in manifests:
                if manifest.tenant is not None and manifest.tenant != tenant:
                    raise ManifestError(
                        "tenant mismatch",
                        [
                            FieldError(
                                "metadata.tenant",
                                f"is {manifest.tenant!r} but the selected tenant is {tenant!r}",
                                f"remove metadata.tenant or select tenant {manifest.tenant!r}",
                            )
                        ],
                        document=manifest.document,
                    )
        intents: list[Event] = []
        for manifest in manifests:
            intents.append(
                cls.from_manifest(
                    manifest,
                    actor=actor,
                    tenant=tenant,
                    source=source,
                    correlation_id=intents[0].id if intents else None,
                    now=now,
                    registry=registry,
                )
            )
        return intents

    @classmethod
    def delete_intent(
        cls,
        kind: str,
        *,
        tenant: str,
        name: str,
        actor: str,
        source: str = DEFAULT_SOURCE,
        labels: Mapping[str, str] | None = None,
        correlation_id: UUID | None = None,
        now: datetime | None = None,
        event_id: UUID | None = None,
        registry: SpecLookup | None = None,
    ) -> Event:
        """A ``<Kind>.DeletionRequested`` intent (no spec)."""
        spec_cls = _lookup(registry).spec_for(kind)
        _check_names(tenant, name, actor)
        return cls._build(
            kind=kind,
            reason="DeletionRequested",
            api_version=spec_cls.API_VERSION,
            spec=None,
            tenant=tenant,
            name=name,
            actor=actor,
            source=source,
            labels=labels,
            correlation_id=correlation_id,
            now=now,
            event_id=event_id,
        )

    @staticmethod
    def _build(
        *,
        kind: str,
        reason: str,
        api_version: str,
        spec: dict[str, Any] | None,
        tenant: str,
        name: str,
        actor: str,
        source: str,
        labels: Mapping[str, str] | None,
        correlation_id: UUID | None,
        now: datetime | None,
        event_id: UUID | None,
    ) -> Event:
        if now is not None and now.tzinfo is None:
            raise ValidationError(
                "cannot build the intent",
                [FieldError("now", "naive datetime", "pass a timezone-aware UTC datetime")],
            )
        ident = event_id or uuid7()
        try:
            event = Event(
                id=ident,
                tenant=tenant,
                kind=kind,
                name=name,
                type=f"{kind}.{reason}",
                category=Category.INTENT,
                api_version=api_version,
                spec=spec,
                metadata=EventMetadata(
                    generation=0,  # the runtime assigns the real one (mutate.admit_intent)
                    correlation_id=correlation_id or ident,
                    actor=actor,
                    source=source,
                    labels=dict(labels or {}),
                    occurred_at=now or utcnow(),
                ),
            )
        except pydantic.ValidationError as exc:
            raise ValidationError(
                "cannot build the intent",
                [
                    FieldError(".".join(str(p) for p in err["loc"]), err["msg"])
                    for err in exc.errors(include_url=False)
                ],
            ) from exc
        # Secrets never enter the immutable log: refuse, naming the field, before the
        # intent exists anywhere (the runtime checks again on intake).
        ensure_event_has_no_secret_material(event)
        return event
