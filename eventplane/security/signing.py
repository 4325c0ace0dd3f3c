"""Signed intents: Ed25519 identities in the NATS nkeys format, signing and verification.

Security layer; no network I/O (``DevKeyring`` and the seed loaders read and write local key
files only). ``evtctl`` loads the actor's keypair (``load_keypair``: a seed file or the
``EVENTPLANE_ACTOR_SEED`` environment variable, never a spec) and calls ``sign_intent`` on
every intent before publishing it; the controller runtime calls ``verify_intent`` on every
intent it receives, with the configured trusted keys (or, with none configured, the local
``DevKeyring``'s), and records a ``SignatureError`` as a rejected intent.

Key format (nkeys, as nats-server and ``nsc`` use it): a user public key is
``base32(0xA0 || ed25519_public_key[32] || crc16_le)`` without padding — 56 characters
starting with ``U``; a user seed is ``base32(0x90|0x05, 0x00 || ed25519_seed[32] ||
crc16_le)`` — 58 characters starting with ``SU``. The CRC is CRC-16/XMODEM.

Signature: ``metadata.signature = "ed25519:<U public key>:<base64url signature, no
padding>"``, over ``SIGNING_CONTEXT + canonical_intent_bytes(event)``. The canonical bytes are
the event's canonical JSON (sorted keys, compact, times normalised to RFC 3339 UTC with
microseconds) without ``metadata.signature`` and the store-assigned ``stream_version``,
``position`` and ``recorded_at``. The actor (``metadata.actor``) is inside the signed bytes,
and a trusted key is bound to the actor(s) it may speak for, so neither the content nor the
claimed actor can be changed after signing. The context prefix keeps an intent signature from
ever being valid for anything else the same key signs (a NATS connection nonce, say).

Trusted keys are configured as strings: ``"<actor>=<U public key>"`` binds the key to one
actor; ``"*=<U public key>"`` lets the key speak for any actor (explicit, visible opt-in);
a bare ``"<U public key>"`` lets the key speak only as the actor named by the key itself.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import os
import re
import secrets as _random
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing
import orjson

from eventplane.errors import AuthorizationError, ConfigError, FieldError, ValidationError
from eventplane.event.model import Category, Event
from eventplane.utils import canonical_json, format_time

__all__ = [
    "DEV_ACTOR",
    "SEED_ENV_VAR",
    "SIGNATURE_SCHEME",
    "SIGNING_CONTEXT",
    "DevKeyring",
    "Keypair",
    "SignatureError",
    "SignatureFailure",
    "TrustedKeys",
    "VerifiedActor",
    "canonical_intent_bytes",
    "decode_public_key",
    "decode_seed",
    "encode_public_key",
    "encode_seed",
    "generate_keypair",
    "is_public_key",
    "load_keypair",
    "load_seed_env",
    "load_seed_file",
    "sign_intent",
    "verify_intent",
]

SIGNATURE_SCHEME = "ed25519"
SIGNING_CONTEXT = b"eventplane/intent/v1\n"
SEED_ENV_VAR = "EVENTPLANE_ACTOR_SEED"
DEV_ACTOR = "dev"  # the local development actor; what development-mode policy allows

# nkeys prefix bytes (nats-io/nkeys): the first base32 character encodes the key's role.
_PREFIX_SEED = 18 << 3  # 'S'
_PREFIX_USER = 20 << 3  # 'U'
_PUBLIC_KEY_LEN = 56
_SEED_LEN = 58
_PUBLIC_KEY_RE = re.compile(r"^U[A-Z2-7]{55}$")
_SEED_LINE_RE = re.compile(r"^SU[A-Z2-7]{56}$")
_MAX_SIGNATURE_FIELD = 256
_MAX_SEED_FILE_BYTES = 64 * 1024


class SignatureFailure(enum.StrEnum):
    """Why an intent's signature was not accepted (recorded in ``IntentRejected``)."""

    NOT_AN_INTENT = "NotAnIntent"
    UNSIGNED = "Unsigned"
    MALFORMED = "MalformedSignature"
    INVALID = "InvalidSignature"  # content changed after signing, or a different key signed
    UNTRUSTED_KEY = "UntrustedKey"
    ACTOR_NOT_BOUND = "ActorNotBoundToKey"


class SignatureError(AuthorizationError):
    """An intent is unsigned, badly signed, tampered with or signed by an untrusted key."""

    def __init__(self, reason: SignatureFailure, message: str) -> None:
        self.reason = reason
        super().__init__(message)


# ----------------------------------------------------------------------------- nkeys codec


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0), what nkeys appends little-endian."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _b32encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _b32decode_checked(text: str, what: str) -> bytes:
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"{what} is not valid base32") from exc
    if len(raw) < 3:
        raise ValidationError(f"{what} is too short")
    body, checksum = raw[:-2], raw[-2:]
    if _crc16(body).to_bytes(2, "little") != checksum:
        raise ValidationError(f"{what} has a bad checksum (mistyped or truncated)")
    return body


def encode_public_key(raw: bytes) -> str:
    """Raw 32-byte Ed25519 public key -> nkeys user public key (``U…``)."""
    if len(raw) != 32:
        raise ValidationError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    body = bytes([_PREFIX_USER]) + raw
    return _b32encode(body + _crc16(body).to_bytes(2, "little"))


def decode_public_key(key: str) -> bytes:
    """nkeys user public key (``U…``) -> raw 32 bytes; ``ValidationError`` if malformed."""
    if not isinstance(key, str) or not _PUBLIC_KEY_RE.match(key):
        raise ValidationError(
            "a public key must be an nkeys user key: 56 characters of base32 starting with 'U'"
        )
    body = _b32decode_checked(key, "public key")
    if body[0] != _PREFIX_USER or len(body) != 33:
        raise ValidationError("public key is not an nkeys user key (prefix 'U')")
    return body[1:]


def is_public_key(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        decode_public_key(value)
    except ValidationError:
        return False
    return True


def encode_seed(raw: bytes) -> str:
    """Raw 32-byte Ed25519 seed -> nkeys user seed (``SU…``)."""
    if len(raw) != 32:
        raise ValidationError(f"an Ed25519 seed is 32 bytes, got {len(raw)}")
    body = bytes([_PREFIX_SEED | (_PREFIX_USER >> 5), (_PREFIX_USER & 31) << 3]) + raw
    return _b32encode(body + _crc16(body).to_bytes(2, "little"))


def decode_seed(seed: str) -> bytes:
    """nkeys user seed (``SU…``) -> raw 32 bytes; ``ValidationError`` if malformed."""
    if not isinstance(seed, str) or not _SEED_LINE_RE.match(seed):
        raise ValidationError(
            "a seed must be an nkeys user seed: 58 characters of base32 starting with 'SU'"
        )
    body = _b32decode_checked(seed, "seed")
    if len(body) != 34:
        raise ValidationError("seed has the wrong length")
    if body[0] & 0xF8 != _PREFIX_SEED:
        raise ValidationError("seed does not start with the nkeys seed prefix 'S'")
    role = ((body[0] & 0x07) << 5) | ((body[1] & 0xF8) >> 3)
    if role != _PREFIX_USER:
        raise ValidationError("seed is not a user seed ('SU…'); create one with evtctl or nsc")
    return body[2:]


class Keypair:
    """An actor's Ed25519 signing identity. ``repr`` never shows the seed."""

    __slots__ = ("_signing_key", "public_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self.public_key: str = encode_public_key(bytes(signing_key.verify_key))

    @classmethod
    def from_seed(cls, seed: str) -> Keypair:
        return cls(nacl.signing.SigningKey(decode_seed(seed.strip())))

    @property
    def seed(self) -> str:
        """The encoded seed (``SU…``): write it only to a 0600 file or a secret store."""
        return encode_seed(bytes(self._signing_key))

    def sign(self, data: bytes) -> bytes:
        return bytes(self._signing_key.sign(data).signature)

    def __repr__(self) -> str:
        return f"Keypair(public_key={self.public_key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keypair) and other.public_key == self.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)


def generate_keypair() -> Keypair:
    return Keypair(nacl.signing.SigningKey(_random.token_bytes(32)))


# ----------------------------------------------------------------------------- loading seeds


def _seed_from_text(text: str, where: str) -> Keypair:
    # A bare seed, or any file with the seed on a line of its own (nsc .nk and .creds files).
    candidates = [line.strip() for line in text.splitlines() if line.strip()]
    seeds = [line for line in candidates if _SEED_LINE_RE.match(line)]
    if not seeds:
        raise ConfigError(
            f"{where} holds no nkeys user seed (a line of 58 base32 characters starting "
            "with 'SU'); create one with `evtctl keys create` or `nsc generate nkey -u`"
        )
    try:
        return Keypair.from_seed(seeds[0])
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_seed_file(path: Path) -> Keypair:
    """Read a seed file (a bare seed, or nsc ``.nk``/``.creds``); ``ConfigError`` if unusable."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_SEED_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the key file {path}: {exc.strerror or exc}; "
            "check security.key_file or create the file with mode 0600"
        ) from exc
    if len(raw) > _MAX_SEED_FILE_BYTES:
        raise ConfigError(f"key file {path} is larger than {_MAX_SEED_FILE_BYTES} bytes")
    return _seed_from_text(raw.decode("utf-8", errors="replace"), f"key file {path}")


def load_seed_env(
    name: str = SEED_ENV_VAR, environ: Mapping[str, str] | None = None
) -> Keypair | None:
    """The keypair in environment variable ``name``, or None if it is unset or empty."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if not value:
        return None
    return _seed_from_text(value, f"environment variable {name}")


def load_keypair(
    key_file: Path | None = None,
    *,
    env_var: str = SEED_ENV_VAR,
    environ: Mapping[str, str] | None = None,
) -> Keypair | None:
    """The configured actor key: ``key_file`` if given, else ``env_var``, else None.

    None means "no key configured": callers then fall back to the ``DevKeyring``.
    """
    if key_file is not None:
        return load_seed_file(key_file)
    return load_seed_env(env_var, environ)


# ----------------------------------------------------------------------------- signing


def canonical_intent_bytes(event: Event) -> bytes:
    """The exact bytes an intent signature covers (before ``SIGNING_CONTEXT`` is prefixed).

    The event's canonical JSON without ``metadata.signature`` and the store-assigned
    fields. Times are rendered with ``format_time`` (UTC, microseconds), so the bytes survive
    every store and wire round trip that keeps the instant.
    """
    doc = event.to_document()
    meta = doc["metadata"]
    for key in ("signature", "stream_version", "position", "recorded_at"):
        meta.pop(key, None)
    meta["occurred_at"] = format_time(event.metadata.occurred_at)
    if event.deletion_requested_at is not None:
        doc["deletion_requested_at"] = format_time(event.deletion_requested_at)
    if event.status is not None:
        for cond_doc, cond in zip(
            doc["status"]["conditions"], event.status.conditions, strict=True
        ):
            cond_doc["last_transition_time"] = format_time(cond.last_transition_time)
    try:
        return canonical_json(doc)
    except orjson.JSONEncodeError as exc:
        # e.g. an integer beyond 64 bits in the spec: not representable canonically.
        raise ValidationError(
            f"intent {event.id} has no canonical JSON form, so it cannot be signed",
            [
                FieldError(
                    "spec",
                    f"holds a value canonical JSON cannot encode ({exc})",
                    "keep integers within 64 bits; write larger numbers as strings",
                )
            ],
        ) from exc


def _signed_message(event: Event) -> bytes:
    return SIGNING_CONTEXT + canonical_intent_bytes(event)


def sign_intent(event: Event, keypair: Keypair) -> Event:
    """A copy of ``event`` with ``metadata.signature`` set by ``keypair``.

    The signature covers ``metadata.actor``; sign after every other field is final.
    """
    if event.category is not Category.INTENT:
        raise ValidationError(
            f"only intents are signed; event {event.id} is a {event.category.value} event"
        )
    # canonical_intent_bytes drops any earlier signature and the store-assigned fields.
    signature = keypair.sign(_signed_message(event))
    encoded = base64.urlsafe_b64encode(signature).decode("ascii").rstrip("=")
    field = f"{SIGNATURE_SCHEME}:{keypair.public_key}:{encoded}"
    return event.model_copy(
        update={"metadata": event.metadata.model_copy(update={"signature": field})}
    )


@dataclass(frozen=True, slots=True)
class VerifiedActor:
    """Who signed an intent, after ``verify_intent`` accepted it."""

    actor: str
    public_key: str


_ANY_ACTOR = "*"


class TrustedKeys:
    """Public keys the runtime trusts, each bound to the actor(s) it may speak for.

    Built from configuration strings (see the module docstring); an entry that does not
    parse raises ``ConfigError`` naming it, so a typo never silently trusts nothing.
    """

    __slots__ = ("_bindings",)

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._bindings: dict[str, set[str]] = {}
        for index, entry in enumerate(entries):
            actor, key = self._parse(entry, index)
            self._bindings.setdefault(key, set()).add(actor)

    @staticmethod
    def _parse(entry: str, index: int) -> tuple[str, str]:
        text = entry.strip() if isinstance(entry, str) else ""
        actor, sep, key = text.rpartition("=")
        if not sep:
            actor, key = text, text
        actor, key = actor.strip(), key.strip()
        if not actor or not is_public_key(key):
            raise ConfigError(
                f"security.trusted_keys[{index}]: expected '<actor>=<public key>', "
                "'*=<public key>' or a bare '<public key>' (nkeys user key, 56 characters "
                "starting with 'U')"
            )
        return actor, key

    def __contains__(self, public_key: object) -> bool:
        return public_key in self._bindings

    def __len__(self) -> int:
        return len(self._bindings)

    def __bool__(self) -> bool:
        return bool(self._bindings)

    @property
    def public_keys(self) -> frozenset[str]:
        return frozenset(self._bindings)

    def may_act_as(self, public_key: str, actor: str) -> bool:
        actors = self._bindings.get(public_key, set())
        return actor in actors or _ANY_ACTOR in actors

    def actors_for(self, public_key: str) -> frozenset[str]:
        return frozenset(self._bindings.get(public_key, ()))


def _parse_signature(field: str, event: Event, trusted: TrustedKeys) -> tuple[str, bytes]:
    if len(field) > _MAX_SIGNATURE_FIELD:
        raise SignatureError(
            SignatureFailure.MALFORMED, f"intent {event.id}: signature field is too long"
        )
    scheme, _, rest = field.partition(":")
    public_key, _, encoded = rest.partition(":")
    if scheme != SIGNATURE_SCHEME or not public_key or not encoded:
        raise SignatureError(
            SignatureFailure.MALFORMED,
            f"intent {event.id}: signature is not '{SIGNATURE_SCHEME}:<public key>:<signature>'",
        )
    try:
        if public_key not in trusted:  # trusted keys were checked when the set was built
            decode_public_key(public_key)
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValidationError, binascii.Error, ValueError) as exc:
        raise SignatureError(
            SignatureFailure.MALFORMED,
            f"intent {event.id}: signature carries an unreadable key or signature",
        ) from exc
    if len(raw) != 64:
        raise SignatureError(
            SignatureFailure.MALFORMED,
            f"intent {event.id}: an Ed25519 signature is 64 bytes, got {len(raw)}",
        )
    return public_key, raw


@functools.lru_cache(maxsize=256)
def _verify_key(public_key: str) -> nacl.signing.VerifyKey:
    """The decoded key, kept: decoding (base32 + CRC-16 in Python) cost more than the check.

    Only keys already found in the trusted set get here, so the cache is bounded by it;
    a malformed key raises and is not cached.
    """
    return nacl.signing.VerifyKey(decode_public_key(public_key))


def verify_intent(event: Event, trusted_keys: TrustedKeys | Iterable[str]) -> VerifiedActor:
    """Accept an intent only if a trusted key, bound to its actor, signed exactly this content.

    Raises ``SignatureError`` (``.reason`` says which check failed) otherwise.
    """
    trusted = trusted_keys if isinstance(trusted_keys, TrustedKeys) else TrustedKeys(trusted_keys)
    actor = event.metadata.actor
    if event.category is not Category.INTENT:
        raise SignatureError(
            SignatureFailure.NOT_AN_INTENT,
            f"event {event.id} is a {event.category.value} event; only intents are verified",
        )
    field = event.metadata.signature
    if not field:
        raise SignatureError(
            SignatureFailure.UNSIGNED,
            f"intent {event.id} from actor {actor!r} is not signed; "
            "send it with evtctl, which signs with the actor's key",
        )
    public_key, raw = _parse_signature(field, event, trusted)
    if public_key not in trusted:
        raise SignatureError(
            SignatureFailure.UNTRUSTED_KEY,
            f"intent {event.id} is signed by {public_key}, which is not a trusted key; "
            f"add '{actor}={public_key}' to security.trusted_keys to trust it",
        )
    try:
        _verify_key(public_key).verify(_signed_message(event), raw)
    except (nacl.exceptions.BadSignatureError, ValidationError) as exc:
        raise SignatureError(
            SignatureFailure.INVALID,
            f"intent {event.id}: the signature by {public_key} does not match the content "
            "(changed after signing, or replayed with changes)",
        ) from exc
    if not trusted.may_act_as(public_key, actor):
        allowed = ", ".join(sorted(trusted.actors_for(public_key)))
        raise SignatureError(
            SignatureFailure.ACTOR_NOT_BOUND,
            f"intent {event.id}: key {public_key} may act only as {allowed}, "
            f"not as {actor!r}; bind it with '{actor}={public_key}' in security.trusted_keys",
        )
    return VerifiedActor(actor=actor, public_key=public_key)


# ----------------------------------------------------------------------------- dev keyring


class DevKeyring:
    """The local development identity under ``<home>/keys`` (``home`` is ``.eventplane/``).

    ``keypair()`` creates ``dev-actor.seed`` (mode 0600, directory 0700) and
    ``dev-actor.pub`` on first use; ``trusted_keys()`` lists every ``*.pub`` there bound to
    ``DEV_ACTOR``. evtctl and a runtime started from the same directory therefore agree on
    the key whichever starts first, with nothing to configure. Creation is atomic (write a
    temporary file, then hard-link it into place), so concurrent first uses end up with one
    key.
    """

    SEED_NAME = "dev-actor.seed"
    PUB_NAME = "dev-actor.pub"

    def __init__(self, home: Path, actor: str = DEV_ACTOR) -> None:
        self.home = home
        self.actor = actor
        self.keys_dir = home / "keys"
        self.seed_path = self.keys_dir / self.SEED_NAME
        self.public_key_path = self.keys_dir / self.PUB_NAME

    def keypair(self) -> Keypair:
        """Load the dev key, creating it on first use."""
        if not self.seed_path.exists():
            self._create()
        keypair = load_seed_file(self.seed_path)
        self._write_public_key(keypair.public_key)
        return keypair

    def trusted_keys(self) -> list[str]:
        """``"<actor>=<public key>"`` entries for every dev public key (creating ours)."""
        own = self.keypair()
        keys = {own.public_key}
        for path in sorted(self.keys_dir.glob("*.pub")):
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read dev public key {path}: {exc}") from exc
            if not is_public_key(text):
                raise ConfigError(
                    f"{path} is not an nkeys user public key; delete it or replace its content"
                )
            keys.add(text)
        return [f"{self.actor}={key}" for key in sorted(keys)]

    def _create(self) -> None:
        try:
            self.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            seed = generate_keypair().seed
            fd, tmp = tempfile.mkstemp(prefix=".dev-actor.", dir=self.keys_dir)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, (seed + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.seed_path)  # fails if another process won the race
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the development key in {self.keys_dir}: {exc}; "
                "make the directory writable or configure security.key_file"
            ) from exc

    def _write_public_key(self, public_key: str) -> None:
        try:
            current = self.public_key_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            current = ""
        except OSError as exc:
            raise ConfigError(f"cannot read {self.public_key_path}: {exc}") from exc
        if current == public_key:
            return
        try:
            fd, tmp = tempfile.mkstemp(prefix=".dev-actor.", dir=self.keys_dir)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(public_key + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.public_key_path)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.public_key_path}: {exc}") from exc
