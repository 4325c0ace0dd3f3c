"""From configuration to identities: who evtctl signs as, which keys a runtime trusts.

Security layer, reading only local key files. The wiring point between
``eventplane.config.SecuritySettings`` and the signing/policy building blocks: ``evtctl``
calls ``actor_identity`` (then ``sign_intent``) and ``policy_from_settings`` (then
``ensure_allowed``); the controller runtime calls ``trusted_keys_from_settings`` once at
start-up (then ``verify_intent`` per intent) and ``policy_from_settings``.

Development default: with no key configured the actor is ``DEV_ACTOR`` signing with the
``DevKeyring`` under ``home``; with no trusted keys configured the runtime trusts that
keyring. A production configuration sets ``security.actor`` + ``security.key_file`` (or
``EVENTPLANE_ACTOR_SEED``) on the client and ``security.trusted_keys`` on the runtime, which
then trusts nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from eventplane.config import SecuritySettings
from eventplane.errors import ConfigError
from eventplane.security.policy import Policy
from eventplane.security.signing import (
    DEV_ACTOR,
    SEED_ENV_VAR,
    DevKeyring,
    Keypair,
    TrustedKeys,
    load_keypair,
)

__all__ = ["actor_identity", "policy_from_settings", "trusted_keys_from_settings"]


def actor_identity(
    security: SecuritySettings, home: Path, environ: Mapping[str, str] | None = None
) -> tuple[str, Keypair]:
    """The actor name intents are sent as, and the key that signs them."""
    keypair = load_keypair(security.key_file, environ=environ)
    if keypair is not None:
        if not security.actor:
            raise ConfigError(
                "security.actor is not set: a signing key is configured (security.key_file or "
                f"{SEED_ENV_VAR}), so name the actor it is trusted for (security.actor or "
                "EVENTPLANE_ACTOR)"
            )
        return security.actor, keypair
    if security.actor and security.actor != DEV_ACTOR:
        raise ConfigError(
            f"security.actor is {security.actor!r} but no signing key is configured; set "
            f"security.key_file or {SEED_ENV_VAR}, or unset security.actor to act as the local "
            f"development actor {DEV_ACTOR!r}"
        )
    return DEV_ACTOR, DevKeyring(home).keypair()


def trusted_keys_from_settings(security: SecuritySettings, home: Path) -> TrustedKeys:
    """The configured trusted keys, or (none configured) the development keyring's."""
    if security.trusted_keys:
        return TrustedKeys(security.trusted_keys)
    return TrustedKeys(DevKeyring(home).trusted_keys())


def policy_from_settings(security: SecuritySettings) -> Policy:
    return Policy(security.policy)
