"""From SecuritySettings to the signing actor, the trusted keys and the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventplane.config import PolicyRule, SecuritySettings
from eventplane.errors import ConfigError
from eventplane.security import (
    DEV_ACTOR,
    DevKeyring,
    SignatureError,
    actor_identity,
    generate_keypair,
    policy_from_settings,
    sign_intent,
    trusted_keys_from_settings,
    verify_intent,
)
from tests.unit.security.helpers import intent


def test_nothing_configured_means_the_dev_actor_trusted_by_a_runtime_in_the_same_home(
    tmp_path: Path,
) -> None:
    settings = SecuritySettings()

    actor, keypair = actor_identity(settings, tmp_path, environ={})
    trusted = trusted_keys_from_settings(settings, tmp_path)

    assert actor == DEV_ACTOR
    assert keypair == DevKeyring(tmp_path).keypair()
    assert verify_intent(sign_intent(intent(actor=actor), keypair), trusted).actor == DEV_ACTOR
    assert policy_from_settings(settings).is_development


def test_configured_key_file_and_actor_sign_for_that_actor(tmp_path: Path) -> None:
    key = generate_keypair()
    key_file = tmp_path / "alice.nk"
    key_file.write_text(key.seed)
    settings = SecuritySettings(actor="alice", key_file=key_file)

    actor, keypair = actor_identity(settings, tmp_path, environ={})

    assert (actor, keypair) == ("alice", key)
    assert not (tmp_path / "keys").exists()


def test_key_from_the_environment_needs_an_actor_name(tmp_path: Path) -> None:
    environ = {"EVENTPLANE_ACTOR_SEED": generate_keypair().seed}

    with pytest.raises(ConfigError, match=r"security\.actor is not set"):
        actor_identity(SecuritySettings(), tmp_path, environ=environ)


def test_a_named_actor_without_a_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no signing key is configured"):
        actor_identity(SecuritySettings(actor="alice"), tmp_path, environ={})


def test_configured_trusted_keys_replace_the_dev_keyring(tmp_path: Path) -> None:
    dev = DevKeyring(tmp_path).keypair()
    alice = generate_keypair()
    settings = SecuritySettings(trusted_keys=[f"alice={alice.public_key}"])

    trusted = trusted_keys_from_settings(settings, tmp_path)

    assert trusted.public_keys == {alice.public_key}
    with pytest.raises(SignatureError):
        verify_intent(sign_intent(intent(actor=DEV_ACTOR), dev), trusted)


def test_configured_policy_is_enforced(tmp_path: Path) -> None:
    rule = PolicyRule(actors=["alice"], verbs=["apply"], kinds=["*"], tenants=["acme"])

    policy = policy_from_settings(SecuritySettings(policy=[rule]))

    assert not policy.is_development
    assert policy.authorize("alice", "apply", "Organization", "acme").allowed
    assert not policy.authorize(DEV_ACTOR, "apply", "Organization", "acme").allowed
