"""Fuzzing the security building blocks: any input gives a result or an Eventplane error."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventplane.errors import ConfigError, EventplaneError, SecretMaterialError, ValidationError
from eventplane.event.model import Category, Event
from eventplane.security import (
    Keypair,
    Policy,
    SignatureError,
    SubjectMismatchError,
    TrustedKeys,
    check_subject_tenant,
    ensure_no_secret_material,
    find_secret_material,
    generate_keypair,
    is_public_key,
    is_secret_ref,
    parse_subject,
    sign_intent,
    verify_intent,
)
from eventplane.security.signing import decode_public_key, decode_seed
from tests.strategies import events
from tests.unit.security.test_secrets import SECRET_VALUES

ALICE = generate_keypair()
TRUST_ANY_ACTOR = TrustedKeys([f"*={ALICE.public_key}"])

# Text biased towards the characters the patterns look at.
# Text biased towards what the patterns look at, glued from pattern fragments and characters.
_FRAGMENTS = [
    *"abcxyzAKIASUghp_-.:/@= \n\t#?0123456789é",
    "-----BEGIN ",
    "PRIVATE KEY-----",
    "eyJ",
    "://",
    "Bearer ",
    "secretref://",
]
tricky_text = st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join) | st.text(max_size=60)
json_like: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | tricky_text,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(
            tricky_text | st.sampled_from(["password", "apiKey", "token"]), inner, max_size=5
        )
    ),
    max_leaves=25,
)
intents = events().map(lambda e: e.model_copy(update={"category": Category.INTENT}))


@given(json_like, st.text(max_size=10))
@settings(max_examples=400, deadline=None)
def test_guard_returns_findings_for_any_payload(payload: Any, path: str) -> None:
    errors = find_secret_material(payload, path)

    assert all(e.path.startswith(path) for e in errors)
    if errors:
        with pytest.raises(SecretMaterialError) as info:
            ensure_no_secret_material(payload, path)
        assert list(info.value.errors) == errors
    else:
        ensure_no_secret_material(payload, path)


@given(
    st.sampled_from(sorted(SECRET_VALUES.values())),
    st.text(alphabet=" \n,;()[]<>'\"", max_size=3),
    st.text(alphabet=" \n,;()[]<>'\"", max_size=3),
    st.text(max_size=30).map(lambda t: t + " "),
)
@settings(max_examples=300, deadline=None)
def test_a_secret_embedded_in_any_text_is_still_caught(
    secret: str, before: str, after: str, prose: str
) -> None:
    assert find_secret_material({"note": prose + before + secret + after}) != []


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_secret_ref_check_never_raises(value: str) -> None:
    assert is_secret_ref(value) in (True, False)
    assert is_secret_ref("secretref://vault/" + value) in (True, False)


@given(st.text(max_size=80) | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", max_size=60))
@settings(max_examples=300, deadline=None)
def test_key_decoders_accept_or_raise_a_validation_error(value: str) -> None:
    for decode in (decode_public_key, decode_seed, Keypair.from_seed):
        with contextlib.suppress(ValidationError):
            decode(value)
    assert is_public_key(value) in (True, False)


@given(st.lists(st.text(max_size=70), max_size=4))
@settings(max_examples=200, deadline=None)
def test_trusted_key_entries_parse_or_raise_a_config_error(entries: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        TrustedKeys(entries)


@given(intents)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_signed_intent_verifies(event: Event) -> None:
    signed = sign_intent(event, ALICE)

    assert verify_intent(signed, TRUST_ANY_ACTOR).actor == event.metadata.actor


@given(intents, st.text(max_size=150))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_signature_field_is_rejected_with_a_signature_error(event: Event, field: str) -> None:
    forged = event.model_copy(
        update={"metadata": event.metadata.model_copy(update={"signature": field or None})}
    )

    try:
        verify_intent(forged, TRUST_ANY_ACTOR)
    except SignatureError:
        return
    raise AssertionError("a signature not made by a trusted key was accepted")


@given(events(), st.text(max_size=60))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_subject_check_accepts_or_raises_a_subject_mismatch(event: Event, subject: str) -> None:
    own = f"eventplane.{event.tenant}.{event.kind.lower()}.{event.category.value}"

    assert check_subject_tenant(own, event).tenant == event.tenant
    try:
        parse_subject(subject)
        check_subject_tenant(subject, event)
    except SubjectMismatchError:
        pass


@given(st.text(max_size=20), st.text(max_size=10), st.text(max_size=20), st.text(max_size=20))
@settings(max_examples=200, deadline=None)
def test_policy_answers_any_question(actor: str, verb: str, kind: str, tenant: str) -> None:
    for policy in (Policy(None), Policy([])):
        decision = policy.authorize(actor, verb, kind, tenant)
        assert decision.reason
        try:
            policy.ensure_allowed(actor, verb, kind, tenant)
        except EventplaneError:
            assert not decision.allowed
