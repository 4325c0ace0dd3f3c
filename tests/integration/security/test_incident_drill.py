"""The replay-first incident drill of SECURITY.md, on both stacks.

A production-style configuration (listed trusted keys, a policy) runs real workers
(``run_workers``: runtime, relay, projections). Then a "compromise": an attacker signs
with a key nobody trusts, claiming to be ``ci``, and ``mallory`` (a trusted key, but no
rule in the policy) tries to act. The drill checks what an operator relies on:

1. accepted and rejected intents are all in the store with actor and signature (the
   refused ones as ``IntentRejected`` facts carrying the intent's actor and signature);
2. ``evtctl events --actor X`` (``follow_events`` with ``EventFilter.actors``) lists
   everything X did, refused attempts included;
3. projections rebuilt from the store equal the live ones.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventplane.config import PolicyRule, SecuritySettings, Settings, load_settings
from eventplane.event import EventFactory
from eventplane.event.model import Category, Event
from eventplane.runner import (
    follow_events,
    get_objects,
    publish_intents,
    rebuild_projection,
    run_workers,
    wait_for,
)
from eventplane.security import generate_keypair, sign_intent
from eventplane.store import EventFilter
from tests.fixtures.postgres import migrated_database

CI = generate_keypair()
MALLORY = generate_keypair()
ATTACKER = generate_keypair()
SPEC = {"display_name": "Acme", "plan": "pro", "owners": ["ada@acme.example"]}


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("postgres-nats", marks=[pytest.mark.postgres, pytest.mark.nats]),
    ]
)
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    tenant = f"drill-{uuid.uuid4().hex[:10]}"
    security = SecuritySettings(
        trusted_keys=[f"ci={CI.public_key}", f"mallory={MALLORY.public_key}"],
        policy=[PolicyRule(actors=["ci"], verbs=["apply", "delete"], kinds=["*"], tenants=["*"])],
    )
    base = load_settings(cwd=tmp_path, env={})
    if request.param == "embedded":
        url = f"sqlite:///{tmp_path}/eventplane.db"
        yield base.model_copy(
            update={"store_url": url, "bus_url": url, "tenant": tenant, "security": security}
        )
        return
    admin: str = request.getfixturevalue("postgres_admin_url")
    nats: str = request.getfixturevalue("nats_url")
    async with migrated_database(admin, "eventplane_drill") as url:
        yield base.model_copy(
            update={"store_url": url, "bus_url": nats, "tenant": tenant, "security": security}
        )


def intent(settings: Settings, name: str, actor: str, **spec: Any) -> Event:
    return EventFactory.from_intent(
        {**SPEC, **spec}, kind="Organization", tenant=settings.tenant, name=name, actor=actor
    )


async def history(settings: Settings, actor: str | None = None) -> list[Event]:
    flt = EventFilter(actors=(actor,) if actor else ())
    return [e async for e in follow_events(settings, filter=flt)]


async def test_after_a_compromise_the_store_holds_everything_and_replay_agrees(
    settings: Settings,
) -> None:
    stop = asyncio.Event()
    started = asyncio.Event()
    workers = asyncio.ensure_future(
        run_workers(settings, stop_event=stop, tenant=settings.tenant, started=started.set)
    )
    try:
        await asyncio.wait_for(started.wait(), 60)
        good = sign_intent(intent(settings, "acme", "ci"), CI)
        forged = sign_intent(intent(settings, "evil", "ci", plan="enterprise"), ATTACKER)
        rogue = sign_intent(intent(settings, "rogue", "mallory"), MALLORY)
        later = sign_intent(intent(settings, "acme", "ci", plan="enterprise"), CI)
        tampered = later.model_copy(update={"spec": {**SPEC, "plan": "free"}})
        sent = [good, forged, rogue]
        await publish_intents(settings, sent)
        results = await wait_for(settings, sent, timeout=60, drive=False)
        await publish_intents(settings, [tampered])
        [replayed] = await wait_for(settings, [tampered], timeout=60, drive=False)
    finally:
        stop.set()
        await workers

    assert [(r.ok, r.reason) for r in results] == [
        (True, "Provisioned"),
        (False, "SignatureInvalid"),
        (False, "Forbidden"),
    ]
    assert (replayed.ok, replayed.reason) == (False, "SignatureInvalid")

    # 1. Everything is in the store with actor and signature.
    everything = await history(settings)
    [admitted] = [e for e in everything if e.category is Category.INTENT]
    assert (admitted.id, admitted.metadata.actor) == (good.id, "ci")
    assert admitted.metadata.signature == good.metadata.signature
    refusals = {e.data["intent_id"]: e for e in everything if e.reason == "IntentRejected"}
    assert set(refusals) == {str(forged.id), str(rogue.id), str(tampered.id)}
    for refused in (forged, rogue, tampered):
        fact = refusals[str(refused.id)]
        assert fact.metadata.actor == refused.metadata.actor
        assert fact.data["signature"] == refused.metadata.signature
    assert ATTACKER.public_key in refusals[str(forged.id)].data["signature"]
    assert "not a trusted key" in refusals[str(forged.id)].data["message"]

    # 2. What each actor did: mallory's attempt; everything sent as ci, forged included.
    mallory = await history(settings, "mallory")
    assert [(e.reason, e.name) for e in mallory] == [("IntentRejected", "rogue")]
    as_ci = await history(settings, "ci")
    assert {(e.reason, e.name) for e in as_ci} == {
        ("Requested", "acme"),
        ("IntentRejected", "evil"),
        ("IntentRejected", "acme"),
    }

    # 3. Rebuilt read models equal the live ones; refused intents left no trace there.
    live, _ = await get_objects(settings, "Organization")
    assert [o["metadata"]["name"] for o in live] == ["acme"]
    assert live[0]["spec"]["plan"] == "pro"
    await rebuild_projection(settings, "organizations")
    rebuilt, _ = await get_objects(settings, "Organization")
    assert rebuilt == live
