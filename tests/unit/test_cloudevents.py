"""The wire form: CloudEvents 1.0 structured JSON that outside SDKs read and we round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pydantic
import pytest
from cloudevents.core.formats.json import JSONFormat
from hypothesis import given, settings

from eventplane.errors import PayloadTooLargeError, ValidationError
from eventplane.event.cloudevents import CONTENT_TYPE, decode, encode, to_cloudevent
from eventplane.event.model import Event
from tests.strategies import events
from tests.unit.simulate import org_intent

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "cloudevents.json"
VENDORED_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "cloudevents.json"


def _schema() -> dict[str, object]:
    path = SCHEMA_PATH if SCHEMA_PATH.exists() else VENDORED_SCHEMA
    return json.loads(path.read_text())


VALIDATOR = jsonschema.Draft7Validator(_schema(), format_checker=jsonschema.FormatChecker())


@pytest.mark.smoke
@given(events())
@settings(max_examples=200, deadline=None)
def test_decode_of_encode_returns_an_equal_event(event: Event) -> None:
    assert decode(encode(event)) == event


@given(events())
@settings(max_examples=100, deadline=None)
def test_encoded_event_validates_against_the_cloudevents_json_schema(event: Event) -> None:
    VALIDATOR.validate(json.loads(encode(event)))


@given(events())
@settings(max_examples=100, deadline=None)
def test_cloudevents_sdk_parses_encoded_event_with_every_attribute(event: Event) -> None:
    parsed = JSONFormat().read(None, encode(event))
    ce = to_cloudevent(event)
    assert parsed.get_id() == str(event.id)
    assert parsed.get_type() == event.type
    assert parsed.get_source() == event.metadata.source
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_extension("tenant") == event.tenant
    assert parsed.get_extension("category") == event.category.value
    assert parsed.get_time() == event.metadata.occurred_at
    attributes = parsed.get_attributes() | {"time": ce["time"], "data": parsed.get_data()}
    assert attributes == ce


@given(events())
@settings(max_examples=50, deadline=None)
def test_extension_attribute_names_are_lowercase_alphanumerics(event: Event) -> None:
    standard = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}
    for name in set(to_cloudevent(event)) - standard:
        assert name.isalnum(), name
        assert name.islower(), name
        assert len(name) <= 20, name


def test_content_type_is_structured_cloudevents_json() -> None:
    assert CONTENT_TYPE == "application/cloudevents+json"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(b"{not json", "", id="not-json"),
        pytest.param(b"[1, 2]", "", id="not-an-object"),
        pytest.param(b'{"specversion": "0.3"}', "specversion", id="wrong-specversion"),
        pytest.param(b'{"specversion": "1.0", "id": ""}', "id", id="empty-id"),
    ],
)
def test_decode_rejects_malformed_payload_naming_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode(payload)
    assert any(err.path == field for err in info.value.errors)


@given(events(recorded=False))
@settings(max_examples=20, deadline=None)
def test_decode_rejects_event_with_invalid_tenant(event: Event) -> None:
    doc = json.loads(encode(event))
    doc["tenant"] = "Not_A_Label"
    with pytest.raises(ValidationError) as info:
        decode(json.dumps(doc).encode())
    assert any(err.path == "tenant" for err in info.value.errors)


def test_decode_rejects_oversized_payload_before_parsing() -> None:
    with pytest.raises(PayloadTooLargeError):
        decode(b" " * 2048, max_bytes=1024)


@pytest.mark.parametrize(
    "sequence", ["²", "1" * 5000, "12a", 7], ids=["unicode-digit", "huge", "letters", "number"]
)
@given(event=events(recorded=True))
@settings(max_examples=5, deadline=None)
def test_decode_rejects_a_bad_sequence_as_a_validation_error(
    sequence: object, event: Event
) -> None:
    doc = to_cloudevent(event)
    doc["sequence"] = sequence
    with pytest.raises(ValidationError) as info:
        decode(json.dumps(doc).encode())
    assert any(err.path == "sequence" for err in info.value.errors)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", ["data", "spec"])
def test_an_event_refuses_numbers_that_json_cannot_carry(number: float, field: str) -> None:
    """orjson would write them as null: the stored or published event would differ."""
    event = org_intent()
    with pytest.raises(pydantic.ValidationError, match="finite number"):
        Event.model_validate({**event.model_dump(), field: {"nested": [1, {"x": number}]}})
