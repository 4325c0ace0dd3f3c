"""Hostile input: limits, and fuzzing of the three places untrusted bytes enter.

The manifest loader (``eventplane.spec.load_manifests``), the CloudEvents decoder
(``eventplane.event.cloudevents.decode``) and the runtime's intent intake (a real
``ControllerRuntime`` on the in-memory bus and a SQLite store): any input yields a valid
result or an Eventplane ``ValidationError`` — never another exception, never a hang (every
example runs under pytest-timeout), never a partial write (a fuzzed intent is either
admitted with its reconciliation or recorded only as its ``IntentRejected`` fact).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventplane.bus.base import ConsumerConfig
from eventplane.bus.memory import InMemoryBus
from eventplane.controller.runtime import ControllerRuntime
from eventplane.errors import PayloadTooLargeError, ValidationError
from eventplane.event import EventFactory, decode, encode
from eventplane.event.cloudevents import MAX_EVENT_BYTES
from eventplane.event.model import Category, Event
from eventplane.security import DEV_ACTOR, Policy, TrustedKeys, generate_keypair, sign_intent
from eventplane.spec import ManifestLimits, load_manifests
from eventplane.store import open_store

GOOD = (
    "apiVersion: organization/v1\nkind: Organization\nmetadata: {name: acme}\n"
    "spec: {display_name: Acme, plan: pro, owners: [ada@acme.example]}\n"
)
KEY = generate_keypair()

# -- limits not covered in tests/unit/test_spec_manifests.py ------------------------------------


def test_too_many_yaml_nodes_are_rejected() -> None:
    wide = GOOD + "---\n" + "[" + ",".join(["1"] * 500) + "]\n"
    with pytest.raises(ValidationError, match="more than 200 YAML nodes"):
        load_manifests(wide, limits=ManifestLimits(max_nodes=200))


def test_long_keys_count_against_the_string_limit_too() -> None:
    text = GOOD.replace("plan: pro", "plan: pro, " + "k" * 300 + ": 1")
    with pytest.raises(ValidationError, match="longer than 100"):
        load_manifests(text, limits=ManifestLimits(max_string=100))


def test_an_oversized_event_is_refused_by_the_decoder_and_the_store(tmp_path: Path) -> None:
    huge = EventFactory.from_intent(
        {"display_name": "x" * 100, "plan": "pro", "owners": ["a@b.example"]},
        kind="Organization",
        tenant="default",
        name="big",
        actor=DEV_ACTOR,
    ).model_copy(update={"data": {"blob": "y" * (MAX_EVENT_BYTES + 1)}})
    with pytest.raises(PayloadTooLargeError):
        decode(encode(huge))

    async def append() -> None:
        async with open_store(f"sqlite:///{tmp_path}/s.db") as store:
            with pytest.raises(ValidationError):
                await store.append([huge], expected_version=0)
            assert await store.read_stream(*huge.stream) == []

    asyncio.run(append())


# -- fuzzing the manifest loader ---------------------------------------------------------------

_YAML_BITS = [
    *"abcz019 -:[]{},\n\t'\"#&*!|>%@`?",
    "apiVersion: organization/v1\n",
    "kind: Organization\n",
    "metadata:\n  name: ",
    "spec:\n",
    "  plan: pro\n",
    "  owners: [a@b.example]\n",
    "---\n",
    "&a ",
    "*a",
    "<<: ",
    "!!python/object:os.system ",
    "!!binary ",
    "{{{{",
    "[[[[",
    "\ufeff",
    "\x00",
]
yaml_text = st.lists(st.sampled_from(_YAML_BITS), max_size=60).map("".join) | st.text(max_size=200)


@given(yaml_text)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_manifest_text_loads_or_raises_a_validation_error(text: str) -> None:
    try:
        manifests = load_manifests(text, kind="Organization")
    except ValidationError:
        return
    assert all(m.kind == "Organization" for m in manifests)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_manifest_bytes_load_or_raise_a_validation_error(raw: bytes) -> None:
    with contextlib.suppress(ValidationError):
        load_manifests(raw)


# -- fuzzing the CloudEvents decoder -----------------------------------------------------------

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _valid_document() -> dict[str, Any]:
    event = EventFactory.from_intent(
        {"display_name": "Acme", "plan": "pro", "owners": ["a@b.example"]},
        kind="Organization",
        tenant="default",
        name="acme",
        actor=DEV_ACTOR,
    )
    document: dict[str, Any] = json.loads(encode(event))
    return document


_DOCUMENT = _valid_document()


@given(st.dictionaries(st.sampled_from(sorted(_DOCUMENT)), json_values, max_size=4), st.booleans())
@settings(max_examples=400, deadline=None)
def test_any_mutation_of_a_cloudevent_decodes_or_raises_a_validation_error(
    changes: dict[str, Any], drop: bool
) -> None:
    document = dict(_DOCUMENT)
    for key, value in changes.items():
        if drop:
            document.pop(key, None)
        else:
            document[key] = value
    try:
        event = decode(json.dumps(document))
    except ValidationError:
        return
    assert decode(encode(event)) == event


@given(st.binary(max_size=400) | st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_or_raise_a_validation_error(payload: bytes | str) -> None:
    with contextlib.suppress(ValidationError):
        decode(payload)


# -- fuzzing the runtime's intent intake --------------------------------------------------------

spec_values = st.fixed_dictionaries(
    {},
    optional={
        "display_name": st.text(max_size=30) | st.sampled_from(["ghp_" + "a1" * 18, "Acme"]),
        "plan": st.sampled_from(["free", "pro", "enterprise", "platinum"]) | json_values,
        "owners": st.lists(st.sampled_from(["a@b.example", "nope", "c@d.example"]), max_size=3)
        | json_values,
        "billing_account": st.sampled_from(["secretref://billing/acme", "4111-1111", "x"]),
        "password": st.text(max_size=10),
    },
)
mutations = st.fixed_dictionaries(
    {
        "spec": st.none() | spec_values,
        "actor": st.sampled_from([DEV_ACTOR, "mallory", "ci"]),
        "signature": st.sampled_from(["sign", "none", "garbage", "resign-after-change"]),
        "api_version": st.sampled_from(["organization/v1", "organization/v2"]),
        "labels": st.dictionaries(
            st.sampled_from(["team", "token", "env"]), st.text(max_size=12), max_size=2
        ),
        "reason": st.sampled_from(["Requested", "DeletionRequested"]),
    }
)


def _hostile_intent(m: dict[str, Any]) -> Event:
    base = EventFactory.from_intent(
        {"display_name": "Acme", "plan": "pro", "owners": ["a@b.example"]},
        kind="Organization",
        tenant="default",
        name=f"o-{uuid.uuid4().hex[:12]}",
        actor=m["actor"],
    )
    if m["signature"] == "sign":
        base = sign_intent(base, KEY)
    meta = base.metadata.model_copy(update={"labels": m["labels"]})
    changed = base.model_copy(
        update={
            "spec": m["spec"],
            "api_version": m["api_version"],
            "type": f"Organization.{m['reason']}",
            "metadata": meta,
        }
    )
    if m["signature"] == "resign-after-change":
        changed = sign_intent(changed, KEY)
    elif m["signature"] == "garbage":
        changed = changed.model_copy(
            update={"metadata": meta.model_copy(update={"signature": "ed25519:U123:zz"})}
        )
    return changed


@given(st.lists(mutations, min_size=1, max_size=4))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_intent_is_admitted_whole_or_rejected_with_nothing_else_written(
    tmp_path: Path, batch: list[dict[str, Any]]
) -> None:
    intents: list[Event] = []
    for m in batch:
        try:
            intents.append(_hostile_intent(m))
        except ValidationError:
            continue  # refused at the edge (e.g. no canonical JSON form to sign): a valid outcome

    async def go() -> None:
        async with open_store(f"sqlite:///{tmp_path}/fuzz.db") as store:
            bus = InMemoryBus()
            runtime = ControllerRuntime(
                store,
                bus,
                trusted_keys=TrustedKeys([f"*={KEY.public_key}"]),
                policy=Policy(),  # development policy: only the dev actor
                timer_scan_interval=None,
            )
            sent_ok: list[Event] = []
            for intent in intents:
                try:
                    await bus.publish([intent])
                except ValidationError:
                    continue  # cannot be put on the wire at all (e.g. a >64-bit integer)
                sent_ok.append(intent)
            await runtime.run_until_idle(timeout=20)
            await bus.close()
            for refused in (i for i in intents if i not in sent_ok):
                assert await store.read_stream(*refused.stream) == []
            for sent in sent_ok:
                stream = await store.read_stream(*sent.stream)
                rejections = [e for e in stream if e.reason == "IntentRejected"]
                if rejections:
                    # Refused: the fact and nothing else — no intent, no reconciliation.
                    assert [e.reason for e in stream] == ["IntentRejected"], stream
                    assert rejections[0].data["intent_id"] == str(sent.id)
                    assert rejections[0].category is Category.FACT
                else:
                    assert stream[0].id == sent.id, stream
                    assert sent.metadata.actor == DEV_ACTOR
                    assert sent.metadata.signature is not None

    asyncio.run(go())


async def test_an_integer_beyond_64_bits_is_refused_before_the_wire_and_nothing_published() -> None:
    intent = EventFactory.from_intent(
        {"display_name": "Acme", "plan": "pro", "owners": ["a@b.example"]},
        kind="Organization",
        tenant="default",
        name="acme",
        actor=DEV_ACTOR,
    )
    smuggled = intent.model_copy(update={"spec": {"seats": 2**70}})  # bypasses validation
    with pytest.raises(ValidationError, match="canonical JSON"):
        sign_intent(smuggled, KEY)
    bus = InMemoryBus()
    with pytest.raises(ValidationError, match="64 bits"):
        await bus.publish([intent, smuggled])
    sub = await bus.subscribe(ConsumerConfig(durable="probe", filter_subject="eventplane.>"))
    assert await sub.fetch(10, timeout=0.05) == []
    await sub.close()
    await bus.close()
