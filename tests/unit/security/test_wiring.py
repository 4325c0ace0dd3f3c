"""Security wired end to end on the embedded stack: evtctl's edge checks and the runtime's.

``evtctl`` through click's CliRunner (a fresh SQLite file holding store and bus per test,
``apply --wait`` driving the runtime in-process), and the library path
(``eventplane.runner.publish_intents`` + ``wait_for``) for intents evtctl would never send:
unsigned, signed by an unknown key, altered after signing, or by an actor the policy
does not allow. The runtime is the one ``eventplane.runner`` builds, i.e. what ``evtctl
run`` runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from eventplane.config import PolicyRule, SecuritySettings, Settings, load_settings
from eventplane.errors import SecretMaterialError
from eventplane.event import EventFactory, decode
from eventplane.event.model import Category, Event
from eventplane.runner import WaitResult, publish_intents, wait_for
from eventplane.security import (
    DEV_ACTOR,
    DevKeyring,
    Keypair,
    actor_identity,
    generate_keypair,
    sign_intent,
)
from eventplane.store import EventFilter, open_store
from evtctl import main as evtctl_main

SPEC = {"display_name": "Acme", "plan": "pro", "owners": ["ada@acme.example"]}
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def manifest(name: str, *, display: str | None = None) -> str:
    return (
        f"apiVersion: organization/v1\nkind: Organization\nmetadata: {{name: {name}}}\n"
        f"spec: {{display_name: '{display or name.title()}', plan: pro, "
        f"owners: [o@{name}.example]}}\n"
    )


@pytest.fixture(autouse=True)
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    for var in ("CONFIG", "TENANT", "ACTOR", "KEY_FILE", "ACTOR_SEED", "HOME"):
        monkeypatch.delenv(f"EVENTPLANE_{var}", raising=False)
    url = f"sqlite:///{tmp_path}/stack/eventplane.db"
    monkeypatch.setenv("EVENTPLANE_STORE_URL", url)
    monkeypatch.setenv("EVENTPLANE_BUS_URL", url)
    return url


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(evtctl_main.cli, list(args), input=input, catch_exceptions=False)


def configure(tmp_path: Path, text: str) -> None:
    (tmp_path / ".eventplane.toml").write_text(text)


def stored(url: str, tenant: str = "default") -> list[Event]:
    async def read() -> list[Event]:
        async with open_store(url) as store:
            return await store.read_all(after=0, limit=10_000, filter=EventFilter(tenant=tenant))

    return asyncio.run(read())


def intent(name: str = "acme", actor: str = DEV_ACTOR, spec: dict[str, Any] | None = None) -> Event:
    return EventFactory.from_intent(
        spec or SPEC, kind="Organization", tenant="default", name=name, actor=actor
    )


def send(settings: Settings, *intents: Event) -> list[WaitResult]:
    async def go() -> list[WaitResult]:
        await publish_intents(settings, intents)
        return await wait_for(settings, intents, timeout=30)

    return asyncio.run(go())


def with_security(settings: Settings, **security: Any) -> Settings:
    return settings.model_copy(update={"security": SecuritySettings(**security)})


# -- the edge: evtctl ---------------------------------------------------------------------------


def test_apply_with_nothing_configured_signs_with_the_dev_keyring_and_warns_once(
    embedded: str, tmp_path: Path
) -> None:
    text = manifest("acme") + "---\n" + manifest("beta")
    result = run("apply", "Organization", "-f", "-", "--wait", "--timeout", "30", input=text)

    assert result.exit_code == 0, result.output
    assert result.stderr.count("no security.policy is configured") == 1
    intents = [e for e in stored(embedded) if e.category is Category.INTENT]
    assert len(intents) == 2
    public_key = DevKeyring(tmp_path / ".eventplane").keypair().public_key
    for event in intents:
        assert event.metadata.actor == DEV_ACTOR
        assert (event.metadata.signature or "").startswith(f"ed25519:{public_key}:")


def test_apply_refuses_a_forbidden_intent_before_publishing_with_exit_6(
    embedded: str, tmp_path: Path
) -> None:
    configure(
        tmp_path,
        '[[security.policy]]\nactors = ["dev"]\nverbs = ["apply"]\nkinds = ["Organization"]\n'
        'tenants = ["elsewhere"]\n',
    )
    result = run("apply", "Organization", "-f", "-", input=manifest("acme"))

    assert result.exit_code == 6, result.output
    assert "actor 'dev' may not apply Organization in tenant 'default'" in result.stderr
    assert 'tenants = ["default"]' in result.stderr  # the rule that would allow it
    assert "development mode" not in result.stderr
    assert stored(embedded) == []
    # Nothing is waiting on the bus either: a runtime pass admits nothing.
    asyncio.run(wait_until_idle(load_settings()))
    assert stored(embedded) == []


async def wait_until_idle(settings: Settings) -> None:
    from eventplane.controller.runtime import ControllerRuntime
    from eventplane.runner import open_stack

    async with open_stack(settings) as stack:
        runtime = ControllerRuntime(
            stack.store,
            stack.require_bus(),
            timer_scan_interval=None,
            insecure_skip_verification=True,
        )
        await runtime.run_until_idle(timeout=10)


def test_apply_refuses_secret_material_naming_the_field_and_publishes_nothing(
    embedded: str,
) -> None:
    result = run("apply", "Organization", "-f", "-", input=manifest("acme", display=GITHUB_TOKEN))

    assert result.exit_code == 3, result.output
    assert "spec.display_name" in result.stderr
    assert GITHUB_TOKEN not in result.stderr
    asyncio.run(wait_until_idle(load_settings()))
    assert stored(embedded) == []


def test_apply_signs_with_the_configured_seed_as_the_configured_actor(
    embedded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ci = generate_keypair()
    monkeypatch.setenv("EVENTPLANE_ACTOR_SEED", ci.seed)
    configure(
        tmp_path,
        f'[security]\nactor = "ci"\ntrusted_keys = ["ci={ci.public_key}"]\n'
        '[[security.policy]]\nactors = ["ci"]\nverbs = ["apply", "delete"]\nkinds = ["*"]\n'
        'tenants = ["default"]\n',
    )
    result = run(
        "apply", "Organization", "-f", "-", "--wait", "--timeout", "30", input=manifest("acme")
    )

    assert result.exit_code == 0, result.output
    assert "development mode" not in result.stderr
    [sent] = [e for e in stored(embedded) if e.category is Category.INTENT]
    assert sent.metadata.actor == "ci"
    assert (sent.metadata.signature or "").startswith(f"ed25519:{ci.public_key}:")
    # The production config trusts only its listed key: no development keyring was made.
    assert not (tmp_path / ".eventplane" / "keys").exists()


def test_events_actor_lists_what_one_actor_did(embedded: str) -> None:
    assert run("apply", "Organization", "-f", "-", "--wait", input=manifest("acme")).exit_code == 0
    settings = load_settings()
    send(settings, intent("rogue", actor="mallory"))

    dev = [
        decode(line) for line in run("events", "--actor", "dev", "-o", "json").stdout.splitlines()
    ]
    mallory = [
        decode(line)
        for line in run("events", "--actor", "mallory", "-o", "json").stdout.splitlines()
    ]

    assert [e.type for e in dev] == ["Organization.Requested"]
    assert [(e.type, e.name) for e in mallory] == [("Organization.IntentRejected", "rogue")]
    table = run("events", "--actor", "mallory").stdout
    assert "Organization.IntentRejected" in table
    assert "acme" not in table


# -- the runtime: zero trust on every intent ---------------------------------------------------


def rejected_for(settings: Settings, sent: Event) -> WaitResult:
    [result] = send(settings, sent)
    assert result.rejected, result
    assert not result.ok
    events = stored(str(settings.store_url), sent.tenant)
    assert not any(e.id == sent.id for e in events), "a rejected intent is never stored"
    assert not any(e.reason == "Provisioned" for e in events), "nor reconciled"
    [fact] = [e for e in events if e.reason == "IntentRejected"]
    assert fact.data["intent_id"] == str(sent.id)
    assert fact.data["signature"] == sent.metadata.signature
    assert fact.metadata.actor == sent.metadata.actor
    return result


def dev_key(settings: Settings) -> Keypair:
    return actor_identity(settings.security, settings.home)[1]


def test_an_intent_signed_with_the_dev_keyring_is_reconciled() -> None:
    settings = load_settings()
    [result] = send(settings, sign_intent(intent(), dev_key(settings)))
    assert result.ok, result


def test_the_runtime_rejects_an_unsigned_intent() -> None:
    result = rejected_for(load_settings(), intent())
    assert result.reason == "SignatureInvalid"
    assert "is not signed" in result.message


def test_the_runtime_rejects_an_intent_signed_by_an_untrusted_key() -> None:
    result = rejected_for(load_settings(), sign_intent(intent(), generate_keypair()))
    assert result.reason == "SignatureInvalid"
    assert "trusted" in result.message.lower()


def test_the_runtime_rejects_an_intent_replayed_with_changes() -> None:
    settings = load_settings()
    original = sign_intent(intent(), dev_key(settings))
    altered = original.model_copy(update={"spec": {**SPEC, "plan": "enterprise"}})
    result = rejected_for(settings, altered)
    assert result.reason == "SignatureInvalid"


def test_the_runtime_rejects_an_actor_the_policy_does_not_allow() -> None:
    mallory = generate_keypair()
    base = load_settings()
    settings = with_security(
        base,
        trusted_keys=[f"mallory={mallory.public_key}"],
        policy=[PolicyRule(actors=["ci"], verbs=["apply"], kinds=["*"], tenants=["*"])],
    )
    result = rejected_for(settings, sign_intent(intent(actor="mallory"), mallory))
    assert result.reason == "Forbidden"
    assert "mallory" in result.message


def test_the_development_policy_allows_only_the_dev_actor() -> None:
    other = generate_keypair()
    settings = with_security(load_settings(), trusted_keys=[f"other={other.public_key}"])
    result = rejected_for(settings, sign_intent(intent(actor="other"), other))
    assert result.reason == "Forbidden"


def test_a_production_config_does_not_trust_the_development_keyring() -> None:
    base = load_settings()
    dev = dev_key(base)  # the keyring exists and would be trusted in development
    settings = with_security(base, trusted_keys=[f"ci={generate_keypair().public_key}"])
    result = rejected_for(settings, sign_intent(intent(), dev))
    assert result.reason == "SignatureInvalid"


def test_the_runtime_rejects_secret_material_even_when_signed() -> None:
    settings = load_settings()
    good = intent()
    smuggled = good.model_copy(update={"spec": {**SPEC, "display_name": GITHUB_TOKEN}})
    with pytest.raises(SecretMaterialError):
        EventFactory.from_intent(
            smuggled.spec or {}, kind="Organization", tenant="default", name="x", actor="dev"
        )
    result = rejected_for(settings, sign_intent(smuggled, dev_key(settings)))
    assert result.reason == "SecretMaterial"
    assert GITHUB_TOKEN not in result.message


def test_publish_intents_signs_with_the_keypair_a_library_caller_passes() -> None:
    settings = load_settings()
    _, keypair = actor_identity(settings.security, settings.home)
    sent = intent()

    async def go() -> list[WaitResult]:
        await publish_intents(settings, [sent], keypair=keypair)
        return await wait_for(settings, [sent], timeout=30)

    [result] = asyncio.run(go())
    assert result.ok, result
    [admitted] = [e for e in stored(str(settings.store_url)) if e.id == sent.id]
    assert admitted.metadata.signature is not None
    assert json.loads(json.dumps(admitted.metadata.signature)).startswith("ed25519:")
