"""Signed intents: nkeys identities, signing, verification and the development keyring."""

from __future__ import annotations

import base64
import stat
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from eventplane.errors import AuthorizationError, ConfigError, ValidationError
from eventplane.event.cloudevents import decode, encode
from eventplane.event.model import Category
from eventplane.security import (
    DEV_ACTOR,
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
from eventplane.security.signing import (
    SIGNING_CONTEXT,
    decode_public_key,
    decode_seed,
    encode_public_key,
    encode_seed,
)
from tests.unit.security.helpers import intent

# Test vectors from nats-io/nkeys.py tests/nkeys_test.py.
NKEYS_SEED = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU"
NKEYS_PUBLIC = "UCK5N7N66OBOINFXAYC2ACJQYFSOD4VYNU6APEJTAVFZB2SVHLKGEW7L"
NKEYS_NONCE = b"PXoWU7zWAMt75FY"
NKEYS_NONCE_SIGNATURE = (
    "ZaAiVDgB5CeYoXoQ7cBCmq+ZllzUnGUoDVb8C7PilWvCs8XKfUchAUhz2P4BYAF++Dg3w05CqyQFRDiGL6LrDw=="
)
ALICE = Keypair.from_seed(NKEYS_SEED)
MALLORY = generate_keypair()


def _trust(*entries: str) -> TrustedKeys:
    return TrustedKeys(entries)


# -- nkeys format -----------------------------------------------------------------------------


def test_seed_from_the_nkeys_test_vectors_gives_the_published_public_key() -> None:
    assert ALICE.public_key == NKEYS_PUBLIC


def test_signature_matches_the_nkeys_test_vector() -> None:
    assert base64.b64encode(ALICE.sign(NKEYS_NONCE)).decode() == NKEYS_NONCE_SIGNATURE


def test_seed_and_public_key_round_trip_through_the_codec() -> None:
    keypair = generate_keypair()

    assert Keypair.from_seed(keypair.seed) == keypair
    assert encode_seed(decode_seed(keypair.seed)) == keypair.seed
    assert encode_public_key(decode_public_key(keypair.public_key)) == keypair.public_key
    assert keypair.seed.startswith("SU")
    assert len(keypair.seed) == 58
    assert keypair.public_key.startswith("U")
    assert len(keypair.public_key) == 56


def test_mistyped_public_key_fails_its_checksum() -> None:
    typo = NKEYS_PUBLIC[:10] + ("A" if NKEYS_PUBLIC[10] != "A" else "B") + NKEYS_PUBLIC[11:]

    with pytest.raises(ValidationError, match="checksum"):
        decode_public_key(typo)
    assert not is_public_key(typo)


def test_mistyped_seed_fails_its_checksum() -> None:
    typo = NKEYS_SEED[:20] + ("A" if NKEYS_SEED[20] != "A" else "B") + NKEYS_SEED[21:]

    with pytest.raises(ValidationError, match="checksum"):
        decode_seed(typo)


def test_an_account_seed_is_not_accepted_as_an_actor_seed() -> None:
    with pytest.raises(ValidationError):
        Keypair.from_seed("SAAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU")


def test_keypair_repr_never_shows_the_seed() -> None:
    assert NKEYS_SEED not in repr(ALICE)
    assert NKEYS_PUBLIC in repr(ALICE)


# -- sign and verify --------------------------------------------------------------------------


def test_signed_intent_verifies_against_a_key_bound_to_its_actor() -> None:
    signed = sign_intent(intent(actor="alice"), ALICE)

    verified = verify_intent(signed, [f"alice={ALICE.public_key}"])

    assert verified == VerifiedActor(actor="alice", public_key=ALICE.public_key)
    assert signed.metadata.signature is not None
    assert signed.metadata.signature.startswith(f"ed25519:{ALICE.public_key}:")


def test_signing_changes_nothing_but_the_signature() -> None:
    event = intent()

    signed = sign_intent(event, ALICE)

    assert (
        signed.model_copy(
            update={"metadata": signed.metadata.model_copy(update={"signature": None})}
        )
        == event
    )


def test_unsigned_intent_is_rejected() -> None:
    with pytest.raises(SignatureError) as info:
        verify_intent(intent(), _trust(f"alice={ALICE.public_key}"))

    assert info.value.reason is SignatureFailure.UNSIGNED
    assert isinstance(info.value, AuthorizationError)


@pytest.mark.parametrize(
    "change",
    [
        {"spec": {"display_name": "Acme Inc.", "plan": "enterprise", "seats": 25}},
        {"tenant": "globex"},
        {"name": "other-org"},
        {"type": "Organization.Deleted"},
    ],
    ids=["spec", "tenant", "name", "type"],
)
def test_intent_changed_after_signing_is_rejected(change: dict[str, object]) -> None:
    signed = sign_intent(intent(), ALICE)
    tampered = signed.model_copy(update=change)

    with pytest.raises(SignatureError) as info:
        verify_intent(tampered, [f"alice={ALICE.public_key}"])

    assert info.value.reason is SignatureFailure.INVALID
    assert "replayed with changes" in str(info.value)


def test_changing_the_actor_after_signing_is_rejected() -> None:
    signed = sign_intent(intent(actor="alice"), ALICE)
    as_bob = signed.model_copy(
        update={"metadata": signed.metadata.model_copy(update={"actor": "bob"})}
    )

    with pytest.raises(SignatureError) as info:
        verify_intent(as_bob, [f"*={ALICE.public_key}"])

    assert info.value.reason is SignatureFailure.INVALID


def test_signature_claiming_another_key_is_rejected() -> None:
    signed = sign_intent(intent(), MALLORY)
    assert signed.metadata.signature is not None
    forged_field = signed.metadata.signature.replace(MALLORY.public_key, ALICE.public_key)
    forged = signed.model_copy(
        update={"metadata": signed.metadata.model_copy(update={"signature": forged_field})}
    )

    with pytest.raises(SignatureError) as info:
        verify_intent(forged, [f"alice={ALICE.public_key}"])

    assert info.value.reason is SignatureFailure.INVALID


def test_intent_signed_by_an_untrusted_key_is_rejected_with_the_fix() -> None:
    signed = sign_intent(intent(actor="alice"), MALLORY)

    with pytest.raises(SignatureError) as info:
        verify_intent(signed, [f"alice={ALICE.public_key}"])

    assert info.value.reason is SignatureFailure.UNTRUSTED_KEY
    assert f"alice={MALLORY.public_key}" in str(info.value)


def test_key_bound_to_one_actor_cannot_speak_for_another() -> None:
    signed = sign_intent(intent(actor="bob"), ALICE)

    with pytest.raises(SignatureError) as info:
        verify_intent(signed, [f"alice={ALICE.public_key}"])

    assert info.value.reason is SignatureFailure.ACTOR_NOT_BOUND


def test_wildcard_binding_lets_a_key_speak_for_any_actor() -> None:
    signed = sign_intent(intent(actor="ci-bot"), ALICE)

    assert verify_intent(signed, [f"*={ALICE.public_key}"]).actor == "ci-bot"


def test_bare_key_speaks_only_as_itself() -> None:
    as_key = sign_intent(intent(actor=ALICE.public_key), ALICE)
    as_alice = sign_intent(intent(actor="alice"), ALICE)

    assert verify_intent(as_key, [ALICE.public_key]).actor == ALICE.public_key
    with pytest.raises(SignatureError) as info:
        verify_intent(as_alice, [ALICE.public_key])
    assert info.value.reason is SignatureFailure.ACTOR_NOT_BOUND


@pytest.mark.parametrize(
    "field",
    [
        "not a signature",
        "rsa:UABC:xyz",
        f"ed25519:{NKEYS_PUBLIC}:",
        f"ed25519:{NKEYS_PUBLIC}:!!!!",
        f"ed25519:{NKEYS_PUBLIC}:" + base64.urlsafe_b64encode(b"short").decode(),
        "ed25519:UNOTAKEY:" + base64.urlsafe_b64encode(bytes(64)).decode(),
        "ed25519:" + "x" * 400,
    ],
)
def test_malformed_signature_field_is_rejected(field: str) -> None:
    event = intent()
    event = event.model_copy(
        update={"metadata": event.metadata.model_copy(update={"signature": field})}
    )

    with pytest.raises(SignatureError) as info:
        verify_intent(event, [f"alice={ALICE.public_key}"])

    assert info.value.reason is SignatureFailure.MALFORMED


def test_only_intents_are_signed_or_verified() -> None:
    fact = intent(category=Category.FACT)

    with pytest.raises(ValidationError, match="only intents"):
        sign_intent(fact, ALICE)
    with pytest.raises(SignatureError) as info:
        verify_intent(fact, [f"alice={ALICE.public_key}"])
    assert info.value.reason is SignatureFailure.NOT_AN_INTENT


def test_store_assigned_fields_do_not_break_the_signature() -> None:
    signed = sign_intent(intent(), ALICE)
    stored = signed.recorded(
        stream_version=3, position=1234, recorded_at=datetime(2026, 3, 1, 13, tzinfo=UTC)
    )

    assert verify_intent(stored, [f"alice={ALICE.public_key}"]).actor == "alice"


def test_signature_survives_the_cloudevents_wire_round_trip() -> None:
    signed = sign_intent(intent(spec={"plan": "pro", "ratio": 0.1, "tags": ["a", "b"]}), ALICE)

    received = decode(encode(signed))

    assert verify_intent(received, [f"alice={ALICE.public_key}"]).actor == "alice"


def test_signature_survives_a_change_of_time_zone_for_the_same_instant() -> None:
    berlin = timezone(timedelta(hours=2))
    signed = sign_intent(intent(occurred_at=datetime(2026, 3, 1, 14, 0, tzinfo=berlin)), ALICE)
    in_utc = signed.model_copy(
        update={
            "metadata": signed.metadata.model_copy(
                update={"occurred_at": signed.metadata.occurred_at.astimezone(UTC)}
            )
        }
    )

    assert verify_intent(in_utc, [f"alice={ALICE.public_key}"]).actor == "alice"


def test_canonical_bytes_leave_out_the_signature_and_store_fields() -> None:
    event = intent()
    signed = sign_intent(event, ALICE).recorded(
        stream_version=1, position=9, recorded_at=datetime(2026, 3, 2, tzinfo=UTC)
    )

    assert canonical_intent_bytes(signed) == canonical_intent_bytes(event)
    assert b'"signature"' not in canonical_intent_bytes(signed)
    assert b'"actor":"alice"' in canonical_intent_bytes(event)
    assert not canonical_intent_bytes(event).startswith(SIGNING_CONTEXT)


def test_integer_beyond_64_bits_cannot_be_signed_and_says_why() -> None:
    with pytest.raises(ValidationError, match="64 bits"):
        sign_intent(intent(spec={"seats": 2**70}), ALICE)


@pytest.mark.parametrize("entry", ["", "alice=", "alice=UNOTAKEY", "=" + NKEYS_PUBLIC, "junk"])
def test_unparseable_trusted_key_entry_is_a_config_error_naming_it(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"trusted_keys\[1\]"):
        TrustedKeys([f"alice={ALICE.public_key}", entry])


def test_trusted_keys_report_their_bindings() -> None:
    trusted = TrustedKeys([f"alice={ALICE.public_key}", f"ops={ALICE.public_key}"])

    assert ALICE.public_key in trusted
    assert len(trusted) == 1
    assert trusted.actors_for(ALICE.public_key) == {"alice", "ops"}
    assert not TrustedKeys()


# -- loading seeds ----------------------------------------------------------------------------


def test_seed_file_with_a_bare_seed_loads(tmp_path: Path) -> None:
    path = tmp_path / "alice.nk"
    path.write_text(NKEYS_SEED + "\n")

    assert load_seed_file(path) == ALICE


def test_nsc_creds_file_loads_its_seed(tmp_path: Path) -> None:
    path = tmp_path / "alice.creds"
    path.write_text(
        "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.sig\n------END NATS USER JWT------\n"
        "\n-----BEGIN USER NKEY SEED-----\n"
        f"{NKEYS_SEED}\n------END USER NKEY SEED------\n"
    )

    assert load_seed_file(path) == ALICE


def test_missing_seed_file_is_a_config_error_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"security\.key_file"):
        load_seed_file(tmp_path / "absent.nk")


def test_seed_file_without_a_seed_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "public.txt"
    path.write_text(NKEYS_PUBLIC)

    with pytest.raises(ConfigError, match="no nkeys user seed"):
        load_seed_file(path)


def test_seed_from_the_environment_loads_and_unset_means_none() -> None:
    assert load_seed_env(environ={"EVENTPLANE_ACTOR_SEED": NKEYS_SEED}) == ALICE
    assert load_seed_env(environ={}) is None
    assert load_seed_env(environ={"EVENTPLANE_ACTOR_SEED": "  "}) is None


def test_broken_seed_in_the_environment_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="EVENTPLANE_ACTOR_SEED"):
        load_seed_env(environ={"EVENTPLANE_ACTOR_SEED": NKEYS_SEED[:-1] + "A"})


def test_key_file_takes_precedence_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "mallory.nk"
    path.write_text(MALLORY.seed)

    assert load_keypair(path, environ={"EVENTPLANE_ACTOR_SEED": NKEYS_SEED}) == MALLORY
    assert load_keypair(None, environ={"EVENTPLANE_ACTOR_SEED": NKEYS_SEED}) == ALICE
    assert load_keypair(None, environ={}) is None


# -- development keyring ----------------------------------------------------------------------


def test_dev_keyring_creates_a_private_seed_and_a_public_key_on_first_use(tmp_path: Path) -> None:
    keyring = DevKeyring(tmp_path / ".eventplane")

    keypair = keyring.keypair()

    assert stat.S_IMODE(keyring.seed_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keyring.keys_dir.stat().st_mode) == 0o700
    assert keyring.public_key_path.read_text().strip() == keypair.public_key
    assert load_seed_file(keyring.seed_path) == keypair


def test_dev_keyring_reuses_its_key(tmp_path: Path) -> None:
    first = DevKeyring(tmp_path).keypair()

    assert DevKeyring(tmp_path).keypair() == first


def test_runtime_trusts_what_evtctl_signs_from_the_same_directory(tmp_path: Path) -> None:
    home = tmp_path / ".eventplane"
    signed = sign_intent(intent(actor=DEV_ACTOR), DevKeyring(home).keypair())  # evtctl

    trusted = DevKeyring(home).trusted_keys()  # a runtime started later

    assert verify_intent(signed, trusted).actor == DEV_ACTOR


def test_dev_keyring_lists_every_dev_public_key(tmp_path: Path) -> None:
    keyring = DevKeyring(tmp_path)
    own = keyring.keypair()
    (keyring.keys_dir / "teammate.pub").write_text(MALLORY.public_key + "\n")

    assert keyring.trusted_keys() == sorted([f"dev={own.public_key}", f"dev={MALLORY.public_key}"])


def test_dev_keyring_refuses_a_corrupt_public_key_file(tmp_path: Path) -> None:
    keyring = DevKeyring(tmp_path)
    keyring.keypair()
    (keyring.keys_dir / "junk.pub").write_text("not a key")

    with pytest.raises(ConfigError, match=r"junk\.pub"):
        keyring.trusted_keys()


def test_concurrent_first_uses_agree_on_one_key(tmp_path: Path) -> None:
    results: list[Keypair] = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        results.append(DevKeyring(tmp_path).keypair())

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert len({k.public_key for k in results}) == 1
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "dev-actor.pub",
        "dev-actor.seed",
    ]


def test_dev_keyring_in_an_unwritable_place_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    with pytest.raises(ConfigError, match="cannot create the development key"):
        DevKeyring(blocker / ".eventplane").keypair()
