"""Security building blocks: secret guard, signed intents, authorization policy, tenancy.

Security layer, beside ``eventplane.event`` (it reads ``Event``; ``EventFactory`` calls the
secret guard). Used by ``evtctl`` at the edge (guard, sign, authorize before publishing) and by
the controller runtime on every delivery (subject/tenant check, guard, verify, authorize).
``identity`` is the glue from ``eventplane.config.SecuritySettings`` to keys and policy.

``eventplane.event.factory`` may import ``eventplane.security.secrets``: the security modules
need only ``eventplane.event.model`` (which imports nothing of ``security``), so the two
packages import cleanly in either order.
"""

from eventplane.security.identity import (
    actor_identity,
    policy_from_settings,
    trusted_keys_from_settings,
)
from eventplane.security.policy import Decision, Policy, PolicyDeniedError, PolicyRuleLike, Verb
from eventplane.security.secrets import (
    SECRET_REF_PREFIX,
    SecretRef,
    SecretRefParts,
    ensure_event_has_no_secret_material,
    ensure_no_secret_material,
    find_event_secret_material,
    find_secret_material,
    is_secret_ref,
    parse_secret_ref,
)
from eventplane.security.signing import (
    DEV_ACTOR,
    SEED_ENV_VAR,
    DevKeyring,
    Keypair,
    SignatureError,
    SignatureFailure,
    TrustedKeys,
    VerifiedActor,
    canonical_intent_bytes,
    generate_keypair,
    is_public_key,
    load_keypair,
    load_seed_env,
    load_seed_file,
    sign_intent,
    verify_intent,
)
from eventplane.security.tenancy import (
    SubjectMismatchError,
    SubjectParts,
    check_subject_tenant,
    parse_subject,
)

__all__ = [
    "DEV_ACTOR",
    "SECRET_REF_PREFIX",
    "SEED_ENV_VAR",
    "Decision",
    "DevKeyring",
    "Keypair",
    "Policy",
    "PolicyDeniedError",
    "PolicyRuleLike",
    "SecretRef",
    "SecretRefParts",
    "SignatureError",
    "SignatureFailure",
    "SubjectMismatchError",
    "SubjectParts",
    "TrustedKeys",
    "Verb",
    "VerifiedActor",
    "actor_identity",
    "canonical_intent_bytes",
    "check_subject_tenant",
    "ensure_event_has_no_secret_material",
    "ensure_no_secret_material",
    "find_event_secret_material",
    "find_secret_material",
    "generate_keypair",
    "is_public_key",
    "is_secret_ref",
    "load_keypair",
    "load_seed_env",
    "load_seed_file",
    "parse_secret_ref",
    "parse_subject",
    "policy_from_settings",
    "sign_intent",
    "trusted_keys_from_settings",
    "verify_intent",
]
