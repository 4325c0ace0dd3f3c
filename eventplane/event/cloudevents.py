"""CloudEvents 1.0 structured-mode JSON: the wire form of an Event.

Pure layer. The bus backends call ``encode``/``decode`` for every message, and
``evtctl events -o json`` / ``apply --dry-run`` print ``encode`` output. Any
CloudEvents SDK parses what ``encode`` writes, and ``decode(encode(e)) == e`` for
every event (store-assigned fields included).

Mapping (extension names are lowercase alphanumerics, as the spec requires):

    id            Event.id                    source       metadata.source
    type          Event.type                  subject      "<kind lowercased>/<name>"
    time          metadata.occurred_at        datacontenttype  application/json
    tenant, kind, name, category, apiversion, generation, correlationid,
    causationid, actor, signature, streamversion, recordedtime  — extensions
    sequence      metadata.position, zero-padded to 20 digits (sorts lexicographically)
    data          {"spec", "data", "labels", "status", "finalizers", "deletionrequestedat"}
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pydantic

from eventplane.errors import FieldError, PayloadTooLargeError, ValidationError
from eventplane.event.model import Event
from eventplane.utils import format_time, json_dumps, json_loads

__all__ = ["CONTENT_TYPE", "MAX_EVENT_BYTES", "decode", "encode", "event_id_of", "to_cloudevent"]

CONTENT_TYPE = "application/cloudevents+json"
MAX_EVENT_BYTES = 1024 * 1024  # NATS' default max_payload; the store enforces the same
_SEQUENCE_DIGITS = 20


def to_cloudevent(event: Event) -> dict[str, Any]:
    """The structured-mode CloudEvent as a JSON-ready dict."""
    meta = event.metadata
    ce: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event.id),
        "source": meta.source,
        "type": event.type,
        "subject": f"{event.kind.lower()}/{event.name}",
        "time": format_time(meta.occurred_at),
        "datacontenttype": "application/json",
        "tenant": event.tenant,
        "kind": event.kind,
        "name": event.name,
        "category": event.category.value,
        "apiversion": event.api_version,
        "generation": meta.generation,
        "correlationid": str(meta.correlation_id),
        "actor": meta.actor,
    }
    if meta.causation_id is not None:
        ce["causationid"] = str(meta.causation_id)
    if meta.signature is not None:
        ce["signature"] = meta.signature
    if meta.position is not None:
        ce["sequence"] = str(meta.position).zfill(_SEQUENCE_DIGITS)
    if meta.stream_version is not None:
        ce["streamversion"] = meta.stream_version
    if meta.recorded_at is not None:
        ce["recordedtime"] = format_time(meta.recorded_at)
    data: dict[str, Any] = {"data": event.data}
    if event.spec is not None:
        data["spec"] = event.spec
    if meta.labels:
        data["labels"] = meta.labels
    if event.status is not None:
        data["status"] = event.status.model_dump(mode="json")
    if event.finalizers is not None:
        data["finalizers"] = list(event.finalizers)
    if event.deletion_requested_at is not None:
        data["deletionrequestedat"] = format_time(event.deletion_requested_at)
    ce["data"] = data
    return ce


def encode(event: Event) -> bytes:
    """Structured-mode CloudEvents JSON bytes (send with ``Content-Type: CONTENT_TYPE``).

    Raises ``ValidationError`` for content JSON cannot carry exactly (integers beyond
    64 bits, which only an unvalidated ``model_copy``/``model_construct`` can smuggle in).
    """
    try:
        return json_dumps(to_cloudevent(event))
    except TypeError as exc:  # orjson: "Integer exceeds 64-bit range", unknown types
        raise ValidationError(
            f"event {event.id} cannot be encoded as a CloudEvent",
            [FieldError("data", str(exc), "keep integers within 64 bits; big ones as strings")],
        ) from exc


def decode(payload: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Parse and fully validate a structured-mode CloudEvent produced by ``encode``.

    Raises ``ValidationError`` (never anything else) for malformed or hostile input.
    """
    if len(payload) > max_bytes:
        raise PayloadTooLargeError(
            f"CloudEvent is {len(payload)} bytes, over the {max_bytes}-byte limit",
            [FieldError("", "payload too large", "split the payload or store a reference")],
        )
    try:
        ce = json_loads(payload)
    except Exception as exc:  # orjson.JSONDecodeError and UnicodeDecodeError alike
        raise ValidationError("CloudEvent is not valid JSON", [FieldError("", str(exc))]) from exc
    if not isinstance(ce, dict):
        raise ValidationError("CloudEvent must be a JSON object", [FieldError("", "not an object")])
    problems: list[FieldError] = []
    if ce.get("specversion") != "1.0":
        problems.append(FieldError("specversion", "must be '1.0'"))
    for required in (
        "id",
        "source",
        "type",
        "tenant",
        "kind",
        "name",
        "category",
        "apiversion",
        "correlationid",
        "actor",
        "time",
    ):
        if not isinstance(ce.get(required), str) or not ce.get(required):
            problems.append(FieldError(required, "required string attribute is missing or empty"))
    payload_data = ce.get("data", {})
    if not isinstance(payload_data, dict):
        problems.append(FieldError("data", "must be a JSON object"))
    if problems:
        raise ValidationError("not an Eventplane CloudEvent", problems)
    sequence = ce.get("sequence")
    position: int | None = None
    if sequence is not None:
        # isdigit() alone admits "²" and friends, and int() refuses over 4300 digits:
        # either would escape as ValueError, and decode raises only ValidationError.
        try:
            if not isinstance(sequence, str) or not (sequence.isascii() and sequence.isdigit()):
                raise ValueError(sequence)
            position = int(sequence)
        except ValueError:
            raise ValidationError(
                "bad CloudEvent", [FieldError("sequence", "must be a string of digits")]
            ) from None
    doc = {
        "id": ce["id"],
        "tenant": ce["tenant"],
        "kind": ce["kind"],
        "name": ce["name"],
        "type": ce["type"],
        "category": ce["category"],
        "api_version": ce["apiversion"],
        "spec": payload_data.get("spec"),
        "data": payload_data.get("data", {}),
        "metadata": {
            "generation": ce.get("generation", 0),
            "correlation_id": ce["correlationid"],
            "causation_id": ce.get("causationid"),
            "actor": ce["actor"],
            "source": ce["source"],
            "labels": payload_data.get("labels", {}),
            "occurred_at": ce["time"],
            "signature": ce.get("signature"),
            "stream_version": ce.get("streamversion"),
            "position": position,
            "recorded_at": ce.get("recordedtime"),
        },
        "status": payload_data.get("status"),
        "finalizers": payload_data.get("finalizers"),
        "deletion_requested_at": payload_data.get("deletionrequestedat"),
    }
    try:
        return Event.model_validate(doc)
    except pydantic.ValidationError as exc:
        raise ValidationError(
            "CloudEvent does not describe a valid Eventplane event",
            [
                FieldError(".".join(str(p) for p in err["loc"]), err["msg"])
                for err in exc.errors(include_url=False)
            ],
        ) from exc


def event_id_of(payload: bytes) -> UUID | None:
    """Best-effort id of a (possibly invalid) payload, for logging rejected messages."""
    try:
        ce = json_loads(payload)
        return UUID(ce["id"]) if isinstance(ce, dict) else None
    except Exception:
        return None
