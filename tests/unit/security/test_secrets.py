"""The secret guard: every documented pattern is caught, ordinary data is not."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from eventplane.errors import SecretMaterialError, ValidationError
from eventplane.event.model import ResourceStatus
from eventplane.security import (
    SecretRef,
    ensure_event_has_no_secret_material,
    ensure_no_secret_material,
    find_event_secret_material,
    find_secret_material,
    is_secret_ref,
    parse_secret_ref,
)
from eventplane.utils import uuid7
from tests.unit.security.helpers import intent


def _b64url(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# Token-shaped test values are assembled from parts so that secret scanners watching this
# repository do not mistake the test data for leaked credentials.
ALNUM36 = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
JWT = ".".join(
    [
        _b64url({"alg": "HS256", "typ": "JWT"}),
        _b64url({"sub": "1234567890", "name": "Jane", "iat": 1516239022}),
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ]
)
UNSIGNED_JWT = _b64url({"alg": "none"}) + "." + _b64url({"sub": "x"}) + "."

SECRET_VALUES = {
    "rsa private key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA",
    "pkcs8 private key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
    "encrypted private key": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END",
    "openssh private key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
    "ec private key": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE",
    "pgp private key": "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF",
    "aws access key id": "AKIA" + "IOSFODNN7EXAMPLE",
    "aws temporary key id": "ASIA" + "Y34FZKBOKMUTVV7A",
    "github classic token": "ghp_" + ALNUM36,
    "github oauth token": "gho_" + ALNUM36,
    "github fine-grained token": "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnop",
    "gitlab token": "glpat-" + "xXyYzZ0123456789abcd",
    "slack bot token": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKl",
    "slack user token": "xoxp-" + "123456789012-abcdef",
    "stripe live key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "stripe restricted key": "rk_test_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "google api key": "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
    "openai project key": "sk-proj-" + "abcdefghijklmnopqrstuvwxyz012345",
    "anthropic key": "sk-ant-" + "api03-abcdefghijklmnopqrstuvwxyz",
    "sendgrid key": "SG." + "abcdefghijklmnopqrstuv" + "." + "A" * 43,
    "npm token": "npm_" + ALNUM36,
    "pypi token": "pypi-AgEIcHlwaS5vcmc" + "CJGI3ZDBlZGQ1LTk3NjktNGIzZS04MGZh" * 3,
    "nats user seed": "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
    "nats account seed": "SAAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
    "age secret key": "AGE-SECRET-KEY-1" + "QYQSZQGP" * 7 + "QY",
    "bearer header": "Bearer " + "mF_9.B5f-4.1JqM0123",
    "bearer header lowercase": "authorization: bearer " + "0123456789abcdefXYZ",
    "password in url": "postgresql://app:" + "hunter2@db.internal:5432/app",
    "password in url without user": "redis://:" + "s3cr3t@cache:6379/0",
    "jwt": JWT,
    "jwt in prose": f"use token {JWT}. thanks",
    "unsigned jwt": UNSIGNED_JWT,
}


@pytest.mark.parametrize("value", SECRET_VALUES.values(), ids=SECRET_VALUES.keys())
def test_secret_value_anywhere_in_the_payload_is_caught(value: str) -> None:
    payload = {"display_name": "Acme", "notes": ["first", {"detail": value}]}

    errors = find_secret_material(payload)

    assert [e.path for e in errors] == ["spec.notes[1].detail"]


@pytest.mark.parametrize("value", SECRET_VALUES.values(), ids=SECRET_VALUES.keys())
def test_error_messages_never_repeat_the_secret_value(value: str) -> None:
    with pytest.raises(SecretMaterialError) as info:
        ensure_no_secret_material({"detail": value})

    assert value not in str(info.value)
    assert "secretref://" in str(info.value)


PASSWORD_LIKE = {
    "password": "hunter2",
    "passwd": "hunter2",
    "pwd": "hunter2",
    "passphrase": "correct horse battery staple",
    "secret": "s",
    "token": "t",
    "api_key": "k",
    "apiKey": "k",
    "API_KEY": "k",
    "X-Api-Key": "k",
    "private_key": "k",
    "privateKey": "k",
    "client_secret": "s",
    "clientSecret": "s",
    "client-secret": "s",
    "db_password": "p",
    "dbPassword": "p",
    "DB.PASSWORD": "p",
    "GITHUB_TOKEN": "t",
    "access_token": "t",
    "refresh_token": "t",
    "webhook_secret": "s",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "credentials": "user:pass",
    "Authorization": "Basic dXNlcjpwYXNz",
    "nkey_seed": "x",
    "numeric_pin_password": 123456,
    "float_token": 1.5,
}


@pytest.mark.parametrize(("key", "value"), PASSWORD_LIKE.items(), ids=PASSWORD_LIKE.keys())
def test_password_like_key_with_a_literal_value_is_caught(key: str, value: object) -> None:
    payload = {"database": {key: value}}

    errors = find_secret_material(payload)

    assert len(errors) == 1
    assert errors[0].path.startswith("spec.database")
    assert "secretref://" in errors[0].fix


def test_literal_values_in_a_list_under_a_password_key_are_each_caught() -> None:
    errors = find_secret_material({"token": ["a", "secretref://vault/t", 7]})

    assert [e.path for e in errors] == ["spec.token[0]", "spec.token[2]"]


def test_nested_credentials_are_reported_with_their_full_path() -> None:
    payload = {"users": [{"name": "ann", "password": "x"}, {"name": "bob", "password": "y"}]}

    errors = find_secret_material(payload, path="data")

    assert [e.path for e in errors] == ["data.users[0].password", "data.users[1].password"]


def test_a_key_that_is_itself_a_token_is_caught() -> None:
    errors = find_secret_material({"AKIA" + "IOSFODNN7EXAMPLE": "owner"})

    assert [e.path for e in errors] == ["spec.AKIAIOSFODNN7EXAMPLE"]
    assert "key itself" in errors[0].message


def test_odd_keys_are_quoted_in_the_reported_path() -> None:
    errors = find_secret_material({"a b": {"password": "x"}})

    assert [e.path for e in errors] == ['spec["a b"].password']


def test_a_value_caught_by_pattern_under_a_password_key_is_reported_once() -> None:
    errors = find_secret_material({"token": "ghp_" + ALNUM36})

    assert len(errors) == 1
    assert "GitHub" in errors[0].message


ORDINARY: dict[str, Any] = {
    "display name": {"display_name": "Acme Corporation GmbH & Co. KG — Zürich"},
    "email": {"owner": "ops@acme.example", "billing_email": "billing+eu@acme.example"},
    "uuid": {"id": str(uuid7()), "correlation": "0190a0e4-7f4b-7cc3-9b1e-2f3c4d5e6f70"},
    "ulid": {"ulid": "01ARZ3NDEKTSV4RRFFQ69G5FAV"},
    "urls": {
        "homepage": "https://acme.example/path?q=1#frag",
        "repo": "https://git@github.com/acme/app.git",
        "nats": "nats://127.0.0.1:4222",
        "db": "postgresql://app@db.internal:5432/app",
        "port url": "https://acme.example:8443/login",
    },
    "base64 id": {"external_id": "dGhpcyBpcyBub3QgYSBzZWNyZXQ="},
    "hashes in labels": {
        "labels": {
            "checksum/config": "sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d",
            "git-sha": "3f786850e387550fdab836ed7e6dc881de23001b",
        }
    },
    "handles under password keys": {
        "password": "secretref://vault/acme/db#password",
        "api_key": "secretref://aws-sm/prod/stripe",
        "client_secret": " secretref://k8s/acme/oidc#client-secret ",
    },
    "empty and non-literal password values": {
        "password": "",
        "token": "   ",
        "secret": None,
        "passwd": False,
        "api_key": {"from": "secretref://env/API_KEY"},
    },
    "keys that only mention secrets": {
        "password_policy": "strong",
        "token_count": 5,
        "max_tokens": 4096,
        "secret_ref": "secretref://vault/x",
        "secretName": "db-creds",
        "tokenEndpoint": "https://auth.acme.example/oauth/token",
        "next_page_token": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA",
        "continuationToken": "abc",
        "imagePullSecrets": [{"name": "regcred"}],
        "password_min_length": 12,
        "has_password": True,
        "random_seed": 42,
        "seed": "demo-data",
        "public_key": "UCK5N7N66OBOINFXAYC2ACJQYFSOD4VYNU6APEJTAVFZB2SVHLKGEW7L",
        "key": "team-a",
    },
    "prose": {
        "description": "The bearer responsibilities of the organisation owner are listed here.",
        "note": "AKIA is the prefix AWS uses; tokens start with ghp_ on GitHub.",
        "motto": "Bearer of good news",
    },
    "jwt-looking but not json": {"ref": "eyJzzzzzzzz.abc.def"},
    "versions and domains": {"version": "1.2.3", "host": "api.v2.acme.example"},
    "numbers": {"seats": 25, "ratio": 0.5, "big": 2**60},
}


@pytest.mark.parametrize("payload", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_data_is_not_falsely_caught(payload: dict[str, Any]) -> None:
    assert find_secret_material(payload) == []


def test_deep_nesting_does_not_crash_the_guard() -> None:
    payload: Any = {"password": "x"}
    for _ in range(20_000):
        payload = [payload]

    errors = find_secret_material(payload)

    assert len(errors) == 1
    assert errors[0].path.endswith("].password")


def test_ensure_no_secret_material_names_every_offending_field() -> None:
    payload = {"db": {"password": "x"}, "note": "AKIA" + "IOSFODNN7EXAMPLE", "plan": "pro"}

    with pytest.raises(SecretMaterialError) as info:
        ensure_no_secret_material(payload)

    assert isinstance(info.value, ValidationError)
    assert [e.path for e in info.value.errors] == ["spec.db.password", "spec.note"]
    assert "nothing was stored or published" in str(info.value)


def test_ensure_no_secret_material_accepts_clean_payloads() -> None:
    ensure_no_secret_material({"display_name": "Acme", "password": "secretref://vault/a"})


def test_event_guard_checks_spec_data_labels_and_status() -> None:
    event = intent(spec={"password": "x"}, labels={"note": "ghp_" + ALNUM36})
    event = event.model_copy(
        update={
            "data": {"token": "t"},
            "status": ResourceStatus(message="failed with Bearer " + "abcdef0123456789xyz"),
        }
    )

    paths = [e.path for e in find_event_secret_material(event)]

    assert paths == ["spec.password", "data.token", "metadata.labels.note", "status.message"]
    with pytest.raises(SecretMaterialError, match=str(event.id)):
        ensure_event_has_no_secret_material(event)


def test_event_guard_accepts_an_ordinary_intent() -> None:
    ensure_event_has_no_secret_material(intent())


VALID_REFS = [
    "secretref://vault/acme/db",
    "secretref://vault/kv/data/acme/db#password",
    "secretref://aws-sm/prod/stripe-key",
    "secretref://env/STRIPE_API_KEY",
    "secretref://k8s/acme/oidc#client-secret",
]
INVALID_REFS = [
    "hunter2",
    "secretref://",
    "secretref://vault",
    "secretref://vault/",
    "secretref://Vault/acme",
    "secretref://vault/acme//db",
    "secretref://vault/../etc/passwd",
    "secretref://vault/acme db",
    "secretref://vault/acme?version=2",
    "secretref://user:pw@vault/acme",
    "SECRETREF://vault/acme",
    "secretref://vault/" + "a" * 600,
]


@pytest.mark.parametrize("value", VALID_REFS)
def test_well_formed_handles_are_secret_refs(value: str) -> None:
    assert is_secret_ref(value)
    assert parse_secret_ref(value).provider in {"vault", "aws-sm", "env", "k8s"}


@pytest.mark.parametrize("value", INVALID_REFS)
def test_malformed_handles_are_not_secret_refs(value: str) -> None:
    assert not is_secret_ref(value)


def test_parse_secret_ref_splits_provider_path_and_field() -> None:
    parts = parse_secret_ref("secretref://vault/kv/acme/db#password")

    assert (parts.provider, parts.path, parts.field) == ("vault", "kv/acme/db", "password")


def test_is_secret_ref_is_false_for_non_strings() -> None:
    assert not is_secret_ref(None)
    assert not is_secret_ref(42)


class _DatabaseSpec(BaseModel):
    host: str
    password: SecretRef


def test_secret_ref_field_accepts_a_handle() -> None:
    spec = _DatabaseSpec(host="db", password="secretref://vault/acme/db#password")

    assert spec.password == "secretref://vault/acme/db#password"


def test_secret_ref_field_rejects_a_literal_secret_with_the_fix() -> None:
    with pytest.raises(PydanticValidationError) as info:
        _DatabaseSpec(host="db", password="hunter2")

    message = str(info.value)
    assert "password" in message
    assert "secretref://<provider>/<path>" in message
    assert "hunter2" not in message.split("input_value")[0]


def test_secret_ref_field_documents_itself_in_the_json_schema() -> None:
    schema = _DatabaseSpec.model_json_schema()["properties"]["password"]

    assert schema["format"] == "secretref"
    assert schema["pattern"].startswith("^secretref://")


def test_secret_ref_json_schema_pattern_is_portable_and_matches_handles() -> None:
    schema = _DatabaseSpec.model_json_schema()["properties"]["password"]
    validator = jsonschema.Draft202012Validator(schema)

    assert "?P<" not in schema["pattern"]  # ECMA-262 regexes have no Python named groups
    assert all(validator.is_valid(ref) for ref in VALID_REFS)
    assert not validator.is_valid("hunter2")
