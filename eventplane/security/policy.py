"""Authorization policy: which actors may apply or delete which kinds in which tenants.

Pure security layer. ``Policy`` is built from the configuration's ``security.policy`` rules
(``list[PolicyRule] | None``, see ``eventplane.config``). ``evtctl`` calls
``ensure_allowed`` before it publishes an intent and warns once per command when
``is_development``; the controller runtime calls ``authorize`` again for every intent it
receives (zero trust) and records a denial as a rejected intent with ``Decision.reason``.

Semantics:

- ``None`` (no policy configured) is development mode: the local development actor
  (``signing.DEV_ACTOR``) may do everything, nobody else may do anything.
- A configured list (even an empty one) denies everything no rule allows. A rule allows a
  request when its ``actors``, ``verbs``, ``kinds`` and ``tenants`` each contain the
  request's value or ``"*"``. Rules only allow; there are no deny rules, so order does not
  matter (the first matching rule is reported).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from eventplane.errors import AuthorizationError, ValidationError
from eventplane.security.signing import DEV_ACTOR

__all__ = [
    "VERBS",
    "Decision",
    "Policy",
    "PolicyDeniedError",
    "PolicyRuleLike",
    "Verb",
]

Verb = Literal["apply", "delete"]
VERBS: tuple[str, ...] = get_args(Verb)
WILDCARD = "*"


class PolicyRuleLike(Protocol):
    """The shape of ``eventplane.config.PolicyRule`` (any object with these attributes)."""

    @property
    def actors(self) -> Sequence[str]: ...
    @property
    def verbs(self) -> Sequence[str]: ...
    @property
    def kinds(self) -> Sequence[str]: ...
    @property
    def tenants(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one authorization question, with the reason either way."""

    allowed: bool
    actor: str
    verb: str
    kind: str
    tenant: str
    reason: str
    rule: int | None = None  # index of the allowing rule in security.policy

    def __bool__(self) -> bool:
        return self.allowed


class PolicyDeniedError(AuthorizationError):
    """The policy does not allow this actor to do this verb on this kind in this tenant."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(decision.reason)


@dataclass(frozen=True, slots=True)
class _Rule:
    actors: frozenset[str]
    verbs: frozenset[str]
    kinds: frozenset[str]
    tenants: frozenset[str]

    def matches(self, actor: str, verb: str, kind: str, tenant: str) -> bool:
        return (
            (actor in self.actors or WILDCARD in self.actors)
            and verb in self.verbs
            and (kind in self.kinds or WILDCARD in self.kinds)
            and (tenant in self.tenants or WILDCARD in self.tenants)
        )


class Policy:
    """Authorization decisions over the configured rules (see the module docstring)."""

    __slots__ = ("_rules", "dev_actor")

    def __init__(
        self, rules: Sequence[PolicyRuleLike] | None = None, *, dev_actor: str = DEV_ACTOR
    ) -> None:
        self.dev_actor = dev_actor
        self._rules: tuple[_Rule, ...] | None = (
            None if rules is None else tuple(self._compile(r, i) for i, r in enumerate(rules))
        )

    @staticmethod
    def _compile(rule: PolicyRuleLike, index: int) -> _Rule:
        verbs = frozenset(rule.verbs)
        unknown = sorted(verbs - set(VERBS))
        if unknown:
            raise ValidationError(
                f"security.policy[{index}].verbs: unknown verb(s) {', '.join(unknown)}; "
                f"use {' or '.join(VERBS)}"
            )
        return _Rule(
            actors=frozenset(rule.actors),
            verbs=verbs,
            kinds=frozenset(rule.kinds),
            tenants=frozenset(rule.tenants),
        )

    @property
    def is_development(self) -> bool:
        """No policy configured: only the local development actor is allowed (warn once)."""
        return self._rules is None

    def authorize(self, actor: str, verb: str, kind: str, tenant: str) -> Decision:
        """Whether ``actor`` may ``verb`` (apply/delete) ``kind`` in ``tenant``, and why."""

        def decide(allowed: bool, reason: str, rule: int | None = None) -> Decision:
            return Decision(allowed, actor, verb, kind, tenant, reason, rule)

        request = f"actor {actor!r} may not {verb} {kind} in tenant {tenant!r}"
        if verb not in VERBS:
            return decide(False, f"{verb!r} is not an authorizable verb; use {' or '.join(VERBS)}")
        if self._rules is None:
            if actor == self.dev_actor:
                return decide(
                    True,
                    f"development mode: no policy is configured and {actor!r} is the local "
                    "development actor",
                )
            return decide(
                False,
                f"{request}: no policy is configured (development mode), which allows only the "
                f"local development actor {self.dev_actor!r}; to allow it configure "
                f"security.policy with a rule such as {self._example(actor, verb, kind, tenant)}",
            )
        for index, rule in enumerate(self._rules):
            if rule.matches(actor, verb, kind, tenant):
                return decide(True, f"allowed by security.policy[{index}]", index)
        return decide(
            False,
            f"{request}: no rule in security.policy allows it; to allow it add a rule such as "
            f"{self._example(actor, verb, kind, tenant)}",
        )

    def ensure_allowed(self, actor: str, verb: str, kind: str, tenant: str) -> Decision:
        """``authorize``, raising ``PolicyDeniedError`` (an AuthorizationError) on denial."""
        decision = self.authorize(actor, verb, kind, tenant)
        if not decision.allowed:
            raise PolicyDeniedError(decision)
        return decision

    @staticmethod
    def _example(actor: str, verb: str, kind: str, tenant: str) -> str:
        return (
            f'{{actors = ["{actor}"], verbs = ["{verb}"], kinds = ["{kind}"], '
            f'tenants = ["{tenant}"]}}'
        )
