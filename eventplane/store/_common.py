"""What both store backends share: batch checks, tenant checks, the event ⇄ row mapping.

Private to ``eventplane.store``; ``sqlite.py`` and ``postgres.py`` call it on every
append and read. Kept free of driver imports so the mapping is testable on its own.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

from eventplane.errors import (
    AuthorizationError,
    ConflictError,
    DuplicateEventError,
    FieldError,
    PayloadTooLargeError,
    ValidationError,
)
from eventplane.event.cloudevents import MAX_EVENT_BYTES, encode
from eventplane.event.model import (
    Category,
    Condition,
    ConditionStatus,
    Event,
    EventMetadata,
    construct_trusted,
)
from eventplane.event.model import ResourceStatus as _ResourceStatus
from eventplane.store.base import ANY, NO_STREAM, EventFilter, ExpectedVersion, StreamState
from eventplane.utils import format_time, json_dumps, parse_time

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EventValues",
    "build_events",
    "check_read_scope",
    "check_stored_batch",
    "event_from_row",
    "expected_as_int",
    "prepare_batch",
    "scoped_filter",
]

DEFAULT_MAX_EVENT_BYTES = MAX_EVENT_BYTES
_R = TypeVar("_R")
# Key attributes travel next to the body on the wire; below this much headroom the body
# alone decides, above it the exact CloudEvents size is computed (rare, large events only).
_HEADER_ALLOWANCE = 4096


class EventValues(NamedTuple):
    """The columns of one event as a backend inserts them (body pre-encoded as JSON).
    A NamedTuple: built once per appended event, where a frozen dataclass's __init__
    cost as much as encoding the body."""

    event: Event
    body: bytes


def expected_as_int(expected_version: ExpectedVersion) -> int:
    """-1 for ANY, 0 for NO_STREAM, else the version itself (validated)."""
    if expected_version is ANY:
        return -1
    if expected_version is NO_STREAM:
        return 0
    if isinstance(expected_version, StreamState | bool):
        raise ValidationError(
            "bad expected_version",
            [FieldError("expected_version", f"unsupported value {expected_version!r}")],
        )
    if not isinstance(expected_version, int) or expected_version < 0:
        raise ValidationError(
            "bad expected_version",
            [
                FieldError(
                    "expected_version",
                    f"{expected_version!r} is not a stream version",
                    "pass an int >= 0 (the version you read), NO_STREAM or ANY",
                )
            ],
        )
    return expected_version


def _body(event: Event) -> dict[str, Any]:
    meta = event.metadata
    return {
        "api_version": event.api_version,
        "source": meta.source,
        "labels": meta.labels,
        "signature": meta.signature,
        "spec": event.spec,
        "data": event.data,
        "status": event.status.model_dump(mode="json") if event.status is not None else None,
        "finalizers": list(event.finalizers) if event.finalizers is not None else None,
        "deletion_requested_at": format_time(event.deletion_requested_at)
        if event.deletion_requested_at is not None
        else None,
    }


def prepare_batch(
    events: Sequence[Event], *, store_tenant: str | None, max_event_bytes: int
) -> list[EventValues]:
    """Check a batch before any I/O: one stream, the store's tenant, unique ids, size limit."""
    if not events:
        return []
    first = events[0]
    if not isinstance(first, Event):
        raise ValidationError(
            "append takes Event instances",
            [FieldError("events[0]", f"got {type(first).__name__}")],
        )
    if store_tenant is not None and first.tenant != store_tenant:
        raise AuthorizationError(
            f"this store is scoped to tenant {store_tenant!r} and may not append to tenant "
            f"{first.tenant!r}; open the store for that tenant or with tenant=None"
        )
    seen: set[UUID] = set()
    values: list[EventValues] = []
    tenant, kind, name = first.tenant, first.kind, first.name
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise ValidationError(
                "append takes Event instances",
                [FieldError(f"events[{index}]", f"got {type(event).__name__}")],
            )
        if event.name != name or event.kind != kind or event.tenant != tenant:
            raise ValidationError(
                "one append writes one stream",
                [
                    FieldError(
                        f"events[{index}]",
                        f"stream {event.tenant}/{event.kind}/{event.name} differs from "
                        f"{first.tenant}/{first.kind}/{first.name}",
                        "append each stream's events in its own call",
                    )
                ],
            )
        if event.id in seen:
            raise ValidationError(
                "duplicate event id in one batch",
                [FieldError(f"events[{index}].id", f"{event.id} appears twice")],
            )
        seen.add(event.id)
        try:
            body = json_dumps(_body(event))
        except TypeError as exc:  # orjson.JSONEncodeError: nothing JSON can carry exactly
            raise ValidationError(
                "an event cannot be stored",
                [
                    FieldError(
                        f"events[{index}]",
                        f"event {event.id} ({event.type}): {exc}",
                        "keep integers within 64 bits (send larger ones as strings) and "
                        "nesting under 255 levels",
                    )
                ],
            ) from exc
        if len(body) + _HEADER_ALLOWANCE > max_event_bytes:
            size = len(encode(event))
            if size > max_event_bytes:
                raise PayloadTooLargeError(
                    f"event {event.id} ({event.type}) is {size} bytes, over the "
                    f"{max_event_bytes}-byte limit",
                    [
                        FieldError(
                            f"events[{index}]",
                            "payload too large",
                            "keep large content outside the event and store a reference",
                        )
                    ],
                )
        values.append(EventValues(event, body))
    return values


def check_stored_batch(
    incoming: Sequence[Event], stored: dict[UUID, Event], *, all_stored: bool
) -> list[Event]:
    """Decide an append whose ids are (partly) stored already.

    Same content → the stored records (nothing written). Different content →
    DuplicateEventError. A batch mixing stored and new events is refused as a whole:
    the store never writes part of a batch, and guessing which version the new tail
    should be checked against would hide a caller bug.
    """
    for event in incoming:
        existing = stored.get(event.id)
        if existing is not None and not existing.content_equals(event):
            raise DuplicateEventError(event.id)
    if not all_stored:
        new = [str(e.id) for e in incoming if e.id not in stored]
        raise ConflictError(
            f"batch mixes {len(stored)} already stored event(s) with {len(new)} new one(s) "
            f"(first new id {new[0]}); nothing was written — append the new events on their own"
        )
    return [stored[e.id] for e in incoming]


def check_read_scope(store_tenant: str | None, tenant: str) -> None:
    if store_tenant is not None and tenant != store_tenant:
        raise AuthorizationError(
            f"this store is scoped to tenant {store_tenant!r} and may not read tenant "
            f"{tenant!r}; open the store for that tenant or with tenant=None"
        )


def scoped_filter(store_tenant: str | None, flt: EventFilter | None) -> EventFilter:
    """The filter a read_all really runs: the store's tenant wins, a different one is refused."""
    flt = flt or EventFilter()
    if store_tenant is None:
        return flt
    if flt.tenant is not None and flt.tenant != store_tenant:
        check_read_scope(store_tenant, flt.tenant)
    if flt.tenant == store_tenant:
        return flt
    return EventFilter(
        tenant=store_tenant,
        kinds=flt.kinds,
        names=flt.names,
        categories=flt.categories,
        types=flt.types,
        actors=flt.actors,
    )


_CATEGORIES = {c.value: c for c in Category}
_CONDITION_STATUS = {c.value: c for c in ConditionStatus}
# Every stored event has every field set. One set per model class serves them all: the
# models are frozen, so pydantic never adds to it in place (model_copy and our own copies
# make new ones), and a scan saves two allocations per row.
_EVENT_FIELDS = set(Event.model_fields)
_META_FIELDS = set(EventMetadata.model_fields)


def _status(raw: dict[str, Any]) -> _ResourceStatus:
    conds = tuple(
        Condition.model_construct(
            type=c["type"],
            status=_CONDITION_STATUS[c["status"]],
            reason=c["reason"],
            message=c.get("message", ""),
            observed_generation=c.get("observed_generation", 0),
            last_transition_time=parse_time(c["last_transition_time"]),
        )
        for c in raw.get("conditions", ())
    )
    return _ResourceStatus.model_construct(
        phase=raw.get("phase"),
        observed_generation=raw.get("observed_generation", 0),
        message=raw.get("message", ""),
        conditions=conds,
        attempts=raw.get("attempts", 0),
        last_error=raw.get("last_error"),
    )


def event_from_row(row: Sequence[Any], body: dict[str, Any]) -> Event:
    """Rebuild a stored event without validation (the store wrote it; the hot read path).

    ``row`` holds the event table's columns in the backend's ``_COLUMNS`` order with native
    Python types (UUIDs, aware datetimes); its last column, the stored body, is ignored in
    favour of ``body``, already decoded. Equivalent to ``Event.from_trusted`` minus its
    generic conversions — a full scan spends most of its time here, so the row is unpacked
    in one step (15 subscripts cost more) and nothing is looked up twice.
    """
    (
        id, tenant, kind, name, stream_version, position, type, category, actor,
        correlation_id, causation_id, generation, occurred_at, recorded_at, _,
    ) = row  # fmt: skip
    status = body["status"]
    finalizers = body["finalizers"]
    deletion = body["deletion_requested_at"]
    meta = construct_trusted(
        EventMetadata,
        {
            "generation": generation,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "actor": actor,
            "source": body["source"],
            "labels": body["labels"],
            "occurred_at": occurred_at,
            "signature": body["signature"],
            "stream_version": stream_version,
            "position": position,
            "recorded_at": recorded_at,
        },
        _META_FIELDS,
    )
    return construct_trusted(
        Event,
        {
            "id": id,
            "tenant": tenant,
            "kind": kind,
            "name": name,
            "type": type,
            "category": _CATEGORIES[category],
            "api_version": body["api_version"],
            "spec": body["spec"],
            "data": body["data"],
            "metadata": meta,
            "status": _status(status) if status is not None else None,
            "finalizers": tuple(finalizers) if finalizers is not None else None,
            "deletion_requested_at": parse_time(deletion) if deletion is not None else None,
        },
        _EVENT_FIELDS,
    )


def build_events(rows: Iterable[_R], build: Callable[[_R], Event]) -> list[Event]:
    """``[build(r) for r in rows]`` with the cyclic garbage collector paused.

    A page of 1,000 rows allocates ~10,000 container objects (body dicts, model dicts,
    field sets) that all stay alive, so the collector runs a dozen young-generation passes
    per page and keeps promoting the page into older generations, which then get scanned
    too — in the profile that was 2-3x the cost of building the events themselves. None of
    these objects form cycles, so pausing collection while the page is built loses nothing;
    the collector runs as usual on its next trigger after the page. Synchronous (no await
    inside), so no other task runs while collection is paused.
    """
    if not gc.isenabled():
        return [build(r) for r in rows]
    gc.disable()
    try:
        return [build(r) for r in rows]
    finally:
        gc.enable()
