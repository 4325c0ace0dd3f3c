"""Authorization policy: development mode, allow rules, and denials that say how to allow."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from eventplane.config import PolicyRule
from eventplane.errors import AuthorizationError, ValidationError
from eventplane.security import DEV_ACTOR, Policy, PolicyDeniedError


def rule(
    actors: Sequence[str],
    verbs: Sequence[str],
    kinds: Sequence[str] = ("*",),
    tenants: Sequence[str] = ("*",),
) -> PolicyRule:
    return PolicyRule.model_validate(
        {"actors": actors, "verbs": verbs, "kinds": kinds, "tenants": tenants}
    )


def test_no_policy_is_development_mode_where_the_dev_actor_may_do_everything() -> None:
    policy = Policy(None)

    assert policy.is_development
    assert policy.authorize(DEV_ACTOR, "apply", "Organization", "acme").allowed
    assert policy.authorize(DEV_ACTOR, "delete", "Project", "globex").allowed


def test_development_mode_denies_everyone_but_the_dev_actor_and_says_how_to_allow() -> None:
    decision = Policy(None).authorize("alice", "apply", "Organization", "acme")

    assert not decision.allowed
    assert "development mode" in decision.reason
    assert "security.policy" in decision.reason
    assert 'actors = ["alice"]' in decision.reason


def test_configured_policy_allows_what_a_rule_allows() -> None:
    policy = Policy([rule(["alice"], ["apply"], ["Organization"], ["acme"])])

    decision = policy.authorize("alice", "apply", "Organization", "acme")

    assert not policy.is_development
    assert decision.allowed
    assert decision.rule == 0


@pytest.mark.parametrize(
    ("actor", "verb", "kind", "tenant"),
    [
        ("bob", "apply", "Organization", "acme"),
        ("alice", "delete", "Organization", "acme"),
        ("alice", "apply", "Project", "acme"),
        ("alice", "apply", "Organization", "globex"),
        (DEV_ACTOR, "apply", "Organization", "acme"),
    ],
    ids=["other actor", "other verb", "other kind", "other tenant", "dev actor"],
)
def test_configured_policy_denies_anything_no_rule_allows(
    actor: str, verb: str, kind: str, tenant: str
) -> None:
    policy = Policy([rule(["alice"], ["apply"], ["Organization"], ["acme"])])

    assert not policy.authorize(actor, verb, kind, tenant).allowed


def test_empty_policy_denies_everything() -> None:
    policy = Policy([])

    assert not policy.is_development
    assert not policy.authorize(DEV_ACTOR, "apply", "Organization", "acme").allowed


def test_wildcards_cover_kinds_tenants_and_actors() -> None:
    policy = Policy(
        [
            rule(["ops"], ["apply", "delete"]),
            rule(["*"], ["apply"], ["Organization"], ["acme"]),
        ]
    )

    assert policy.authorize("ops", "delete", "Project", "globex").rule == 0
    assert policy.authorize("anyone", "apply", "Organization", "acme").rule == 1
    assert not policy.authorize("anyone", "delete", "Organization", "acme").allowed


def test_ensure_allowed_raises_an_authorization_error_naming_who_what_where_and_the_fix() -> None:
    policy = Policy([rule(["alice"], ["apply"], ["Organization"], ["acme"])])

    with pytest.raises(PolicyDeniedError) as info:
        policy.ensure_allowed("bob", "delete", "Organization", "globex")

    message = str(info.value)
    assert isinstance(info.value, AuthorizationError)
    assert "actor 'bob' may not delete Organization in tenant 'globex'" in message
    assert (
        '{actors = ["bob"], verbs = ["delete"], kinds = ["Organization"], tenants = ["globex"]}'
        in message
    )
    assert info.value.decision.verb == "delete"


def test_ensure_allowed_returns_the_decision_when_allowed() -> None:
    decision = Policy(None).ensure_allowed(DEV_ACTOR, "apply", "Organization", "acme")

    assert decision.allowed
    assert bool(decision)


def test_unknown_verb_is_denied() -> None:
    decision = Policy(None).authorize(DEV_ACTOR, "patch", "Organization", "acme")

    assert not decision.allowed
    assert "apply or delete" in decision.reason


def test_rule_with_an_unknown_verb_is_rejected_naming_the_rule() -> None:
    # The config schema already refuses such a rule; Policy checks again for rules built
    # in code without validation.
    unchecked = PolicyRule.model_construct(
        actors=["bob"], verbs=["patch"], kinds=["*"], tenants=["*"]
    )

    with pytest.raises(ValidationError, match=r"security\.policy\[1\]\.verbs"):
        Policy([rule(["alice"], ["apply"]), unchecked])


def test_the_dev_actor_can_be_renamed() -> None:
    policy = Policy(None, dev_actor="me")

    assert policy.authorize("me", "apply", "Organization", "acme").allowed
    assert not policy.authorize(DEV_ACTOR, "apply", "Organization", "acme").allowed
