"""The secret guard: credentials never travel in specs or events, only ``secretref://`` handles.

Pure security layer (no I/O). Called at every door an event payload passes: the CLI before it
publishes, ``EventFactory`` before an intent is born, and the controller runtime before it
stores anything it received — each calls ``ensure_no_secret_material`` and stops on
``SecretMaterialError``, which names every offending field (never the value) and the fix.
Spec fields meant for credentials are typed ``SecretRef`` so they only accept a handle.

What is caught, in string values anywhere in the payload and in mapping keys:

==========================  ==============================================================
Pattern                     Matches
==========================  ==============================================================
private key block           ``-----BEGIN [RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP ]PRIVATE
                            KEY[ BLOCK]-----`` (PEM / OpenSSH / PGP armour)
AWS access key id           ``AKIA|ASIA|ABIA|ACCA`` + 16 uppercase alphanumerics
GitHub token                ``ghp_ gho_ ghu_ ghs_ ghr_`` + 36 alphanumerics;
                            ``github_pat_`` + 22+ word characters
GitLab token                ``glpat-`` + 20+ word characters or ``-``
Slack token                 ``xoxa- xoxb- xoxp- xoxo- xoxr- xoxs-`` + 10+ characters
Stripe secret key           ``sk_live_ sk_test_ rk_live_ rk_test_`` + 16+ alphanumerics
Google API key              ``AIza`` + 35 word characters or ``-``
OpenAI / Anthropic key      ``sk-proj-`` / ``sk-ant-`` + 20+ characters
SendGrid key                ``SG.<22>.<43>``
npm / PyPI token            ``npm_`` + 36 alphanumerics; ``pypi-AgEIcHlwaS5vcmc…``
NATS nkey seed              ``S`` + role letter (``U A O N C``) + 56 base32 characters
age secret key              ``AGE-SECRET-KEY-1`` + 58 bech32 characters
bearer credential           ``Bearer `` + 16+ token characters (any case)
credentials in a URL        ``scheme://user:password@…``
JWT                         three dot-separated base64url segments whose first decodes to a
                            JSON object (``eyJ…``); unsigned JWTs (empty third) included
password-like key           a mapping key such as ``password``, ``passwd``, ``pwd``,
                            ``passphrase``, ``secret``, ``token``, ``api_key``,
                            ``private_key``, ``client_secret``, ``access_token``,
                            ``credentials``, ``authorization`` — case-insensitive, with
                            ``_``/``-``/``.``/camelCase variants and prefixes
                            (``db_password``, ``githubToken``, ``X-Api-Key``) — holding a
                            literal non-empty string or number that is not a
                            ``secretref://`` handle
==========================  ==============================================================

What is deliberately *not* caught, so ordinary data passes: display names, e-mail addresses,
UUIDs, URLs without a password, hashes and base64-looking ids, keys that merely mention a
secret (``secret_ref``, ``token_count``, ``max_tokens``, ``password_policy``,
``next_page_token``), booleans under password-like keys (``password: false``), and empty
values. High-entropy strings in general are not flagged: there is no way to tell a random id
from a random password without too many false alarms.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

from eventplane.errors import FieldError, SecretMaterialError
from eventplane.utils import json_loads

if TYPE_CHECKING:
    from eventplane.event.model import Event

__all__ = [
    "SECRET_REF_PREFIX",
    "SecretRef",
    "SecretRefParts",
    "ensure_event_has_no_secret_material",
    "ensure_no_secret_material",
    "find_event_secret_material",
    "find_secret_material",
    "is_secret_ref",
    "parse_secret_ref",
]

SECRET_REF_PREFIX = "secretref://"
SECRET_REF_MAX_LENGTH = 512
# secretref://<provider>/<path>[#<field>]: provider a lowercase label (vault, aws-sm, env,
# file, k8s...), path one or more non-empty segments, optional field selector. No userinfo,
# query, whitespace or dot-segments: the handle must be unambiguous for every resolver.
_SECRET_REF_RE = re.compile(
    r"^secretref://(?P<provider>[a-z][a-z0-9-]{0,62})"
    r"/(?P<path>[A-Za-z0-9_.+=-]+(?:/[A-Za-z0-9_.+=-]+)*)"
    r"(?:#(?P<field>[A-Za-z0-9_.-]+))?$"
)

_FIX = (
    "keep the credential in a secret store or the environment and put an opaque handle "
    "here instead, e.g. secretref://vault/<path>"
)


# ----------------------------------------------------------------------------- handles


@dataclass(frozen=True, slots=True)
class SecretRefParts:
    """A parsed ``secretref://<provider>/<path>[#<field>]`` handle."""

    provider: str
    path: str
    field: str | None = None


def parse_secret_ref(value: str) -> SecretRefParts:
    """Split a handle into its parts; ``ValueError`` (naming the expected form) if invalid."""
    match = _SECRET_REF_RE.match(value) if len(value) <= SECRET_REF_MAX_LENGTH else None
    if match is None or any(seg in (".", "..") for seg in match["path"].split("/")):
        raise ValueError(
            "expected an opaque secret handle secretref://<provider>/<path>[#<field>] "
            f"(at most {SECRET_REF_MAX_LENGTH} characters, no '..' segments), e.g. "
            "secretref://vault/acme/db#password — never the secret itself"
        )
    return SecretRefParts(match["provider"], match["path"], match["field"])


def is_secret_ref(value: object) -> bool:
    """True when ``value`` is a well-formed ``secretref://`` handle."""
    if not isinstance(value, str):
        return False
    try:
        parse_secret_ref(value)
    except ValueError:
        return False
    return True


def _validate_secret_ref(value: str) -> str:
    parse_secret_ref(value)
    return value


SecretRef = Annotated[
    str,
    AfterValidator(_validate_secret_ref),
    WithJsonSchema(
        {
            "type": "string",
            "format": "secretref",
            # Same as _SECRET_REF_RE without Python's (?P<name>) groups, which ECMA-262
            # (JSON Schema's regex dialect) spells differently.
            "pattern": re.sub(r"\(\?P<[a-z]+>", "(", _SECRET_REF_RE.pattern),
            "maxLength": SECRET_REF_MAX_LENGTH,
            "description": "opaque handle to a secret: secretref://<provider>/<path>[#<field>]",
        }
    ),
]
"""A spec field type for credentials: accepts only a ``secretref://`` handle."""


# ----------------------------------------------------------------------------- value patterns

# Each pattern is linear-time (bounded or possessive-free simple classes) so a hostile
# megabyte string costs one pass, never catastrophic backtracking.
_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a private key block",
        re.compile(
            r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP |SSH2 ENCRYPTED )?"
            r"PRIVATE KEY(?: BLOCK)?-----"
        ),
    ),
    (
        "an AWS access key id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ),
    ("a GitHub token", re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])")),
    ("a GitHub token", re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,}")),
    ("a GitLab token", re.compile(r"(?<![A-Za-z0-9_])glpat-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Stripe secret key", re.compile(r"(?<![A-Za-z0-9])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),
    ("a Google API key", re.compile(r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")),
    (
        "an OpenAI/Anthropic API key",
        re.compile(r"(?<![A-Za-z0-9])sk-(?:proj|ant)-[A-Za-z0-9_-]{20,}"),
    ),
    ("a SendGrid API key", re.compile(r"(?<![A-Za-z0-9])SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}")),
    ("an npm token", re.compile(r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])")),
    ("a PyPI token", re.compile(r"(?<![A-Za-z0-9_])pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}")),
    ("a NATS nkey seed", re.compile(r"(?<![A-Z2-7])S[UAONC][A-Z2-7]{56}(?![A-Z2-7])")),
    ("an age secret key", re.compile(r"AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}")),
    (
        "a bearer credential",
        # The token must contain a digit: prose ("the bearer responsibilities") must pass.
        re.compile(
            r"(?<![A-Za-z0-9])[Bb][Ee][Aa][Rr][Ee][Rr] +"
            r"(?=[A-Za-z._~+/-]*[0-9])[A-Za-z0-9._~+/-]{16,}=*"
        ),
    ),
    (
        "a password embedded in a URL",
        re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s/?#@:]*:[^\s/?#@]+@"),
    ),
)

# Shorter than the shortest pattern ("x://:p@"): skip the scan for the many tiny values.
_MIN_SECRET_LENGTH = 7

# Candidate JWTs; each candidate is confirmed by decoding its header (see _is_jwt).
_JWT_CANDIDATE_RE = re.compile(
    r"(?<![A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{6,})\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_-])"
)


def _is_jwt_header(segment: str) -> bool:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json_loads(raw)
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and ("alg" in header or "typ" in header or "enc" in header)


def _value_findings(value: str) -> Iterator[str]:
    """What kinds of secret material ``value`` contains (descriptions, no duplicates)."""
    if len(value) < _MIN_SECRET_LENGTH:
        return
    seen: set[str] = set()
    for description, pattern in _VALUE_PATTERNS:
        if description not in seen and pattern.search(value):
            seen.add(description)
            yield description
    if "eyJ" in value:
        for match in _JWT_CANDIDATE_RE.finditer(value):
            if _is_jwt_header(match.group(1)):
                yield "a JWT"
                break


# ----------------------------------------------------------------------------- key patterns

# Normalised (snake_case) key names that hold a credential, as the whole key or as its tail
# ("db_password", "github_token", "stripe_api_key").
_SECRET_KEY_TAILS: tuple[tuple[str, ...], ...] = tuple(
    tuple(name.split("_"))
    for name in (
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "apikey",
        "private_key",
        "privatekey",
        "secret_key",
        "secret_access_key",
        "signing_key",
        "encryption_key",
        "client_secret",
        "access_token",
        "refresh_token",
        "auth_token",
        "credential",
        "credentials",
        "authorization",
        "seed",  # only as nkey_seed / nats_seed, see _SEED_QUALIFIERS
    )
)
# "seed" alone is too common (random seeds, seed data); only these prefixes make it a key.
_SEED_QUALIFIERS = frozenset({"nkey", "nats", "user", "account", "operator", "wallet"})
# Keys ending in a secret word that are well-known non-secrets (pagination cursors).
_NON_SECRET_TAILS: tuple[tuple[str, ...], ...] = (
    ("page", "token"),
    ("continuation", "token"),
    ("pagination", "token"),
    ("resume", "token"),
    ("sync", "token"),
    ("cancellation", "token"),
)

_CAMEL_BOUNDARY_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATOR_RE = re.compile(r"[\s_.\-]+")


def _key_words(key: str) -> tuple[str, ...]:
    """``X-Api-Key`` / ``apiKey`` / ``API.KEY`` -> ("x", "api", "key") / ("api", "key")..."""
    spaced = _CAMEL_BOUNDARY_RE.sub("_", key)
    return tuple(w for w in _SEPARATOR_RE.split(spaced.lower()) if w)


# Pure in the key and asked for every key of every intent's spec, mostly the same few field
# names: remembered (bounded) instead of re-running two regexes per key.
@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    if len(key) > 128:  # a key that long is data, not a field name
        return False
    words = _key_words(key)
    if not words:
        return False
    for tail in _NON_SECRET_TAILS:
        if words[-len(tail) :] == tail:
            return False
    for tail in _SECRET_KEY_TAILS:
        if len(words) >= len(tail) and words[-len(tail) :] == tail:
            if tail == ("seed",):
                return len(words) >= 2 and words[-2] in _SEED_QUALIFIERS
            return True
    # "apiKey" -> ("api", "key") is covered above; "xApiKey" etc. end the same way.
    return False


def _is_literal_secret_value(value: object) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        stripped = value.strip()
        return bool(stripped) and not is_secret_ref(stripped)
    return False


# ----------------------------------------------------------------------------- the walk

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _child_path(parent: str, key: str) -> str:
    if _IDENT_RE.match(key):
        return f"{parent}.{key}" if parent else key
    quoted = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{parent}["{quoted}"]'


def find_secret_material(payload: Any, path: str = "spec") -> list[FieldError]:
    """Every place in ``payload`` that carries secret material, in document order.

    ``payload`` is any JSON-like value (mappings, lists/tuples, strings, numbers); other
    objects are ignored. ``path`` is the dotted prefix for the reported field paths. The
    walk is iterative, so nesting depth cannot crash it. Messages never contain the value.
    """
    errors: list[FieldError] = []
    # (path, value, whether the key holding it is password-like)
    stack: list[tuple[str, Any, bool]] = [(path, payload, False)]
    while stack:
        where, value, under_secret_key = stack.pop()
        if isinstance(value, Mapping):
            children: list[tuple[str, Any, bool]] = []
            for raw_key, child in value.items():
                key = raw_key if isinstance(raw_key, str) else str(raw_key)
                child_where = _child_path(where, key)
                errors.extend(
                    FieldError(
                        child_where,
                        f"the key itself looks like {description}; secrets never go in events",
                        _FIX,
                    )
                    for description in _value_findings(key)
                )
                children.append((child_where, child, _is_secret_key(key)))
            stack.extend(reversed(children))
        elif isinstance(value, list | tuple):
            stack.extend(
                (f"{where}[{index}]", item, under_secret_key)
                for index, item in reversed(list(enumerate(value)))
            )
        else:
            found = False
            if isinstance(value, str):
                for description in _value_findings(value):
                    found = True
                    errors.append(
                        FieldError(
                            where, f"looks like {description}; secrets never go in events", _FIX
                        )
                    )
            if under_secret_key and not found and _is_literal_secret_value(value):
                errors.append(
                    FieldError(
                        where,
                        "a credential field holds a literal value; "
                        "only secretref:// handles are accepted",
                        _FIX,
                    )
                )
    return errors


def ensure_no_secret_material(payload: Any, path: str = "spec") -> None:
    """Raise ``SecretMaterialError`` naming every offending field, or return quietly."""
    errors = find_secret_material(payload, path)
    if errors:
        raise SecretMaterialError(
            f"{path} carries secret material; nothing was stored or published", errors
        )


def find_event_secret_material(event: Event) -> list[FieldError]:
    """The guard over every free-form part of an event: spec, data and labels."""
    errors: list[FieldError] = []
    if event.spec is not None:
        errors.extend(find_secret_material(event.spec, "spec"))
    errors.extend(find_secret_material(event.data, "data"))
    errors.extend(find_secret_material(dict(event.metadata.labels), "metadata.labels"))
    if event.status is not None:
        errors.extend(find_secret_material(event.status.message, "status.message"))
        if event.status.last_error is not None:
            errors.extend(find_secret_material(event.status.last_error, "status.last_error"))
    return errors


def ensure_event_has_no_secret_material(event: Event) -> None:
    """What the runtime calls on every received event before storing it."""
    errors = find_event_secret_material(event)
    if errors:
        raise SecretMaterialError(
            f"event {event.id} ({event.type}) carries secret material; "
            "nothing was stored or published",
            errors,
        )
