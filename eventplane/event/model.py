"""The Event model and the resource bookkeeping it carries.

Pure layer: no I/O. Everything else in Eventplane moves ``Event`` instances around:
``EventFactory`` creates intents, the mutate helpers create internal/fact events,
the store assigns ``stream_version``/``position``/``recorded_at``, the bus carries
them as CloudEvents (``eventplane.event.cloudevents``), and ``fold`` turns a stream
of them into a ``ResourceState``.

Events are frozen pydantic models. Trusted rows coming back from the store are
rebuilt with ``Event.from_trusted`` (no re-validation) because validating every
row of a 100k-event scan costs more than reading it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from eventplane.utils import DNS_LABEL_RE, KIND_RE, parse_time

__all__ = [
    "Category",
    "Condition",
    "ConditionStatus",
    "Event",
    "EventMetadata",
    "ResourceStatus",
    "stream_id",
]

# Limits that keep one event within what every backend handles comfortably.
MAX_LABELS = 64


class Category(StrEnum):
    """What an event is: an agent's wish, runtime bookkeeping, or something that happened."""

    INTENT = "intent"
    INTERNAL = "internal"
    FACT = "fact"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


def _camel_case_reason(value: str) -> str:
    if not value or not value[0].isupper() or not value.isalnum():
        raise ValueError(
            f"condition reason {value!r} must be CamelCase alphanumerics, e.g. 'SeatLimitExceeded'"
        )
    return value


CamelCaseReason = Annotated[str, AfterValidator(_camel_case_reason)]
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_RE.pattern, max_length=63)]
Kind = Annotated[str, Field(pattern=KIND_RE.pattern, max_length=63)]


class _Frozen(BaseModel):
    # NaN and the infinities are not JSON: every encoder (the stores' bodies, CloudEvents)
    # would write them as null, and the event would read back as something else.
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_timedelta="float", allow_inf_nan=False
    )


class Condition(_Frozen):
    """A Kubernetes-style condition. ``last_transition_time`` moves only when ``status`` moves
    (the mutate helpers enforce that, taking the time from the trigger for determinism)."""

    type: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=63)]
    status: ConditionStatus
    reason: CamelCaseReason
    message: Annotated[str, Field(max_length=4096)] = ""
    observed_generation: Annotated[int, Field(ge=0)] = 0
    last_transition_time: AwareDatetime

    def same_as(self, other: Condition) -> bool:
        """Equal ignoring ``last_transition_time`` (Crossplane's ``Equal`` semantics)."""
        return (
            self.type == other.type
            and self.status == other.status
            and self.reason == other.reason
            and self.message == other.message
            and self.observed_generation == other.observed_generation
        )


class ResourceStatus(_Frozen):
    """The observed side of a resource, as the runtime last recorded it (a full snapshot)."""

    phase: str | None = None
    observed_generation: Annotated[int, Field(ge=0)] = 0
    message: str = ""
    conditions: tuple[Condition, ...] = ()
    attempts: Annotated[int, Field(ge=0)] = 0  # consecutive failed reconcile attempts
    last_error: str | None = None

    def condition(self, type_: str) -> Condition | None:
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None


class EventMetadata(_Frozen):
    """Where an event comes from and where the store put it."""

    generation: Annotated[int, Field(ge=0)] = 0
    correlation_id: UUID
    causation_id: UUID | None = None
    actor: Annotated[str, Field(min_length=1, max_length=256)]
    source: Annotated[str, Field(min_length=1, max_length=512)]
    labels: dict[str, str] = Field(default_factory=dict)
    occurred_at: AwareDatetime
    signature: str | None = None  # Ed25519 over the intent's canonical form (intents only)
    # Assigned by the store on append; None until then.
    stream_version: Annotated[int, Field(ge=1)] | None = None
    position: Annotated[int, Field(ge=1)] | None = None
    recorded_at: AwareDatetime | None = None

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels are allowed, got {len(value)}")
        return value


class Event(_Frozen):
    """One immutable fact about one resource stream ``(tenant, kind, name)``."""

    id: UUID  # UUIDv7, time-ordered; the idempotency key everywhere
    tenant: DnsLabel
    kind: Kind
    name: DnsLabel
    type: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*\.[A-Z][A-Za-z0-9]*$", max_length=127)]
    category: Category
    api_version: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]*/v[0-9]+[a-z0-9]*$")]
    spec: dict[str, JsonValue] | None = None  # desired state (intents)
    data: dict[str, JsonValue] = Field(default_factory=dict)  # payload (internal / fact)
    metadata: EventMetadata
    # Resource bookkeeping written by the mutate helpers; None means "unchanged".
    status: ResourceStatus | None = None
    finalizers: tuple[str, ...] | None = None
    deletion_requested_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _type_matches_kind(self) -> Self:
        if self.type.partition(".")[0] != self.kind:
            raise ValueError(f"type {self.type!r} must start with the kind: '{self.kind}.<Reason>'")
        return self

    @property
    def reason(self) -> str:
        """The part of ``type`` after the kind, e.g. ``Provisioned``."""
        return self.type.partition(".")[2]

    @property
    def stream(self) -> tuple[str, str, str]:
        return (self.tenant, self.kind, self.name)

    def recorded(self, *, stream_version: int, position: int, recorded_at: datetime) -> Event:
        """A copy carrying the store-assigned fields (used by store backends).

        Built directly, like ``model_copy`` but at under half its cost: the store calls this
        once per appended event, and the values come from the database (no validation).
        """
        old = self.metadata
        values = old.__dict__.copy()
        values["stream_version"] = stream_version
        values["position"] = position
        values["recorded_at"] = recorded_at
        meta = construct_trusted(
            EventMetadata, values, old.__pydantic_fields_set__ | _STORED_FIELDS
        )
        values = self.__dict__.copy()
        values["metadata"] = meta
        return construct_trusted(Event, values, self.__pydantic_fields_set__ | _METADATA_FIELD)

    def content_equals(self, other: Event) -> bool:
        """Same event ignoring store-assigned fields: what idempotent re-append compares."""
        return self.unrecorded() == other.unrecorded()

    def unrecorded(self) -> Event:
        meta = self.metadata
        if meta.stream_version is None and meta.position is None and meta.recorded_at is None:
            return self
        return copy_trusted(
            self,
            {
                "metadata": copy_trusted(
                    meta, {"stream_version": None, "position": None, "recorded_at": None}
                )
            },
        )

    def to_document(self) -> dict[str, Any]:
        """A JSON-ready dict (times as RFC 3339 strings, UUIDs as strings)."""
        return self.model_dump(mode="json", exclude_none=False)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Event:
        """Validate a dict produced by ``to_document`` (untrusted input)."""
        return cls.model_validate(doc)

    @classmethod
    def from_trusted(
        cls,
        *,
        id: UUID,
        tenant: str,
        kind: str,
        name: str,
        type: str,
        category: str,
        api_version: str,
        spec: dict[str, Any] | None,
        data: dict[str, Any],
        metadata: dict[str, Any],
        status: dict[str, Any] | None,
        finalizers: list[str] | tuple[str, ...] | None,
        deletion_requested_at: datetime | str | None,
    ) -> Event:
        """Rebuild an event the store wrote itself, skipping validation (hot read path).

        ``metadata`` must hold every EventMetadata field with the right Python types
        except times, which may be RFC 3339 strings.
        """
        meta = dict(metadata)
        for key in ("occurred_at", "recorded_at"):
            if isinstance(meta.get(key), str):
                meta[key] = parse_time(meta[key])
        for key in ("correlation_id", "causation_id"):
            if isinstance(meta.get(key), str):
                meta[key] = UUID(meta[key])
        status_model = None
        if status is not None:
            conds = tuple(
                Condition.model_construct(
                    type=c["type"],
                    status=ConditionStatus(c["status"]),
                    reason=c["reason"],
                    message=c.get("message", ""),
                    observed_generation=c.get("observed_generation", 0),
                    last_transition_time=parse_time(c["last_transition_time"])
                    if isinstance(c["last_transition_time"], str)
                    else c["last_transition_time"],
                )
                for c in status.get("conditions", ())
            )
            status_model = ResourceStatus.model_construct(
                phase=status.get("phase"),
                observed_generation=status.get("observed_generation", 0),
                message=status.get("message", ""),
                conditions=conds,
                attempts=status.get("attempts", 0),
                last_error=status.get("last_error"),
            )
        if isinstance(deletion_requested_at, str):
            deletion_requested_at = parse_time(deletion_requested_at)
        return cls.model_construct(
            id=id,
            tenant=tenant,
            kind=kind,
            name=name,
            type=type,
            category=Category(category),
            api_version=api_version,
            spec=spec,
            data=data,
            metadata=EventMetadata.model_construct(**meta),
            status=status_model,
            finalizers=tuple(finalizers) if finalizers is not None else None,
            deletion_requested_at=deletion_requested_at,
        )


_M = TypeVar("_M", bound=BaseModel)
_STORED_FIELDS = frozenset(("stream_version", "position", "recorded_at"))
_METADATA_FIELD = frozenset(("metadata",))
# The slot setters of BaseModel, bound once: calling a slot descriptor directly skips the
# by-name attribute lookup of ``object.__setattr__`` (a fifth of construct_trusted's cost).
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def copy_trusted(model: _M, updates: dict[str, Any]) -> _M:
    """``model.model_copy(update=updates)`` for trusted values, at a third of the cost.

    The store calls this once per appended event (``recorded``), so it is on the append hot
    path; the values come from the database, never from a caller, hence no validation.
    """
    values = dict(model.__dict__)
    values.update(updates)
    return construct_trusted(type(model), values, model.__pydantic_fields_set__ | updates.keys())


def construct_trusted(cls: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """A model instance from trusted, complete field values (what ``model_construct`` ends
    with, minus its per-field default handling). Used by ``recorded``/``copy_trusted`` and
    by the stores when they rebuild rows (their hot paths); never for caller input."""
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, fields_set)
    _set_extra(model, None)
    _set_private(model, None)
    return model


def stream_id(tenant: str, kind: str, name: str) -> str:
    """Human-readable stream name used in messages and logs: ``tenant/Kind/name``."""
    return f"{tenant}/{kind}/{name}"
