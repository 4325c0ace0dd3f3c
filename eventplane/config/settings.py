"""Settings: ``.eventplane.toml`` + ``EVENTPLANE_*`` environment, with embedded defaults.

Bottom layer (beside ``utils``/``errors``). ``evtctl`` calls ``load_settings`` once per
command; the runtime, relay and workers receive the resulting ``Settings``; the security
package reads ``Settings.security``. Reading the config file is the only I/O here.

Precedence, lowest first: built-in defaults → the config file (``config_path`` argument,
else ``EVENTPLANE_CONFIG``, else the first ``.eventplane.toml`` from the working directory
upward) → ``EVENTPLANE_*`` variables → explicit CLI flags (applied by the caller with
``Settings.with_overrides``).

With no configuration at all everything is embedded: ``home = <cwd>/.eventplane``, the
store is ``sqlite:///<home>/eventplane.db`` and the bus is the same URL (the embedded SQL
bus lives in the store's file). ``postgresql://…`` / ``nats://…`` select the production
backends.

Secrets never live in the toml: a password inside ``store_url``/``bus_url`` there is an
error. Passwords come from ``EVENTPLANE_STORE_PASSWORD`` / ``EVENTPLANE_BUS_PASSWORD`` or
from files named by ``store_password_file`` / ``bus_password_file`` (toml or the
``*_FILE`` variables), and are spliced into the URL by ``store_dsn()`` / ``bus_dsn()``.

Example::

    tenant = "acme"
    store_url = "postgresql://eventplane@db.internal:5432/eventplane"
    store_password_file = "/run/secrets/pg"
    bus_url = "nats://nats.internal:4222"

    [runtime]
    max_concurrency = 16
    backoff_base = 0.005     # seconds, doubling per attempt
    backoff_cap = 60.0
    max_attempts = 8

    [security]
    actor = "ci@acme.example"
    key_file = "~/.eventplane/ci.key"
    trusted_keys = ["base64-ed25519-public-key"]

    [[security.policy]]
    actors = ["ci@acme.example"]
    verbs = ["apply", "delete"]
    kinds = ["*"]
    tenants = ["acme"]
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from eventplane.errors import ConfigError
from eventplane.utils import DNS_LABEL_RE

__all__ = [
    "CONFIG_FILENAME",
    "ENV_PREFIX",
    "PolicyRule",
    "RuntimeSettings",
    "SecuritySettings",
    "Settings",
    "find_config_file",
    "load_settings",
]

CONFIG_FILENAME = ".eventplane.toml"
ENV_PREFIX = "EVENTPLANE_"
_STORE_SCHEMES = ("sqlite", "postgresql", "postgres")
_BUS_SCHEMES = ("sqlite", "postgresql", "postgres", "nats", "tls", "ws", "wss", "memory")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeSettings(_Section):
    """Knobs of the controller runtime."""

    # Reconciles in flight: enough to fill a group commit (one WAL flush for many appends).
    max_concurrency: Annotated[int, Field(ge=1, le=1024)] = 32
    backoff_base: Annotated[float, Field(gt=0, le=3600)] = 0.005  # s, doubling (client-go)
    backoff_cap: Annotated[float, Field(gt=0, le=86400)] = 60.0  # seconds
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 8
    shutdown_grace: Annotated[float, Field(ge=0, le=3600)] = 30.0  # seconds

    @pydantic.model_validator(mode="after")
    def _cap_above_base(self) -> RuntimeSettings:
        if self.backoff_cap < self.backoff_base:
            raise ValueError("backoff_cap must be at least backoff_base")
        return self


class PolicyRule(_Section):
    """Allow ``actors`` to perform ``verbs`` on ``kinds`` in ``tenants`` ("*" = any)."""

    actors: Annotated[list[str], Field(min_length=1)]
    verbs: Annotated[list[Literal["apply", "delete"]], Field(min_length=1)]
    kinds: Annotated[list[str], Field(min_length=1)]
    tenants: Annotated[list[str], Field(min_length=1)]


class SecuritySettings(_Section):
    """Identity and authorization. ``policy=None`` means no policy configured."""

    actor: str | None = None
    key_file: Path | None = None
    trusted_keys: list[str] = Field(default_factory=list)
    policy: list[PolicyRule] | None = None


class Settings(_Section):
    """Everything a command or worker needs to find its store, bus and tenant."""

    home: Path
    tenant: Annotated[str, Field(pattern=DNS_LABEL_RE.pattern)] = "default"
    store_url: str
    bus_url: str
    store_password: SecretStr | None = None
    bus_password: SecretStr | None = None
    runtime: RuntimeSettings = RuntimeSettings()
    security: SecuritySettings = SecuritySettings()
    config_file: Path | None = None  # where the settings came from (None: defaults)

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        return _check_scheme(value, _STORE_SCHEMES, "store_url")

    @field_validator("bus_url")
    @classmethod
    def _bus_scheme(cls, value: str) -> str:
        return _check_scheme(value, _BUS_SCHEMES, "bus_url")

    @property
    def store_backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return _backend(self.store_url)

    @property
    def bus_backend(self) -> str:
        """``sqlite``/``postgresql`` (embedded SQL bus), ``nats`` or ``memory``."""
        return _backend(self.bus_url)

    def store_dsn(self) -> str:
        """``store_url`` with the password (from env or file) filled in."""
        return _with_password(self.store_url, self.store_password)

    def bus_dsn(self) -> str:
        """``bus_url`` with the password (from env or file) filled in."""
        return _with_password(self.bus_url, self.bus_password)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with explicit (CLI) values applied and re-validated; None values are ignored."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        try:
            return Settings.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _config_error("invalid setting", exc) from exc


def _backend(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+")[0]
    return {"postgres": "postgresql", "tls": "nats"}.get(scheme, scheme)


def _check_scheme(value: str, allowed: tuple[str, ...], key: str) -> str:
    scheme = urlsplit(value).scheme.split("+")[0]
    if scheme not in allowed:
        raise ValueError(
            f"{key} {value!r} has an unsupported scheme; use one of "
            + ", ".join(f"{s}://" for s in allowed)
        )
    return value


def _with_password(url: str, password: SecretStr | None) -> str:
    if password is None:
        return url
    parts = urlsplit(url)
    if not parts.hostname:
        return url  # sqlite / memory URLs have no credentials
    user = parts.username or ""
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    netloc = f"{quote(user, safe='')}:{quote(password.get_secret_value(), safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _config_error(prefix: str, exc: pydantic.ValidationError) -> ConfigError:
    details = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
        for err in exc.errors(include_url=False)
    )
    return ConfigError(f"{prefix}: {details}")


def find_config_file(start: Path) -> Path | None:
    """The first ``.eventplane.toml`` in ``start`` or one of its parents."""
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _read_secret_file(path: Path, key: str) -> SecretStr:
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot read {str(path)!r} ({exc.strerror}); fix the path or the permissions"
        ) from exc


def _resolve(base: Path, value: str | Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


_ENV_TOP = {
    "STORE_URL": "store_url",
    "BUS_URL": "bus_url",
    "TENANT": "tenant",
    "HOME": "home",
}
_ENV_RUNTIME = {
    "MAX_CONCURRENCY": "max_concurrency",
    "BACKOFF_BASE": "backoff_base",
    "BACKOFF_CAP": "backoff_cap",
    "MAX_ATTEMPTS": "max_attempts",
    "SHUTDOWN_GRACE": "shutdown_grace",
}
_ENV_SECURITY = {"ACTOR": "actor", "KEY_FILE": "key_file"}


def load_settings(
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    config_path: Path | str | None = None,
) -> Settings:
    """Load settings for a process started in ``cwd`` with environment ``env``
    (defaults: the real ones). Raises ``ConfigError`` naming the key and the fix."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    env = os.environ if env is None else env
    explicit = config_path if config_path is not None else env.get(f"{ENV_PREFIX}CONFIG")
    path: Path | None
    if explicit:
        path = _resolve(cwd, explicit)
        if not path.is_file():
            raise ConfigError(
                f"config file {str(path)!r} does not exist; fix --config / EVENTPLANE_CONFIG"
            )
    else:
        path = find_config_file(cwd.resolve())

    raw: dict[str, Any] = {}
    base = cwd
    if path is not None:
        base = path.parent
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
        for key in ("store_url", "bus_url"):
            value = raw.get(key)
            if isinstance(value, str) and urlsplit(value).password:
                raise ConfigError(
                    f"{path}: {key} contains a password; secrets never go in the config file — "
                    f"remove it and set EVENTPLANE_{key.split('_')[0].upper()}_PASSWORD or "
                    f"{key.split('_')[0]}_password_file"
                )
        for key in ("store_password", "bus_password"):
            if key in raw:
                raise ConfigError(
                    f"{path}: {key} is not allowed in the config file; use "
                    f"EVENTPLANE_{key.upper()} or {key}_file"
                )

    data: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("runtime", "security")}
    runtime = dict(raw.get("runtime") or {})
    security = dict(raw.get("security") or {})
    for suffix, key in _ENV_TOP.items():
        if f"{ENV_PREFIX}{suffix}" in env:
            data[key] = env[f"{ENV_PREFIX}{suffix}"]
    for suffix, key in _ENV_RUNTIME.items():
        if f"{ENV_PREFIX}{suffix}" in env:
            runtime[key] = env[f"{ENV_PREFIX}{suffix}"]
    for suffix, key in _ENV_SECURITY.items():
        if f"{ENV_PREFIX}{suffix}" in env:
            security[key] = env[f"{ENV_PREFIX}{suffix}"]

    # Passwords: an environment value wins over a file; files resolve next to the toml.
    for which in ("store", "bus"):
        file_key = f"{which}_password_file"
        file_value = env.get(f"{ENV_PREFIX}{which.upper()}_PASSWORD_FILE") or data.pop(
            file_key, None
        )
        data.pop(file_key, None)
        secret = env.get(f"{ENV_PREFIX}{which.upper()}_PASSWORD")
        if secret is not None:
            data[f"{which}_password"] = SecretStr(secret)
        elif file_value:
            data[f"{which}_password"] = _read_secret_file(_resolve(base, file_value), file_key)

    home = _resolve(base, data.get("home", ".eventplane"))
    data["home"] = home
    data.setdefault("store_url", f"sqlite:///{home / 'eventplane.db'}")
    data.setdefault("bus_url", data["store_url"])
    if security.get("key_file"):
        security["key_file"] = _resolve(base, security["key_file"])
    data["runtime"] = runtime
    data["security"] = security
    data["config_file"] = path
    try:
        return Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        where = str(path) if path is not None else "environment"
        raise _config_error(f"invalid configuration ({where})", exc) from exc
